#!/usr/bin/env bash
# Aspen against etcd 3.4 in one run, and the ratio table of docs/performance.md. Runs the
# shared driver (../shared/bench/compare.sh: for each round Aspen on 3 nodes and on 1, then
# etcd the same; put with 1/16/64/256 clients and linearizable get with 64 on 3 nodes, put
# with 1 and 64 on 1 node; 256-byte values; release build), then prints its table with the
# Aspen/etcd column and, from the same Aspen runs, each node's CPU seconds per 1,000
# operations and resident memory. The driver installs etcd-server and protobuf-compiler with
# apt when missing; ports 2379-2380, 22379-22380 and 32379-32380 must be free.
# Usage: scripts/bench.sh [ROUNDS] [SECONDS]   (default 2 rounds, 8 s per scenario)
# Writes the raw lines to bench-etcd.jsonl and the Aspen reports to bench-aspen.jsonl.
set -euo pipefail
rounds=${1:-2}
seconds=${2:-8}
cd "$(dirname "$0")/.."
shared=${ASPEN_SHARED:-../shared}
[ -x "$shared/bench/compare.sh" ] || { echo "bench: $shared/bench/compare.sh not found (set ASPEN_SHARED)" >&2; exit 2; }
cargo build --release --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# compare.sh drives `aspen` from a directory: this one's `aspen` also keeps each bench report.
ln -s "$PWD/target/release/aspen-node" "$work/aspen-node"
cat > "$work/aspen" <<EOF
#!/usr/bin/env bash
out=\$("$PWD/target/release/aspen" "\$@")
status=\$?
case " \$* " in *" json bench "*) printf '%s\n' "\$out" >> "$PWD/bench-aspen.jsonl" ;; esac
printf '%s\n' "\$out"
exit \$status
EOF
chmod +x "$work/aspen"
: > bench-aspen.jsonl
"$shared/bench/compare.sh" "$work" "$rounds" "$seconds" | tee bench-etcd.jsonl
echo
python3 "$shared/bench/table.py" bench-etcd.jsonl
echo
python3 - bench-aspen.jsonl <<'PY'
import json, sys
print("| Aspen run | clients | ops/s | CPU s per 1,000 ops, by node | sum | RSS MB, by node |")
print("|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    cpu, rss = r.get("cpu_s_per_1000_ops", {}), r.get("rss_mb", {})
    print(f"| {r['nodes']} node(s) {r['workload']} | {r['clients']} | {r['throughput_ops_s']:.0f} | "
          f"{' / '.join(f'{v:.3f}' for v in cpu.values())} | {sum(cpu.values()):.3f} | "
          f"{' / '.join(str(v) for v in rss.values())} |")
PY
