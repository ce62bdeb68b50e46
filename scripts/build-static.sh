#!/usr/bin/env bash
# The release binary, statically linked: glibc's static-pie build (`+crt-static` on the
# gnu target), with no runtime dependency at all, so that it runs in an empty (scratch)
# image and on any x86_64 Linux node as it is. `--target` keeps the flag off build
# scripts and proc macros, which must stay dynamic. Prints the binary's path.
#
# Host names in --web.listen-address are resolved by glibc's NSS, which a static binary
# cannot load: use an address (the defaults and the DaemonSet do).
#
# Usage: scripts/build-static.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet --target "$TARGET"
echo "target/$TARGET/release/netpressure_exporter"
