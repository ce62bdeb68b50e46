#!/usr/bin/env bash
# A node shaped like production, booted: Debian's cloud kernel of the given version under
# qemu (software emulation: KVM guests hang on this machine) with 66 CPUs booted of 128
# possible and two of them then taken offline (hotplug's holes: 64 online), and in it 250 pod namespaces (a process each, in a kubelet-shaped cgroup, with
# its /var/log/pods entry), 50 namespaces held only by a bind mount, 1,500 extra mounts,
# 5,000 processes, 100,000 entries in the node's conntrack table, full accept queues,
# SYN_RECV, a TIME_WAIT storm and drops of several reasons (examples/node_shape.rs makes
# them). The exporter runs there at its defaults (per-CPU series on, to count every CPU),
# and tests/vm/check_node.py compares every family with the kernel's own tools
# (conntrack -C and -S, ss, softnet_stat's rows, file-nr, bpftool's dump of the per-CPU
# drop map) read before and after the scrape, through a strict exposition parser.
#
# Usage (root, after `cargo build --examples`):
#   tests/vm/node-shape.sh host             the host's own kernel, natively
#   tests/vm/node-shape.sh 6.1              one guest kernel: 5.10, 6.1 or 6.12
#   tests/vm/node-shape.sh all              the four, one after the other
# Environment: NODE_SHAPE="PODS BINDS MOUNTS PROCS CONNTRACK TIME_WAIT DROPS" to change the
# shape, NODE_SHAPE_CPUS="66,maxcpus=128", NODE_SHAPE_HOLES="7 33" (CPUs taken offline),
# NODE_SHAPE_OUT=DIR to keep each kernel's
# results (the report is DIR/VERSION/report.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/vm/lib.sh

if [ "${1:-}" = all ]; then
  rc=0
  for v in host 5.10 6.1 6.12; do "$0" "$v" || rc=1; done
  exit $rc
fi
version=${1:?usage: tests/vm/node-shape.sh host|5.10|6.1|6.12|all}
read -r PODS BINDS MOUNTS PROCS CONNTRACK TIME_WAIT DROPS <<< "${NODE_SHAPE:-250 50 1500 5000 100000 2000 200}"
CPUS=${NODE_SHAPE_CPUS:-66,maxcpus=128}
HOLES=${NODE_SHAPE_HOLES:-7 33}
EXPORTER=target/debug/netpressure_exporter
SHAPE=target/debug/examples/node_shape
for b in "$EXPORTER" "$SHAPE"; do
  [ -x "$b" ] || { echo "tests/vm/node-shape.sh: $b missing: run cargo build --examples first" >&2; exit 1; }
done

# The host's own kernel, natively: the node is a network namespace of the test's own, the
# mounts and bind mounts live in a mount namespace of its own, the pods' cgroups under
# the machine's cgroup v2 tree, and everything is ended after.
if [ "$version" = host ]; then
  results=${NODE_SHAPE_OUT:-$(mktemp -d)}/host
  rm -rf "$results"
  mkdir -p "$results"
  node=np-shape-$$
  cg=/sys/fs/cgroup
  [ -e /sys/fs/cgroup/unified/cgroup.procs ] && cg=/sys/fs/cgroup/unified
  work=$(mktemp -d)
  cleanup() {
    set +e # every step, whatever the one before it came to
    pgid=$(awk '/^pgid / {print $2}' "$results/manifest" 2>/dev/null)
    [ -n "$pgid" ] && kill -9 -- "-$pgid" 2>/dev/null
    [ -n "${runner:-}" ] && kill -9 -- "-$runner" 2>/dev/null
    # The pods' cgroups (their UIDs carry 5a9e, examples/node_shape.rs) empty once their
    # processes are reaped; the parent slices go only if nothing else is in them.
    for _ in $(seq 300); do
      find "$cg/kubepods.slice" -depth -type d -path '*5a9e*' -exec rmdir {} + 2>/dev/null
      [ -z "$(find "$cg/kubepods.slice" -type d -path '*5a9e*' 2>/dev/null)" ] && break
      sleep 0.1
    done
    rmdir "$cg/kubepods.slice/kubepods-besteffort.slice" "$cg/kubepods.slice" 2>/dev/null
    ip netns del "$node" 2>/dev/null
    rm -rf "$work"
  }
  trap cleanup EXIT
  ip netns add "$node"
  ip netns exec "$node" ip link set lo up
  start=$(date +%s)
  setsid nsenter --net="/run/netns/$node" unshare --mount --propagation private \
    env OUT="$results" CGROUP="$cg" SHAPE_DIR="$work/shape" POD_LOGS="$work/pods" EXPORTER="$PWD/$EXPORTER" \
    NODE_SHAPE="$PWD/$SHAPE" WGET="busybox wget" SHAPE="$PODS $BINDS $MOUNTS $PROCS $CONNTRACK" \
    TIME_WAIT="$TIME_WAIT" DROPS="$DROPS" \
    sh tests/vm/shape-run.sh &
  runner=$!
  wait "$runner" || true
  echo "wall $(( $(date +%s) - start ))" >> "$results/times"
  python3 tests/vm/check_node.py "$results" --pods "$PODS" --binds "$BINDS" --mounts "$MOUNTS" --procs "$PROCS" \
    --conntrack "$CONNTRACK" --time-wait "$TIME_WAIT"
  exit
