#!/usr/bin/env bash
# Builds bpf/drop_reasons.bpf.o from bpf/drop_reasons.bpf.c with Debian's clang, as
# committed: the exporter embeds the object, so building the exporter needs no clang.
# tests/bpf_object.rs runs this into a temporary directory and compares the bytes.
#
#   sudo apt-get install clang llvm libbpf-dev linux-libc-dev
#   scripts/build-bpf.sh [OUT]        # OUT defaults to bpf/drop_reasons.bpf.o
#
# Deterministic for one clang version, wherever the checkout is: the BTF line info names
# the source by its absolute path, so the directory is mapped to `.`; DWARF, which
# records the build directory too, is stripped; the .BTF and .BTF.ext sections the
# loader relocates with stay.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/bpf/drop_reasons.bpf.o}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
arch_include="/usr/include/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$root/bpf"
clang -O2 -g -target bpf -fdebug-prefix-map="$PWD"=. -I"$arch_include" -c drop_reasons.bpf.c -o "$tmp/full.o"
llvm-strip -g "$tmp/full.o" -o "$out"
