#!/usr/bin/env bash
# Runs every fuzz target (fuzz/README.md) for SECONDS each, one after another on one
# core, then minimises each corpus. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts/TARGET/; copy a fixed
# one to fuzz/regressions/TARGET/ so that tests/fuzz_corpora.rs replays it.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ctnetlink sock_diag rtnetlink procfs web_config exposition authorization certificate btf)
fi
cargo +nightly fuzz build --release "${targets[@]/#/}" 2>/dev/null || cargo +nightly fuzz build --release
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  cargo +nightly fuzz run --release "$t" -- -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+.*DONE|Done|stat::|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)" || true
  cargo +nightly fuzz cmin --release "$t" >/dev/null 2>&1 || true
done
