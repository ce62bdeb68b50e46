# Shared by the qemu harnesses in tests/vm: Debian's cloud kernels, fetched once into
# target/vm-cache with a private apt configuration (the machine's own sources are left
# alone), and an initramfs builder that copies host binaries with their libraries and a
# kernel's modules with their dependencies.

VM_CACHE=${VM_CACHE:-target/vm-cache}

# The Debian release whose cloud kernel is `version` (5.10, 6.1, 6.12).
vm_release() {
  case "$1" in
    5.10) echo bullseye ;;
    6.1) echo bookworm ;;
    6.12) echo trixie ;;
    *) echo "tests/vm: no Debian release known for kernel $1 (5.10, 6.1 or 6.12)" >&2; return 2 ;;
  esac
}

# Prints the path of the cloud kernel package of `version`, fetching it once: the package
# `linux-image-cloud-amd64` of that release depends on, or `pin` when given.
vm_kernel_deb() { # version [pin]
  local release dir pkg
  release=$(vm_release "$1") || return 2
  dir="$VM_CACHE/$release"
  mkdir -p "$dir"
  if ! ls "$dir"/linux-image-*.deb >/dev/null 2>&1; then
    local apt_dir
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $release main" \
      > "$apt_dir/sources.list"
    local apt_opts=(-o APT::Sandbox::User=root -o Dir::Etc::sourcelist="$apt_dir/sources.list"
                    -o Dir::Etc::sourceparts=/dev/null -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache")
    apt-get "${apt_opts[@]}" -qq update
    pkg=${2:-$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')}
    (cd "$dir" && apt-get "${apt_opts[@]}" -qq download "$pkg" 2>/dev/null)
    rm -rf "$apt_dir"
  fi
  ls "$dir"/linux-image-*.deb | head -n 1
}

# Copies the shared libraries each binary loads into the initramfs root `ir`, at their paths.
vm_copy_libs() { # ir binary...
  local ir=$1 bin lib
  shift
  for bin in "$@"; do
    for lib in $(ldd "$bin" 2>/dev/null | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
      mkdir -p "$ir$(dirname "$lib")"
      cp -L "$lib" "$ir$lib"
    done
  done
}

# Copies each binary (an absolute path) into `ir` at the same path, with its libraries.
vm_copy_binaries() { # ir binary...
  local ir=$1 bin
  shift
  for bin in "$@"; do
    mkdir -p "$ir$(dirname "$bin")"
    cp -L "$bin" "$ir$bin"
  done
  vm_copy_libs "$ir" "$@"
}

# Copies the named modules of the kernel extracted at `k`, with their dependencies, into
# `ir/m` (decompressed: busybox's insmod reads plain .ko), and prints their names in an
# order that loads (dependencies first). Modules built into the kernel are skipped.
vm_copy_modules() { # k ir module...
  local k=$1 ir=$2
  shift 2
  local mods
  mods=$(ls -d "$k"/lib/modules/* "$k"/usr/lib/modules/* 2>/dev/null | head -n 1)
  mkdir -p "$ir/m"
  local path name
  python3 - "$mods" "$@" <<'PY' | while read -r path; do
# Dependencies from each module's own .modinfo ("depends=a,b"): the package ships no
# modules.dep (depmod writes it at install).
import lzma, os, re, sys
mods, wanted = sys.argv[1], sys.argv[2:]
files = {}
for root, _, names in os.walk(mods):
    for n in names:
        if ".ko" in n:
            files[n.split(".ko")[0].replace("-", "_")] = os.path.join(root, n)
def depends(path):
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    m = re.search(rb"depends=([^\0]*)\0", data)
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d] if m else []
order = []
def visit(name):
    path = files.get(name)
    if path is None or path in order:  # absent: built in
        return
    for d in depends(path):
        visit(d)
    order.append(path)
for name in wanted:
    visit(name.replace("-", "_"))
for p in order:
    print(p)
PY
    name=$(basename "$path"); name=${name%%.ko*}
    case "$path" in
      *.xz) xz -dc "$path" > "$ir/m/$name.ko" ;;
      *.zst) zstd -qdc "$path" > "$ir/m/$name.ko" ;;
      *) cp "$path" "$ir/m/$name.ko" ;;
    esac
    echo "$name"
  done
}

# Sets `work`, a directory removed at exit, with the kernel of `version` extracted in
# $work/k, and `ir`, an initramfs root $work/ir holding busybox.
vm_begin() { # version
  local deb
  deb=$(vm_kernel_deb "$1")
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  dpkg-deb -x "$deb" "$work/k"
  ir="$work/ir"
  mkdir -p "$ir/bin"
  cp /usr/bin/busybox "$ir/bin/"
}
