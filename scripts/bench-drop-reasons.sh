#!/usr/bin/env bash
# The drop-reason program's cost per event, as the kernel measures it
# (kernel.bpf_stats_enabled: run_time_ns / run_cnt of the program), under a flood of
# drops in a namespace of its own: datagrams to a closed port, each one dropped with
# no_socket. Then the exporter's idle CPU with and without the collector.
#
#   sudo scripts/bench-drop-reasons.sh [SECONDS] [BINARY]
#
# BINARY defaults to target/release/netpressure_exporter. Run as root on an otherwise
# idle machine. kernel.bpf_stats_enabled is restored on exit.
set -euo pipefail
seconds=${1:-10}
bin=${2:-target/release/netpressure_exporter}
cd "$(dirname "$0")/.."
ns="np-bench-drops-$$"
old_stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "$old_stats" > /proc/sys/kernel/bpf_stats_enabled
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up

# CPU time of every thread of a process, in ns (schedstat: exact, where /proc/PID/stat
# counts 10 ms ticks, too coarse for an idle process over a minute).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }

start_exporter() {
  ip netns exec "$ns" "$bin" --web.listen-address=127.0.0.1:19333 "$@" >/dev/null 2>&1 &
  pids+=($!)
  local pid=$!
  for _ in $(seq 100); do
    ip netns exec "$ns" curl -sf 127.0.0.1:19333/-/ready >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "$pid"
}

prog_id() {
  grep -h '^prog_id:' /proc/"$1"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u | head -1
}

stats() { bpftool prog show id "$1" | grep -o 'run_time_ns [0-9]* run_cnt [0-9]*' | awk '{print $2, $4}'; }

echo 1 > /proc/sys/kernel/bpf_stats_enabled
pid=$(start_exporter)
id=$(prog_id "$pid")
[ -n "$id" ] || { echo "the exporter loaded no program" >&2; exit 1; }
read -r t0 c0 < <(stats "$id")
ip netns exec "$ns" python3 - "$seconds" <<'PY'
import socket, sys, threading, time
seconds = float(sys.argv[1])
def flood():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.time() + seconds
    while time.time() < end:
        for _ in range(200):
            s.sendto(b"x" * 16, ("127.0.0.1", 9))
threads = [threading.Thread(target=flood) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
PY
read -r t1 c1 < <(stats "$id")
events=$((c1 - c0))
echo "flood: $events drops in ${seconds}s = $((events / seconds)) drops/s"
echo "program run time: $(( (t1 - t0) / (events > 0 ? events : 1) )) ns per event (run_time_ns $((t1 - t0)), run_cnt $events)"
served=$(ip netns exec "$ns" curl -s 127.0.0.1:19333/metrics | grep 'reason="no_socket"' | awk '{print $2}')
echo "served no_socket drops: $served"
kill "$pid"; wait "$pid" 2>/dev/null || true
echo 0 > /proc/sys/kernel/bpf_stats_enabled

idle() {
  local pid a b
  pid=$(start_exporter "$@")
  sleep 5
  a=$(cpu_ns "$pid"); sleep 60; b=$(cpu_ns "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v d=$((b - a)) 'BEGIN { printf "%.3f %% of a core (%.0f us/s)", d / 60e9 * 100, d / 60e3 }'
}
# Alternated, twice each: the machine's own noise is of the same order.
for round in 1 2 3; do
  echo "idle CPU over 60 s, with drop_reasons: $(idle)"
  echo "idle CPU over 60 s, without (--no-collector.drop_reasons): $(idle --no-collector.drop_reasons)"
done
