#!/bin/busybox sh
# Runs as PID 1 in a throwaway qemu VM: loads conntrack and nf_tables, adds a
# `ct state` rule so that loopback flows are tracked, makes 40 short TCP connections
# on loopback, then prints /proc/net/stat/nf_conntrack between markers and powers off.
B=/bin/busybox
$B mkdir -p /proc /sys /tmp
$B mount -t proc proc /proc
$B mkdir -p /dev && $B mount -t devtmpfs dev /dev
for m in libcrc32c nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack nfnetlink nf_tables nft_ct; do $B insmod /m/$m.ko; done
$B ip link set lo up
/usr/sbin/nft add table inet t
/usr/sbin/nft add chain inet t out '{ type filter hook output priority 0; }'
/usr/sbin/nft add rule inet t out ct state new,established accept
( while true; do echo hi | $B nc -l -p 7000 >/dev/null 2>&1; done ) &
$B sleep 0.5
i=0; while [ $i -lt 40 ]; do echo x | $B nc -w 1 127.0.0.1 7000 >/dev/null 2>&1; i=$((i+1)); done
echo "===UNAME $($B uname -r)"
echo ===BEGIN===
$B cat /proc/net/stat/nf_conntrack
echo ===END===
echo "===COUNT $($B cat /proc/sys/net/netfilter/nf_conntrack_count)"
$B poweroff -f
