# The production shape's run, sourced by the guest's init (tests/vm/node-shape.sh) and run
# by sh on the host for the host's own kernel: makes the shape (examples/node_shape.rs),
# starts the exporter, waits until it samples every namespace, reads the kernel's own
# view before and after one scrape, and leaves everything in $OUT for
# tests/vm/check_node.py.
# Needs: OUT, CGROUP, SHAPE_DIR, POD_LOGS, SHAPE ("PODS BINDS MOUNTS PROCS CONNTRACK"),
# TIME_WAIT and DROPS (counts); EXPORTER and NODE_SHAPE (default: on PATH), WGET
# (default: wget).
EXPORTER=${EXPORTER:-netpressure_exporter}
NODE_SHAPE=${NODE_SHAPE:-node_shape}
WGET=${WGET:-wget}
PORT=${PORT:-9861}
up() { cut -d' ' -f1 /proc/uptime; }
# Each step's time since boot, in $OUT/times and on the console.
mark() { echo "$* $(up)" | tee -a "$OUT/times" | sed 's/^/node-shape: /'; }
mkdir -p "$OUT" "$SHAPE_DIR" "$POD_LOGS"
# Long timeouts: the flows and handshakes must stand while they are compared. The
# conntrack limit is the node's (CONNTRACK_MAX: set in the guest only).
sysctl -qw net.netfilter.nf_conntrack_udp_timeout=3600 net.netfilter.nf_conntrack_tcp_timeout_time_wait=3600 \
  net.netfilter.nf_conntrack_tcp_timeout_syn_recv=3600 net.ipv4.tcp_synack_retries=30 net.ipv4.tcp_syncookies=0 \
  2>>"$OUT/errors"
if [ -n "${CONNTRACK_MAX:-}" ]; then sysctl -qw net.netfilter.nf_conntrack_max="$CONNTRACK_MAX" 2>>"$OUT/errors"; fi
# Conntrack tracks this namespace's loopback; the last ACK of handshakes to 7300 is
# dropped (SYN_RECV), and UDP to 7998 (netfilter_drop).
nft -f - <<'NFT' 2>>"$OUT/errors"
table inet shape {
  chain out {
    type filter hook output priority 0;
    tcp dport 7300 tcp flags & (syn | ack) == ack drop
    udp dport 7998 drop
    ct state new,established accept
  }
}
NFT
mark shape-start
# shellcheck disable=SC2086
"$NODE_SHAPE" up "$SHAPE_DIR" "$CGROUP" "$POD_LOGS" $SHAPE > "$OUT/manifest" 2>>"$OUT/errors"
mark shape
grep -q '^ready' "$OUT/manifest" || echo "node_shape failed" >> "$OUT/errors"
# A DaemonSet's container gets a high limit; here at most what the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
t0=$(up)
"$EXPORTER" --web.listen-address=127.0.0.1:$PORT --path.pod-logs="$POD_LOGS" \
  --collector.softnet.per-cpu --collector.conntrack.per-cpu --sample.counter-interval=1s 2>"$OUT/log" &
