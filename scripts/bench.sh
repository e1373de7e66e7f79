#!/usr/bin/env bash
# Aspen against etcd 3.4 in one run, with the Aspen/etcd ratio table of the README.
#
#   scripts/bench.sh [ROUNDS] [SECONDS]            through one client (the README's table)
#   scripts/bench.sh --native [ROUNDS] [SECONDS]   each through its own client
#
# Through one client: `aspen bench --protocol etcd` drives Aspen's etcd API and etcd 3.4 with
# the same code (scripts/etcd-api-bench.sh): 3 nodes put with 1/16/64/256 clients and
# linearizable get with 64, 1 node put with 1 and 64; 256-byte values; release build. Writes
# the raw lines to bench-etcd-api.jsonl and prints the table.
#
# --native: the shared driver (../shared/bench/compare.sh), the same scenarios with Aspen on
# its own protocol (`aspen bench`) and etcd on ../shared/bench's loadgen; then, from the same
# Aspen runs, each node's CPU seconds per 1,000 operations and resident memory. Writes
# bench-etcd.jsonl and bench-aspen.jsonl. The driver installs etcd-server and
# protobuf-compiler with apt when missing.
#
# Default 2 rounds, 8 s per scenario; ports 2379-2380, 22379-22380 and 32379-32380 must be free.
set -euo pipefail
native=
if [ "${1:-}" = --native ]; then native=1; shift; fi
rounds=${1:-2}
seconds=${2:-8}
cd "$(dirname "$0")/.."
shared=${ASPEN_SHARED:-../shared}
[ -x "$shared/bench/compare.sh" ] || { echo "bench: $shared/bench/compare.sh not found (set ASPEN_SHARED)" >&2; exit 2; }
cargo build --release --bins
if [ -z "$native" ]; then
  command -v etcd >/dev/null || { echo "bench: etcd not found (Debian: apt-get install etcd-server)" >&2; exit 2; }
  ASPEN_SHARED=$shared scripts/etcd-api-bench.sh target/release "$rounds" "$seconds" | tee bench-etcd-api.jsonl
  echo
  python3 "$shared/bench/table.py" bench-etcd-api.jsonl
  exit 0
fi
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