fi

vm_begin "$version"
# What a node's modprobe would load on demand (this initramfs has none): sock_diag's TCP
# module among them.
modules=$(vm_copy_modules "$work/k" "$ir" virtio_pci virtio_blk nf_conntrack nfnetlink nf_conntrack_netlink \
          nf_tables nft_ct inet_diag tcp_diag | tr '\n' ' ')
vm_copy_binaries "$ir" /usr/sbin/nft /usr/sbin/conntrack /usr/bin/ss /usr/bin/nsenter /usr/sbin/bpftool
cp "$EXPORTER" "$ir/bin/netpressure_exporter"
cp "$SHAPE" "$ir/bin/node_shape"
cp tests/vm/shape-run.sh "$ir/shape-run.sh"
strip --strip-debug "$ir/bin/netpressure_exporter" "$ir/bin/node_shape"
vm_copy_libs "$ir" "$EXPORTER" "$SHAPE"

cat > "$ir/init" <<INIT
#!/bin/busybox sh
MODULES="$modules"
SHAPE="$PODS $BINDS $MOUNTS $PROCS $CONNTRACK"
TIME_WAIT=$TIME_WAIT
DROPS=$DROPS
HOLES="$HOLES"
INIT
cat >> "$ir/init" <<'INIT'
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp /run /var/log/pods /out /usr/bin /usr/sbin
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
$B mount -t sysfs sys /sys
$B mount -t tmpfs tmp /tmp
$B mount -t tmpfs run /run
$B mount -t tmpfs out /out
$B mount -t cgroup2 cgroup2 /sys/fs/cgroup
$B --install -s /usr/bin 2>/dev/null
export PATH=/bin:/usr/bin:/usr/sbin:/sbin
up() { $B cut -d' ' -f1 /proc/uptime; }
for m in $MODULES; do $B insmod /m/$m.ko; done
$B ip link set lo up
echo "boot $(up)" > /out/times
# Holes among the online CPUs, as hotplug leaves them: rows of softnet_stat are then not
# numbered by their position.
for c in $HOLES; do echo 0 > /sys/devices/system/cpu/cpu$c/online; done
CONNTRACK_MAX=262144 OUT=/out CGROUP=/sys/fs/cgroup SHAPE_DIR=/run/shape POD_LOGS=/var/log/pods . /shape-run.sh
echo "$MODULES" > /out/modules
tar -c -f /dev/vda -C /out .
sync
poweroff -f
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")
truncate -s 256M "$work/out.img"
# One host thread runs every vCPU: with a thread each (qemu's default), a 6.12 guest
# crashed once in nf_conntrack at a 2-byte NOP, code the kernel patches live at its
# first connection (a static key), which is how multi-threaded emulation fails on
# cross-modifying code. qemu's maxcpus makes room for hotplug: 5.10 and 6.1 count those
# CPUs as possible (128), 6.12 only the ones booted (66), `possible_cpus=` or not.
start=$(date +%s)
timeout 1500 qemu-system-x86_64 -kernel "$(ls "$work"/k/boot/vmlinuz-*)" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet" -nographic -m 4096 -smp "$CPUS" -no-reboot \
  -accel tcg,thread=single \
  -drive "file=$work/out.img,if=virtio,format=raw" > "$work/console" 2>&1 || true
tr -d '\r' < "$work/console" | grep '^node-shape: ' || true
results=${NODE_SHAPE_OUT:-$work/results}/$version
rm -rf "$results"
mkdir -p "$results"
tar -x -f "$work/out.img" -C "$results" 2>/dev/null
if [ ! -s "$results/metrics" ]; then
  tr -d '\r' < "$work/console" | tail -60
  echo "node-shape $version: the guest wrote no scrape ($(ls "$results" | tr '\n' ' '))"
  exit 1
fi
echo "wall $(( $(date +%s) - start ))" >> "$results/times"
python3 tests/vm/check_node.py "$results" --pods "$PODS" --binds "$BINDS" --mounts "$MOUNTS" --procs "$PROCS" \
  --conntrack "$CONNTRACK" --time-wait "$TIME_WAIT"
