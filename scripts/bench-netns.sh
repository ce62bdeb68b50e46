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
python3 - "$EXP" "$SECONDS_MEASURED" "$PORT" <<'PY'
import os, sys, time, urllib.request
pid, secs, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
def scrape():
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values = {}
    for l in body.splitlines():
        if l and not l.startswith("#"):
            k, v = l.rsplit(" ", 1)
            values[k] = float(v)
    return body, values
_, v0 = scrape()
c0, t0 = cpu(), time.monotonic()
time.sleep(secs)
used, wall = cpu() - c0, time.monotonic() - t0
body, v1 = scrape()
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
sampled = v1.get("netpressure_netns_sampled", 0)
series = sum(1 for l in body.splitlines() if l and not l.startswith("#"))
print(f"namespaces sampled besides the exporter's own: {sampled:.0f}")
print(f"CPU: {used / wall * 100:.2f} % of one core over {wall:.0f} s; RSS {rss / 1024:.1f} MiB; {series} series, {len(body) / 1024:.0f} KiB a scrape")
rounds = v1.get("netpressure_netns_samples_total", 0) - v0.get("netpressure_netns_samples_total", 0)
if sampled:
    print(f"samples per namespace: {rounds / sampled:.1f} in {wall:.0f} s ({rounds / sampled / wall:.2f} a second)")
ticks = v1["netpressure_sample_duration_seconds_count"] - v0["netpressure_sample_duration_seconds_count"]
def q(p):
    key = lambda le: f'netpressure_sample_duration_seconds_bucket{{le="{le}"}}'
    les = [k.split('"')[1] for k in v1 if k.startswith("netpressure_sample_duration_seconds_bucket")]
    for le in les:
        if v1[key(le)] - v0.get(key(le), 0) >= p * ticks:
            return le
    return "+Inf"
overruns = v1["netpressure_sampler_overruns_total"] - v0["netpressure_sampler_overruns_total"]
print(f"fast-lane ticks: {ticks:.0f}; 50 % took at most {q(0.5)} s, 99 % {q(0.99)} s, all {q(1.0)} s; overruns {overruns:.0f}")
PY
