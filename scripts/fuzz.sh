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
# A decoder whose memory grows with what its input expands to (a YAML alias bomb) fails
# the run at this bound instead of going unnoticed.
rss_limit_mb=${RSS_LIMIT_MB:-1024}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ctnetlink sock_diag rtnetlink procfs web_config kube_proxy_config exposition authorization certificate btf)
fi
cargo +nightly fuzz build --release "${targets[@]/#/}" 2>/dev/null || cargo +nightly fuzz build --release
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  # The inputs of past findings run first, under the same bounds (fuzz/regressions/).
  dirs=("corpus/$t")
  [ -d "regressions/$t" ] && dirs+=("regressions/$t")
  cargo +nightly fuzz run --release "$t" "${dirs[@]}" -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb="$rss_limit_mb" -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+.*DONE|Done|stat::|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)" || true
  cargo +nightly fuzz cmin --release "$t" >/dev/null 2>&1 || true
done
