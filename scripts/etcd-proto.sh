#!/usr/bin/env bash
# Regenerates src/etcd/proto/ (prost messages and tonic servers) from proto/etcd/ with
# tools/etcd-proto, a pure-Rust protobuf compiler (no protoc needed); then formats it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p src/etcd/proto
CARGO_TARGET_DIR=target/etcd-proto cargo run --quiet --release \
  --manifest-path tools/etcd-proto/Cargo.toml --bin etcd-proto -- proto/etcd src/etcd/proto
rustfmt --edition 2024 src/etcd/proto/*.rs