exporter=$!
scrape() { $WGET -q -O - http://127.0.0.1:$PORT/metrics; }
value() { awk -v n="$1" '$1 == n {print $2}'; }
i=0; until $WGET -q -O /dev/null http://127.0.0.1:$PORT/-/ready 2>/dev/null || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done
mark ready "$t0"
# Every namespace on the node, as the kernel lists them: those of processes, and those
# held by a bind mount (nsfs entries of PID 1's mount table and ours).
stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null | sort -n -u -k1,1 > "$OUT/ns.pids"
awk '$4 ~ /^net:\[/ {print $5}' /proc/1/mountinfo /proc/self/mountinfo | sort -u | xargs -r stat -L -c '%i %n' 2>/dev/null \
  | sort -n -u -k1,1 > "$OUT/ns.binds"
own=$(stat -L -c %i /proc/self/ns/net)
echo "$own" > "$OUT/own-ns"
# PID 1's namespace is the initial one; 0 where it may not be read (then only the fixed
# inode of 6.x names it).
stat -L -c %i /proc/1/ns/net > "$OUT/init-ns" 2>/dev/null || echo 0 > "$OUT/init-ns"
want=$(cat "$OUT/ns.pids" "$OUT/ns.binds" | awk '{print $1}' | sort -u | grep -vc "^$own\$")
i=0; until [ "$(scrape | value netpressure_netns_sampled)" = "$want" ] || [ $i -ge 600 ]; do sleep 1; i=$((i+1)); done
mark all-sampled
# Waits until every namespace has been sampled twice more and the node's counters read
# twice more than when it was called: the samples that follow what was read before.
settle() {
  n0=$(scrape | value netpressure_netns_samples_total)
  c0=$(scrape | value 'netpressure_samples_total{source="conntrack"}')
  i=0
  until s=$(scrape) && [ "$(echo "$s" | value netpressure_netns_samples_total)" -ge $((n0 + 2 * want)) ] \
      && [ "$(echo "$s" | value 'netpressure_samples_total{source="conntrack"}')" -ge $((c0 + 2)) ] || [ $i -ge 600 ]; do
    sleep 1; i=$((i+1))
  done
}
# A TIME_WAIT storm in the first pod's namespace (no other traffic there), read at once:
# its sockets live 60 s.
tw_pid=$(awk '/^pod / {print $2; exit}' "$OUT/manifest")
stat -L -c %i "/proc/$tw_pid/ns/net" > "$OUT/tw.ns"
nsenter --net="/proc/$tw_pid/ns/net" "$NODE_SHAPE" time-wait "$TIME_WAIT" 2>>"$OUT/errors"
nsenter --net="/proc/$tw_pid/ns/net" ss -Htan state time-wait | wc -l > "$OUT/tw.before"
settle
scrape > "$OUT/metrics.tw"
nsenter --net="/proc/$tw_pid/ns/net" ss -Htan state time-wait | wc -l > "$OUT/tw.after"
mark time-wait
# Drops of several reasons in the node's namespace, with the exporter counting.
"$NODE_SHAPE" drops "$DROPS" 2>>"$OUT/errors"
truth() { # dir [per-namespace]
  mkdir -p "$1"
  cat /proc/sys/fs/file-nr > "$1/file-nr"
  cat /proc/net/softnet_stat > "$1/softnet_stat"
  cat /proc/net/stat/nf_conntrack > "$1/stat_nf_conntrack" 2>/dev/null
  conntrack -S > "$1/conntrack-S" 2>&1
  conntrack -C > "$1/conntrack-C" 2>&1
  # The exporter's own map, by the id its descriptors hold: another program on the
  # machine may have a map of the same name.
  id=$(for f in /proc/"$exporter"/fdinfo/*; do sed -n 's/^map_id:[[:space:]]*//p' "$f"; done | sort -u \
    | while read -r m; do bpftool map show id "$m" 2>/dev/null | grep -q ' name drops ' && echo "$m"; done | head -n 1)
  if [ -n "$id" ]; then bpftool -j map dump id "$id" > "$1/drops.json" 2>/dev/null; fi
  [ -n "${2:-}" ] || return 0
  cat "$OUT/ns.pids" "$OUT/ns.binds" | sort -n -u -k1,1 | while read -r ino path; do
    echo "== $ino"
    nsenter --net="$path" conntrack -C 2>&1
    nsenter --net="$path" ss -Htan state listening state syn-recv
  done > "$1/per-ns"
}
truth "$OUT/before" per-namespace
mark truth
settle
scrape > "$OUT/metrics"
mark scraped
truth "$OUT/after"
cat /sys/devices/system/cpu/online /sys/devices/system/cpu/possible > "$OUT/cpus"
uname -r > "$OUT/kernel"
wc -l < /proc/self/mountinfo > "$OUT/mounts"
ls -d /proc/[0-9]* | wc -l > "$OUT/processes"
# Where the exporter's memory is (a 64-CPU guest showed 93-139 MiB resident against 20 on
# the 2-CPU host with the same shape): kept with the results.
cat "/proc/$exporter/smaps" > "$OUT/exporter-smaps" 2>/dev/null
cat "/proc/$exporter/status" > "$OUT/exporter-status" 2>/dev/null
kill "$exporter" 2>/dev/null
wait "$exporter" 2>/dev/null
cp "$OUT/log" "$OUT/log.final" 2>/dev/null
