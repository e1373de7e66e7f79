#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer, nightly toolchain) for SECONDS each
# (default 120), starting from the committed seeds and regression inputs plus the local corpus
# (fuzz/corpus, not committed). Prints libFuzzer's last status line per target (executions,
# coverage) and any crash. A crash input lands in fuzz/artifacts/TARGET/: once the bug is
# fixed, copy it to fuzz/regressions/TARGET/, where `cargo test` runs it (tests/storage/
# fuzz_inputs.rs).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
seconds=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_frame raft_frame snapshot_file backup_file tuple apply sql)
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
# No sanitizer: the targets are safe Rust, a panic is the finding (debug assertions stay on).
flags=(--sanitizer none)
cargo +nightly fuzz build "${flags[@]}"
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "regressions/$target"
    log=$(mktemp)
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" \
        "regressions/$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 > "$log" 2>&1 \
        || status=$?
    echo "== $target ($seconds s): exit $status"
    grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -1 || true
    grep -E 'panicked|ERROR|Test unit written' "$log" || true
    rm -f "$log"
done
