#!/usr/bin/env bash
# The exporter on another, older kernel: Debian bullseye's Linux 5.10, booted under qemu
# (software emulation, about 5 s a boot) with an initramfs of busybox, that kernel's
# netfilter modules, nft, and this build of the exporter. Two boots:
#  - without conntrack loaded: the conntrack source is down, counts no error, logs once
#    at debug, and the other sources serve;
#  - with conntrack and ctnetlink loaded and loopback flows tracked: entries and the
#    limit come over ctnetlink from a 5.10 kernel.
# Both boots run the drop_reasons collector, which that kernel cannot have (5.17+).
# Usage (root, after `cargo build`): tests/vm/old-kernel.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/vm/lib.sh
EXPORTER=target/debug/netpressure_exporter

vm_begin 5.10
modules=$(vm_copy_modules "$work/k" "$ir" nf_conntrack nfnetlink nf_conntrack_netlink nf_tables nft_ct | tr '\n' ' ')
vm_copy_binaries "$ir" /usr/sbin/nft
cp "$EXPORTER" "$ir/bin/netpressure_exporter"
strip --strip-debug "$ir/bin/netpressure_exporter"
vm_copy_libs "$ir" "$EXPORTER"
echo "MODULES=\"$modules\"" > "$ir/modules"
cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
$B mount -t sysfs sys /sys
$B ip link set lo up
if $B grep -q np.conntrack=1 /proc/cmdline; then
  . /modules
  for m in $MODULES; do
    $B insmod /m/$m.ko
  done
  /usr/sbin/nft add table inet t
  /usr/sbin/nft add chain inet t out '{ type filter hook output priority 0; }'
  /usr/sbin/nft add rule inet t out ct state new,established accept
  ( while true; do echo hi | $B nc -l -p 7000 >/dev/null 2>&1; done ) &
  $B sleep 0.5
  i=0; while [ $i -lt 20 ]; do echo x | $B nc -w 1 127.0.0.1 7000 >/dev/null 2>&1; i=$((i+1)); done
fi
/bin/netpressure_exporter --web.listen-address=127.0.0.1:9861 --log.level=debug 2>/tmp/log &
# Ready means the first sample is published; poll for it (bounded) rather than sleep.
i=0; until $B wget -q -O /dev/null http://127.0.0.1:9861/-/ready 2>/dev/null || [ $i -ge 300 ]; do $B sleep 0.1; i=$((i+1)); done
echo "===INO=== $($B stat -L -c %i /proc/self/ns/net)"
echo ===METRICS===
$B wget -q -O - http://127.0.0.1:9861/metrics
echo ===LOG===
$B cat /tmp/log
echo ===END===
$B poweroff -f
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

boot() {
  timeout 300 qemu-system-x86_64 -kernel "$work"/k/boot/vmlinuz-* -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet $1" -nographic -m 512 -smp 2 -no-reboot -accel tcg 2>&1 | tr -d '\r'
}

passed=0 failed=0
check() { # name, command...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "PASS $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}
metric() { grep -E "^$1 " "$2" | awk '{print $2}'; }

out="$work/no-conntrack.log"
boot "np.conntrack=0" > "$out"
sed -n '/===METRICS===/,/===LOG===/p' "$out" > "$work/m0"
sed -n '/===LOG===/,/===END===/p' "$out" > "$work/l0"
check "5.10 without conntrack: served at all" grep -q '^netpressure_build_info' "$work/m0"
check "5.10 without conntrack: conntrack source down" test "$(metric 'netpressure_source_up\{source="conntrack"\}' "$work/m0")" = 0
check "5.10 without conntrack: no error counted" test "$(metric 'netpressure_source_errors_total\{source="conntrack"\}' "$work/m0")" = 0
check "5.10 without conntrack: logged once, at debug" \
  test "$(grep -c 'level=debug.*source conntrack is down' "$work/l0")" = 1 -a "$(grep -c 'source conntrack is down' "$work/l0")" = 1
check "5.10 without conntrack: other sources serve" test "$(metric 'netpressure_source_up\{source="netstat"\}' "$work/m0")" = 1
# Drop reasons came with 5.17: on 5.10 the BPF source is down, counts no error, and says
# why once, at info; nothing else changes (the checks above ran with it enabled).
check "5.10: drop_reasons down" test "$(metric 'netpressure_source_up\{source="drop_reasons"\}' "$work/m0")" = 0
check "5.10: drop_reasons counts no error" test "$(metric 'netpressure_source_errors_total\{source="drop_reasons"\}' "$work/m0")" = 0
check "5.10: drop_reasons says why, once" \
  test "$(grep -c 'level=info.*drop_reasons: off on this kernel: ' "$work/l0")" = 1
check "5.10: no drop series" test "$(grep -c '^netpressure_packet_drops_total' "$work/m0")" = 0

out="$work/conntrack.log"
boot "np.conntrack=1" > "$out"
sed -n '/===METRICS===/,/===LOG===/p' "$out" > "$work/m1"
check "5.10 with conntrack: ctnetlink up" test "$(metric 'netpressure_source_up\{source="conntrack_netlink"\}' "$work/m1")" = 1
entries=$(metric 'netpressure_conntrack_entries\{netns="host"\}' "$work/m1")
check "5.10 with conntrack: tracked flows counted over ctnetlink" test "${entries:-0}" -gt 0
check "5.10 with conntrack: the limit" test -n "$(metric 'netpressure_conntrack_entries_limit\{netns="host"\}' "$work/m1")"
ino=$(grep -o '===INO=== [0-9]*' "$out" | awk '{print $2}')
check "5.10: the initial namespace has a dynamic inode ($ino), yet is labelled host (kthreadd's)" \
  test -n "$ino" -a "$ino" != 4026531833 -a -n "$entries"
check "5.10 with conntrack: counters typed as counters" grep -q '^# TYPE netpressure_conntrack_drop_total counter' "$work/m1"

if [ "$failed" -gt 0 ]; then
  echo "--- boot logs"; cat "$work/no-conntrack.log" "$work/conntrack.log" | grep -v '^\[' | tail -80
fi
echo "vm: $passed passed, $failed failed"
[ "$failed" = 0 ]
