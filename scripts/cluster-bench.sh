#!/usr/bin/env bash
# A quick A/B driver (no etcd): starts a local cluster from the binaries in BIN, runs
# `aspen bench put` for each client count and prints one line per run:
#   LABEL put cCLIENTS OPS_PER_S P50_MS CPU_S_PER_1000_OPS(summed over the nodes)
# Usage: BIN=target/release NODES=3 CLIENTS="1 16 64" SECS=4 scripts/cluster-bench.sh LABEL
# Compare two builds by copying each build's `aspen-node` and `aspen` into its own directory
# and alternating runs with BIN pointing at each (figures in docs/performance.md).
set -euo pipefail
label=${1:?usage: scripts/cluster-bench.sh LABEL}
bin=${BIN:-target/release}
work=$(mktemp -d)
trap 'kill -INT "$cluster" 2>/dev/null; wait "$cluster" 2>/dev/null; rm -rf "$work"' EXIT
"$bin/aspen-node" cluster --nodes "${NODES:-3}" --data-dir "$work/data" > "$work/out" 2>&1 &
cluster=$!
for _ in $(seq 1 300); do grep -q "ASPEN_NODE=" "$work/out" && break; sleep 0.1; done
export "$(grep -o 'ASPEN_NODE=[^ ]*' "$work/out" | head -1)"
for c in ${CLIENTS:-1 16 64}; do
  "$bin/aspen" --output json bench put --clients "$c" --connections $((c < 16 ? c : 16)) \
    --duration "${SECS:-5}s" --keyspace 100000 |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], "put c%d" % r["clients"], round(r["throughput_ops_s"]), r["latency_ms"]["p50"], round(sum(r["cpu_s_per_1000_ops"].values()), 3))' "$label"
done
