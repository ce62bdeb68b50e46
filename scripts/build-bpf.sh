#!/usr/bin/env bash
# Builds bpf/NAME.bpf.o from bpf/NAME.bpf.c (the drop counter and the node pass) with
# Debian's clang, as committed: the exporter embeds the objects, so building the
# exporter needs no clang. tests/bpf_object.rs runs this into a temporary directory and
# compares the bytes.
#
#   sudo apt-get install clang llvm libbpf-dev linux-libc-dev
#   scripts/build-bpf.sh [OUTDIR]     # OUTDIR defaults to bpf/
#
# Deterministic for one clang version, wherever the checkout is: the BTF line info names
# the source by its absolute path, so the directory is mapped to `.`; DWARF, which
# records the build directory too, is stripped; the .BTF and .BTF.ext sections the
# loader relocates with stay.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/bpf}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
arch_include="/usr/include/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$root/bpf"
for name in drop_reasons node_pass; do
  clang -O2 -g -target bpf -fdebug-prefix-map="$PWD"=. -I"$arch_include" -c "$name.bpf.c" -o "$tmp/$name.o"
  llvm-strip -g "$tmp/$name.o" -o "$out/$name.bpf.o"
done
