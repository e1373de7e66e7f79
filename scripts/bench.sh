#!/usr/bin/env bash
# The figures of docs/performance.md: `aspen bench` against a local 3-node cluster and a
# single node (`aspen-node cluster`, release build, loopback, temporary data dirs), 256-byte
# values, 16-byte keys, keyspace 10,000: put with 1, 16, 64 and 256 clients, then linearizable
# get with 64 clients (after one put of every key). Each line runs REPS times (default 3) for
# DURATION each (default 8s); the summary prints the median run by throughput, as JSON lines
# in bench-results.jsonl and as a table.
# Usage: scripts/bench.sh [REPS] [DURATION]
set -euo pipefail
reps=${1:-3}
duration=${2:-8s}
cd "$(dirname "$0")/.."
cargo build --release --bins
bin=target/release
out=bench-results.jsonl
: > "$out"
work=$(mktemp -d)
cluster_pid=
stop_cluster() {
    if [ -n "$cluster_pid" ]; then kill -INT "$cluster_pid" 2>/dev/null || true; wait "$cluster_pid" 2>/dev/null || true; fi
    cluster_pid=
}
trap 'stop_cluster; rm -rf "$work"' EXIT

run() { # topology, then aspen bench arguments
    local topology=$1; shift
    local runs=()
    for _ in $(seq 1 "$reps"); do
        runs+=("$("$bin/aspen" --output json bench "$@")")
    done
    printf '%s\n' "${runs[@]}" | python3 -c '
import json, sys
runs = sorted((json.loads(l) for l in sys.stdin), key=lambda r: r["throughput_ops_s"])
median = runs[len(runs) // 2]
median["topology"] = sys.argv[1]
median["runs_throughput"] = [round(r["throughput_ops_s"]) for r in runs]
print(json.dumps(median))' "$topology" | tee -a "$out"
}

for nodes in 3 1; do
    rm -rf "$work/data"
    "$bin/aspen-node" cluster --nodes "$nodes" --data-dir "$work/data" > "$work/cluster.out" 2>&1 &
    cluster_pid=$!
    for _ in $(seq 1 300); do grep -q "ASPEN_NODE=" "$work/cluster.out" && break; sleep 0.1; done
    export "$(grep -o 'ASPEN_NODE=.*' "$work/cluster.out" | head -1)"
    topology="$nodes-node"
    for clients in 1 16 64 256; do
        connections=$(( clients < 16 ? clients : 16 ))
        run "$topology" put --clients "$clients" --connections "$connections" --duration "$duration"
    done
    "$bin/aspen" bench put --clients 64 --connections 16 --total 10000 > /dev/null
    run "$topology" get --clients 64 --connections 16 --duration "$duration"
    stop_cluster
done

python3 - "$out" <<'PY'
import json, sys
print(f"{'topology':9} {'workload':8} {'clients':>7} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  runs (ops/s)")
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['topology']:9} {r['workload']:8} {r['clients']:7} {r['throughput_ops_s']:8.0f} "
          f"{r['latency_ms']['p50']:8.2f} {r['latency_ms']['p99']:8.2f} {r['errors']:6}  {r['runs_throughput']}")
PY
