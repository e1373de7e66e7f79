#!/usr/bin/env bash
# Aspen against etcd through one client: ../shared/bench's loadgen (a Rust etcd v3 gRPC
# client) drives Aspen's etcd API and etcd 3.4 with the same code, same scenarios as
# compare.sh (3 nodes: put with 1/16/64/256 clients, linearizable get with 64; 1 node: put
# with 1 and 64), interleaved by round. One JSON line per run, as compare.sh's, so
# ../shared/bench/table.py makes the table.
#   scripts/etcd-api-bench.sh ASPEN_BIN_DIR [ROUNDS] [SECONDS] > etcd-api.jsonl
set -euo pipefail
BIN=$(cd "$1" && pwd); ROUNDS=${2:-2}; SECS=${3:-8}
SHARED=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
LOADGEN_TARGET=${LOADGEN_TARGET:-${TMPDIR:-/tmp}/aspen-loadgen-target}
cargo build -q --release --manifest-path "$SHARED/loadgen/Cargo.toml" --target-dir "$LOADGEN_TARGET" >&2
LOADGEN=$LOADGEN_TARGET/release/loadgen
WORK=$(mktemp -d -t etcd-api.XXXXXX)
CL_PID=
cleanup() {
  [ -n "$CL_PID" ] && kill -INT "$CL_PID" 2>/dev/null && wait "$CL_PID" 2>/dev/null || true
  "$SHARED/etcd-cluster.sh" stop "$WORK/etcd" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
run() { # system topology scenario clients endpoints workload [extra]
  local raw
  raw=$("$LOADGEN" etcd --endpoints "$5" --clients "$4" --ops 100000000 --max-seconds "$SECS" \
    --value-size 256 --keys 100000 --workload "$6" ${7:-} 2>/dev/null)
  python3 - "$1" "$2" "$3" "$4" "$raw" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
system, topo, scen, clients, raw, load = sys.argv[1:7]
r = json.loads(raw)
print(json.dumps(dict(system=system, topology=topo, scenario=scen, clients=int(clients),
    load1=float(load), ops_s=round(r["ops_per_sec"]), p50_ms=r["p50_us"] / 1000,
    p99_ms=r["p99_us"] / 1000, errors=r["errors"], client="loadgen")), flush=True)
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
    run $sys 3-node get-c64 64 "$eps" get --preload
    if [ $sys = aspen ]; then aspen_stop; aspen_start 1; else
      "$SHARED/etcd-cluster.sh" stop "$WORK/etcd" >/dev/null
      rm -rf "$WORK/etcd"; "$SHARED/etcd-cluster.sh" single "$WORK/etcd" >/dev/null
      eps=$(cat "$WORK/etcd/endpoints"); fi
    for c in 1 64; do run $sys 1-node put-c$c $c "$eps" put; done
    if [ $sys = aspen ]; then aspen_stop; else "$SHARED/etcd-cluster.sh" stop "$WORK/etcd" >/dev/null; fi
  done
done
