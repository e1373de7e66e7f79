#!/usr/bin/env bash
# Measures the operations of docs/operations.md "Operations": loads 100,000 keys of 256 bytes
# into one vault (aspen txn --file, 100 puts per transaction), compacts, deletes 90% of them, snapshots
# and compacts again (each compaction prints how long reads and writes waited), then times a
# backup and a restore of what is left. One node on loopback, free ports, a temporary data dir.
# Usage: scripts/measure_ops.sh [debug|release]   (default debug)
set -euo pipefail
profile=${1:-debug}
cd "$(dirname "$0")/.."
if [ "$profile" = release ]; then cargo build --release --bins; else cargo build --bins; fi
bin=target/$profile
work=$(mktemp -d)
node_pid=
cleanup() {
    if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
export ASPEN_NODE__DATA_DIR=$work/data ASPEN_HTTP__ADDRESS=127.0.0.1:0 ASPEN_NET__ADDRESS=127.0.0.1:0 ASPEN_ETCD__ADDRESS=127.0.0.1:0
export ASPEN_HTTP__ADMIN_TOKEN=measure ASPEN_ADMIN_TOKEN=measure
"$bin/aspen-node" --config config/node.toml > "$work/node.out" 2> "$work/node.err" &
node_pid=$!
aspen() { "$bin/aspen" --data-dir "$work/data" "$@"; }
for _ in $(seq 1 200); do aspen put probe 1 > /dev/null 2>&1 && break; sleep 0.1; done
value=$(head -c 256 /dev/zero | tr '\0' 'x')
for t in $(seq -w 0 999); do
    {
        printf '{"compare": [], "failure": [], "success": ['
        for i in $(seq -w 0 99); do
            [ "$i" = 00 ] || printf ','
            printf '"put vault/bench/%s/%s %s"' "$t" "$i" "$value"
        done
        printf ']}'
    } > "$work/txn.json"
    aspen txn --file "$work/txn.json" > /dev/null
done
aspen vault list
aspen admin defrag
for d in 1 2 3 4 5 6 7 8 9; do aspen del "vault/bench/${d}" --prefix > /dev/null; done
aspen vault list
aspen admin snapshot
aspen admin defrag
time aspen admin backup --out "$work/b.backup"
time "$bin/aspen-node" restore --from "$work/b.backup" --data-dir "$work/restored"
