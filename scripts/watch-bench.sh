#!/usr/bin/env bash
# The watch workload against a fresh local cluster: for each round, a 3-node `aspen-node
# cluster` from the binaries in BIN, `aspen bench put` (64 clients), then `aspen bench watch`
# with the same writers and WATCHERS watchers; one JSON report per run on stdout. With
# PROBE=1, each node's thread count and RSS 5 s into the watch run go to stderr.
# Usage: BIN=target/release ROUNDS=2 SECS=8 WATCHERS=100 scripts/watch-bench.sh > watch.jsonl
set -euo pipefail
bin=${BIN:-target/release}
for _ in $(seq 1 "${ROUNDS:-2}"); do
  work=$(mktemp -d)
  "$bin/aspen-node" cluster --nodes 3 --data-dir "$work/data" > "$work/out" 2>&1 &
  cluster=$!
  for _ in $(seq 1 300); do grep -q "ASPEN_NODE=" "$work/out" && break; sleep 0.1; done
  export "$(grep -o 'ASPEN_NODE=[^ ]*' "$work/out" | head -1)"
  export "$(grep -o 'ASPEN_KEY=[^ ]*' "$work/out" | head -1)"
  common=(--clients 64 --connections 16 --duration "${SECS:-8}s" --keyspace 100000)
  "$bin/aspen" --output json bench put "${common[@]}"
  "$bin/aspen" --output json bench watch "${common[@]}" --watchers "${WATCHERS:-100}" &
  bench=$!
  if [ "${PROBE:-0}" = 1 ]; then
    sleep 5
    # Every aspen-node process (the cluster's parent, with a few threads, included).
    for pid in $(pgrep -f "$bin/aspen-node" || true); do
      echo "aspen-node pid $pid: $(ls "/proc/$pid/task" | wc -l) threads, $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") kB RSS" >&2
    done
  fi
  wait "$bench"
  kill -INT "$cluster"; wait "$cluster" 2>/dev/null || true
  rm -rf "$work"
done
