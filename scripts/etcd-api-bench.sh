#!/usr/bin/env bash
# Aspen against etcd 3.4 through one client: `aspen bench --protocol etcd` (etcd v3 gRPC, the
# etcd-client crate) drives Aspen's etcd API and etcd with the same code, in the scenarios of
# ../shared/bench/compare.sh (3 nodes: put with 1/16/64/256 clients, linearizable get with 64
# after a preload; 1 node: put with 1 and 64), one connection per client, 256-byte values,
# keyspace 100,000, fresh data dirs, interleaved by round. One JSON line per run, as
# compare.sh's, so ../shared/bench/table.py makes the table.
#   scripts/etcd-api-bench.sh BIN_DIR [ROUNDS] [SECONDS] > etcd-api.jsonl
# BIN_DIR holds release `aspen` and `aspen-node`; etcd's ports 2379-2380, 22379-22380 and
# 32379-32380 must be free.
set -euo pipefail
BIN=$(cd "$1" && pwd); ROUNDS=${2:-2}; SECS=${3:-8}
SHARED=$(cd "${ASPEN_SHARED:-$(dirname "$0")/../../shared}/bench" && pwd)
WORK=$(mktemp -d -t etcd-api.XXXXXX)
CL_PID=
cleanup() {
  [ -n "$CL_PID" ] && kill -INT "$CL_PID" 2>/dev/null && wait "$CL_PID" 2>/dev/null || true
  "$SHARED/etcd-cluster.sh" stop "$WORK/etcd" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
bench() { # endpoints workload clients [options...]
  local eps=$1 workload=$2 clients=$3; shift 3
  "$BIN/aspen" --output json bench "$workload" --protocol etcd --endpoints "$eps" \
    --clients "$clients" --keyspace 100000 --value-size 256 "$@"
}
run() { # system topology scenario clients endpoints workload
  local raw
  raw=$(bench "$5" "$6" "$4" --connections "$4" --duration "${SECS}s")
  python3 - "$1" "$2" "$3" "$4" "$raw" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
system, topo, scen, clients, raw, load = sys.argv[1:7]
r = json.loads(raw)
print(json.dumps(dict(system=system, topology=topo, scenario=scen, clients=int(clients),
    load1=float(load), ops_s=round(r["throughput_ops_s"]), p50_ms=r["latency_ms"]["p50"],
    p99_ms=r["latency_ms"]["p99"], errors=r["errors"], client="aspen bench --protocol etcd")),
    flush=True)
PY
}
aspen_start() { # nodes; sets eps
  rm -rf "$WORK/aspen"; mkdir -p "$WORK/aspen"
  "$BIN/aspen-node" cluster --nodes "$1" --data-dir "$WORK/aspen/data" > "$WORK/aspen/out" 2>&1 &
  CL_PID=$!
  for _ in $(seq 1 300); do grep -q "ETCDCTL_ENDPOINTS=" "$WORK/aspen/out" && break; sleep 0.1; done
  sleep 1
  eps=$(grep -o 'ETCDCTL_ENDPOINTS=[^ ]*' "$WORK/aspen/out" | head -1 | cut -d= -f2)
}
aspen_stop() { kill -INT "$CL_PID" 2>/dev/null || true; wait "$CL_PID" 2>/dev/null || true; CL_PID=; }
for _ in $(seq 1 "$ROUNDS"); do
  for sys in aspen etcd; do
    if [ $sys = aspen ]; then aspen_start 3; else
      rm -rf "$WORK/etcd"; "$SHARED/etcd-cluster.sh" start "$WORK/etcd" >/dev/null
      eps=$(cat "$WORK/etcd/endpoints"); fi
    for c in 1 16 64 256; do run $sys 3-node put-c$c $c "$eps" put; done
    bench "$eps" put 64 --connections 16 --total 100000 >/dev/null
    run $sys 3-node get-c64 64 "$eps" get
    if [ $sys = aspen ]; then aspen_stop; aspen_start 1; else
      "$SHARED/etcd-cluster.sh" stop "$WORK/etcd" >/dev/null
      rm -rf "$WORK/etcd"; "$SHARED/etcd-cluster.sh" single "$WORK/etcd" >/dev/null
      eps=$(cat "$WORK/etcd/endpoints"); fi
    for c in 1 64; do run $sys 1-node put-c$c $c "$eps" put; done
    if [ $sys = aspen ]; then aspen_stop; else "$SHARED/etcd-cluster.sh" stop "$WORK/etcd" >/dev/null; fi
  done
done
