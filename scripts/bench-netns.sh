#!/usr/bin/env bash
# The cost of sampling many pod-like network namespaces at default settings: N
# namespaces, each with a process (like a pod's pause container), a listener and two
# established connections, and the exporter (release build, defaults, or the flags
# given after SECONDS) measured for SECONDS after a warm-up: CPU as a share of one
# core, RSS, how often each namespace was sampled, and the fast lane's tick durations.
# Run with N=0 too.
#
# Usage, as root: scripts/bench-netns.sh [N=110] [SECONDS=60] [exporter flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-110}
SECONDS_MEASURED=${2:-60}
shift $(( $# > 2 ? 2 : $# ))
PORT=19862
cargo build --release --quiet
TAG=npb$$
cleanup() {
  kill "${EXP:-}" "${HOLDER:-}" 2>/dev/null || true
  pkill -f "sleep 86400 $TAG" 2>/dev/null || true
  for i in $(seq 1 "$N"); do ip netns del "$TAG-$i" 2>/dev/null || true; done
}
trap cleanup EXIT

for i in $(seq 1 "$N"); do
  ip netns add "$TAG-$i"
  ip -n "$TAG-$i" link set lo up
  ip netns exec "$TAG-$i" bash -c "exec -a 'sleep 86400 $TAG' sleep 86400" &
done
# One process holds a listener and two connections in every namespace (entered with
# setns through ctypes: Python 3.11 has no os.setns).
python3 - "$TAG" "$N" <<'PY' &
import ctypes, os, socket, sys, time
tag, n = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
held = []
own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
for i in range(1, n + 1):
    fd = os.open(f"/run/netns/{tag}-{i}", os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0
    s = socket.socket(); s.bind(("127.0.0.1", 8080)); s.listen(16)
    held += [s] + [socket.create_connection(("127.0.0.1", 8080)) for _ in range(2)]
    os.close(fd)
libc.setns(own, 0x40000000)
print(f"holding {len(held)} sockets in {n} namespaces", flush=True)
time.sleep(86400)
PY
HOLDER=$!
sleep 3

target/release/netpressure_exporter --web.listen-address "127.0.0.1:$PORT" --log.level=warn "$@" &
EXP=$!
sleep 15  # warm-up: first discovery, first scans
PYTHONPATH=scripts python3 - "$EXP" "$SECONDS_MEASURED" "$PORT" <<'PY'
import sys, time
from exporter_stats import cpu_seconds, overruns, rss_bytes, scrape, tick_quantile, ticks
pid, secs, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
_, v0 = scrape(port)
c0, t0 = cpu_seconds(pid), time.monotonic()
time.sleep(secs)
used, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
body, v1 = scrape(port)
rss = rss_bytes(pid)
sampled = v1.get("netpressure_netns_sampled", 0)
print(f"namespaces sampled besides the exporter's own: {sampled:.0f}")
print(f"CPU: {used / wall * 100:.2f} % of one core over {wall:.0f} s; RSS {rss / 2**20:.1f} MiB; {len(v1)} series, {len(body) / 1024:.0f} KiB a scrape")
rounds = v1.get("netpressure_netns_samples_total", 0) - v0.get("netpressure_netns_samples_total", 0)
if sampled:
    print(f"samples per namespace: {rounds / sampled:.1f} in {wall:.0f} s ({rounds / sampled / wall:.2f} a second)")
q = lambda p: tick_quantile(v0, v1, p)
print(f"fast-lane ticks: {ticks(v0, v1):.0f}; 50 % took at most {q(0.5)} s, 99 % {q(0.99)} s, all {q(1.0)} s; overruns {overruns(v0, v1):.0f}")
PY
