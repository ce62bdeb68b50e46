#!/usr/bin/env bash
# Does slow work delay the fast lane? The exporter (release build, defaults) in a
# namespace holding about 50,000 TIME_WAIT sockets (kept up by a client that replaces
# the ones that expire) on a machine with 2,000 extra processes: the remotes scan walks
# the TIME_WAIT sockets and the process scan every /proc/PID every 5 s, on the slow
# lane. Measured over SECONDS after a warm-up: the fast lane's overruns and tick
# durations (netpressure_sample_duration_seconds), the scans' durations, CPU.
#
# Usage, as root: scripts/bench-cadence.sh [TIME_WAIT=50000] [SECONDS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
SECONDS_MEASURED=${2:-60}
PORT=19863
NS=np-cadence-$$
TAG=npc$$
cargo build --release --quiet
cleanup() {
  kill "${EXP:-}" "${GEN:-}" 2>/dev/null || true
  pkill -f "sleep 86400 $TAG" 2>/dev/null || true
  ip netns del $NS 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $NS
ip -n $NS link set lo up
ip netns exec $NS sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=0 \
  net.ipv4.tcp_max_tw_buckets=$((N * 2))
for _ in $(seq 1 2000); do bash -c "exec -a 'sleep 86400 $TAG' sleep 86400" & done

# N connections closed by the client (each leaves a TIME_WAIT socket for 60 s), then
# N/60 a second to replace those that expire.
ip netns exec $NS python3 - "$N" <<'PY' &
import socket, sys, threading, time
n, ports = int(sys.argv[1]), [7000, 7001, 7002, 7003]
def server(srv):
    while True:
        s, _ = srv.accept()
        while s.recv(64): pass
        s.close()
for p in ports:
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", p)); srv.listen(4096)
    threading.Thread(target=server, args=(srv,), daemon=True).start()
def connect(k, p):
    for _ in range(k):
        socket.create_connection(("127.0.0.1", p)).close()
burst = [threading.Thread(target=connect, args=(n // 4, p)) for p in ports]
[t.start() for t in burst]; [t.join() for t in burst]
print("burst done", flush=True)
i = 0
while True:
    t0 = time.monotonic()
    connect(n // 60, ports[i % 4]); i += 1
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
PY
GEN=$!
until [ "$(ip netns exec $NS awk '/^TCP:/ {print $7}' /proc/net/sockstat)" -ge $((N * 9 / 10)) ]; do sleep 0.5; done

ip netns exec $NS target/release/netpressure_exporter --web.listen-address "127.0.0.1:$PORT" --log.level=warn &
EXP=$!
sleep 10  # warm-up: the first scans
ip netns exec $NS env PYTHONPATH=scripts python3 - "$EXP" "$SECONDS_MEASURED" "$PORT" <<'PY'
import sys, time
from exporter_stats import cpu_seconds, overruns, scrape, tick_quantile, ticks
pid, secs, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def tw():
    return next(l.split()[6] for l in open("/proc/net/sockstat") if l.startswith("TCP:"))
_, v0 = scrape(port)
c0, t0, tw0 = cpu_seconds(pid), time.monotonic(), tw()
durations = {"remotes": [], "processes": []}
while time.monotonic() - t0 < secs:
    time.sleep(5)
    _, v = scrape(port)
    for s in durations:
        durations[s].append(v[f'netpressure_source_duration_seconds{{source="{s}"}}'])
(_, v1), used, wall, tw1 = scrape(port), cpu_seconds(pid) - c0, time.monotonic() - t0, tw()
q = lambda p: tick_quantile(v0, v1, p)
print(f"TIME_WAIT sockets: {tw0} at the start, {tw1} at the end; processes scanned: {v1['netpressure_processes_scanned']:.0f}")
print(f"fast-lane ticks over {wall:.0f} s: {ticks(v0, v1):.0f}; overruns: {overruns(v0, v1):.0f}; 50 % took at most {q(0.5)} s, 99 % {q(0.99)} s, all {q(1.0)} s")
for s, d in durations.items():
    print(f"{s} scan (slow lane): {min(d) * 1000:.1f} to {max(d) * 1000:.1f} ms")
print(f"CPU: {used / wall * 100:.2f} % of one core")
PY
