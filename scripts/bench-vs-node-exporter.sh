#!/usr/bin/env bash
# Side-by-side: this exporter and Debian's prometheus-node-exporter (with the collectors
# that cover the same ground), in one run on this machine. For each: CPU time per scrape
# (from /proc/PID/stat, over N scrapes with gzip, as Prometheus asks), client-side scrape
# latency (median and p99), and RSS after the run. Our exporter also samples in the
# background at --sample.interval; its idle CPU rate is measured first and reported, and
# its CPU per scrape is given both with and without that background share.
#
# Then what users compare DaemonSets by: total CPU (utime+stime) of each over WINDOW
# seconds (120) while Prometheus-like scrapes come every EVERY seconds (15), plain and then
# gzip, both exporters in the same window; the sampling our exporter does between scrapes
# is in that total. In the same window runs examples/wake_floor: a thread that only wakes
# on the sampler's clock (every 250 ms) and sleeps again, the floor under any sampler at
# that interval on this machine.
#
# Usage: scripts/bench-vs-node-exporter.sh [SCRAPES]   (as root; builds the static binary)
#        WINDOW=120 EVERY=15 IDLE_SECONDS=30 are the defaults; WINDOW=0 skips the windows.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
IDLE_SECONDS=${IDLE_SECONDS:-30}
OURS_PORT=19861
NODE_PORT=19100

command -v prometheus-node-exporter >/dev/null || { echo "apt-get install prometheus-node-exporter" >&2; exit 1; }
# The binary users run (the image and the .deb carry it): the static build.
BIN=$(scripts/build-static.sh)
cargo build --release --quiet --example wake_floor

"$BIN" --web.listen-address "127.0.0.1:$OURS_PORT" --log.level=warn &
OURS=$!
prometheus-node-exporter --web.listen-address="127.0.0.1:$NODE_PORT" --log.level=warn \
  --collector.disable-defaults --collector.conntrack --collector.netstat --collector.sockstat \
  --collector.filefd --collector.softnet --collector.tcpstat &
NODE=$!
target/release/examples/wake_floor 250 &
FLOOR=$!
trap 'kill $OURS $NODE $FLOOR 2>/dev/null || true' EXIT
sleep 2

python3 - "$N" "$IDLE_SECONDS" "$OURS" "$OURS_PORT" "$NODE" "$NODE_PORT" "${WINDOW:-120}" "${EVERY:-15}" "$FLOOR" <<'PY'
import http.client, os, statistics, sys, time
floor_pid = int(sys.argv[9])

n, idle = int(sys.argv[1]), float(sys.argv[2])
window, every = float(sys.argv[7]), float(sys.argv[8])
targets = [("netpressure_exporter", int(sys.argv[3]), int(sys.argv[4])),
           ("prometheus-node-exporter", int(sys.argv[5]), int(sys.argv[6]))]
hz = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

rows = []
idle_rate_of = {}
for name, pid, port in targets:
    c0, t0 = cpu(pid), time.monotonic()
    time.sleep(idle)
    idle_rate = (cpu(pid) - c0) / (time.monotonic() - t0)
    idle_rate_of[pid] = idle_rate
    conn = http.client.HTTPConnection("127.0.0.1", port)
    lat = []
    c0, t0 = cpu(pid), time.monotonic()
    for _ in range(n):
        s = time.perf_counter()
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
        lat.append(time.perf_counter() - s)
    wall = time.monotonic() - t0
    used = cpu(pid) - c0
    lat.sort()
    rows.append((name, used / n, max(used - idle_rate * wall, 0) / n, idle_rate,
                 statistics.median(lat), lat[int(len(lat) * 0.99)], rss(pid)))

print(f"{n} gzip scrapes each, one after another, keep-alive, on {os.cpu_count()} CPUs")
print(f"{'exporter':26} {'CPU/scrape':>11} {'minus idle':>11} {'idle CPU':>9} {'p50 lat':>9} {'p99 lat':>9} {'RSS':>9}")
for name, per, net, idle_rate, p50, p99, r in rows:
    print(f"{name:26} {per*1e3:8.3f} ms {net*1e3:8.3f} ms {idle_rate*100:7.2f} % {p50*1e3:6.3f} ms {p99*1e3:6.3f} ms {r/2**20:6.1f} MiB")
ours, node = rows[0], rows[1]
print(f"ratios (node_exporter / ours): CPU per scrape {node[1]/max(ours[1],1e-9):.1f}x, RSS {node[6]/ours[6]:.1f}x")

# Our exporter encodes a sample once for every scrape of it: most of the scrapes above
# reused a body. A scrape of a sample nobody has scraped yet costs the encode (and the
# gzip): one every 300 ms, each after a new 250 ms sample, idle share taken out.
_, pid, port = targets[0]
fresh_n = max(20, n // 10)
conn = http.client.HTTPConnection("127.0.0.1", port)
c0, t0 = cpu(pid), time.monotonic()
for _ in range(fresh_n):
    time.sleep(0.3)
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    r = conn.getresponse(); r.read()
wall = time.monotonic() - t0
fresh = max(cpu(pid) - c0 - idle_rate_of[pid] * wall, 0) / fresh_n
print(f"netpressure_exporter, the first scrape of each new sample: {fresh*1e3:.3f} ms of CPU "
      f"(minus idle; {fresh_n} scrapes), against node_exporter's {node[2]*1e3:.3f} ms: {node[2]/max(fresh,1e-9):.1f}x")

def scrape(port, gzip):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gzip else {})
    r = conn.getresponse(); body = r.read(); conn.close()
    assert r.status == 200, r.status
    return len(body)

if window > 0:
    print(f"\ntotal CPU over {window:.0f} s, scraped every {every:.0f} s (both exporters in the same window)")
    print(f"{'exporter':26} {'encoding':>8} {'CPU, % of a core':>17} {'CPU seconds':>12} {'body':>10} {'RSS':>9}")
    for gzip in (False, True):
        c0 = {pid: cpu(pid) for _, pid, _ in targets}
        f0 = cpu(floor_pid)
        t0 = time.monotonic()
        sizes = {}
        k = 0
        while True:
            at = t0 + k * every
            if at >= t0 + window:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            for name, pid, port in targets:
                sizes[name] = scrape(port, gzip)
            k += 1
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        wall = time.monotonic() - t0
        used = {}
        for name, pid, port in targets:
            used[name] = cpu(pid) - c0[pid]
            print(f"{name:26} {'gzip' if gzip else 'plain':>8} {used[name]/wall*100:15.3f} % {used[name]:10.2f} s {sizes[name]/1024:7.1f} KiB {rss(pid)/2**20:6.1f} MiB")
        floor = cpu(floor_pid) - f0
        print(f"{'wake floor (250 ms clock)':26} {'':>8} {floor/wall*100:15.3f} % {floor:10.2f} s")
        print(f"{'':26} {'':8} node_exporter / ours: {used[targets[1][0]]/max(used[targets[0][0]],1e-9):.2f}x")
PY
