#!/usr/bin/env python3
"""End to end, with real components: netpressure_exporter, Prometheus (Debian
`prometheus`, scraping every second, loading alerts/netpressure.rules.yml) and
Alertmanager (Debian `prometheus-alertmanager`) whose webhook receiver is a small HTTP
server of this test. All of them run in a monitoring namespace the test makes; a second
namespace gets its conntrack table filled (with nf_conntrack_max lowered, restored at
the end whatever happens) and a third gets a listener that overflows. The test asserts
that NetpressureConntrackTableFull and NetpressureListenQueueOverflow reach the webhook
with their labels and annotations, then sends every query of every dashboard, variables
substituted, to that Prometheus and requires at least one series from each.

With --job, --rules and --dashboards it runs under another scrape job name, with the
rule file and dashboards the monitoring mixin rendered for that job (scripts/test.sh
runs it both ways): the mixin's _config reaches every alert and every dashboard query.

Usage (root, from the repository root, after `cargo build`):
  tests/e2e/alerting.py [--job NAME --rules FILE --dashboards DIR]
"""
import argparse
import ctypes
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPORTER = ROOT / "target" / "debug" / "netpressure_exporter"
TAG = f"np-e2e-{os.getpid()}"
MON, FULL, LISTEN = f"{TAG}-mon", f"{TAG}-full", f"{TAG}-listen"
MAX_PATH = "/proc/sys/net/netfilter/nf_conntrack_max"
CT_MAX = 64
libc = ctypes.CDLL(None, use_errno=True)
results = []


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def in_ns(ns, fn):
    """Runs fn on a thread inside network namespace ns; sockets it opens stay there."""
    box = {}

    def run():
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def http_get(url, timeout=5):
    return in_ns(MON, lambda: urllib.request.urlopen(url, timeout=timeout).read().decode())


def ino(ns):
    return str(os.stat(f"/run/netns/{ns}").st_ino)


def record(name, ok, detail=""):
    results.append((name, ok))
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""), flush=True)


def prom_has(query):
    """Whether Prometheus's instant query returns at least one series."""
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": query})
    body = json.loads(http_get(url))
    return body.get("status") == "success" and len(body["data"]["result"]) > 0


def wait_until(pred, timeout):
    """Polls pred (an exception counts as not yet) until it holds or timeout passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - the component is not there yet
            pass
        time.sleep(0.2)
    return False


def wait_for_alert(received, name, labels, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for payload in list(received):
            for a in payload.get("alerts", []):
                if a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in labels.items()):
                    return a
        time.sleep(0.5)
    return None


def hold_connections(procs, ns, port, backlog, clients):
    """Starts a process in `ns` that listens on 127.0.0.1:port with `backlog`, never
    accepts, and opens `clients` connections to it (each given 0.2 s) and holds them.
    Returns how many connected."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", f"""
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen({backlog})
held = []
for _ in range({clients}):
    c = socket.socket(); c.settimeout(0.2)
    try: c.connect(("127.0.0.1", {port})); held.append(c)
    except OSError: c.close()
print(len(held), flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    return int(p.stdout.readline())


def hold_established(procs, ns, port, clients):
    """Starts a process in `ns` that listens on 127.0.0.1:port, accepts, and holds
    `clients` established connections to it. Returns how many connected."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", f"""
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen(512)
held = []
for _ in range({clients}):
    c = socket.socket(); c.connect(("127.0.0.1", {port})); a, _ = s.accept(); held += [c, a]
print(len(held) // 2, flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    return int(p.stdout.readline())


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="np-e2e-"))
    procs = []
    lock = open("/tmp/netpressure-conntrack-max.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    old_max = open(MAX_PATH).read().strip()
    try:
        for ns in (MON, FULL, LISTEN):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # A narrow port range where the test gives a remote 150 connections below.
        sh("ip", "netns", "exec", LISTEN, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40999")
        sh("ip", "netns", "exec", FULL, "sh", "-c",
           "nft add table inet np && nft add chain inet np out '{ type filter hook output priority 0; }' "
           "&& nft add rule inet np out ct state new,established accept")

        # Webhook receiver: a small HTTP server inside the monitoring namespace.
        received = []

        def serve():
            import http.server

            class Hook(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                    received.append(json.loads(body))
                    self.send_response(200)
                    self.end_headers()

                def log_message(self, *a):
                    pass

            server = http.server.HTTPServer(("127.0.0.1", 9095), Hook)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            return server

        hook = in_ns(MON, serve)

        (tmp / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{ARGS.rules}]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:9093']}}]}}]
scrape_configs:
  - job_name: {ARGS.job}
    honor_labels: true
    static_configs: [{{targets: ['127.0.0.1:9861']}}]
""")
        (tmp / "alertmanager.yml").write_text("""
route: {receiver: hook, group_by: [alertname, instance, netns], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}
receivers: [{name: hook, webhook_configs: [{url: 'http://127.0.0.1:9095/hook', send_resolved: false}]}]
""")
        log = open(tmp / "components.log", "w")
        def start(*cmd):
            p = subprocess.Popen(["ip", "netns", "exec", MON, *map(str, cmd)], stdout=log, stderr=log)
            procs.append(p)
            return p
        start(EXPORTER, "--web.listen-address=127.0.0.1:9861", "--netns.interval=1s",
              "--netns.scan-interval=10s", "--scan.interval=1s")
        start("prometheus-alertmanager", f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am'}",
              "--web.listen-address=127.0.0.1:9093", "--cluster.listen-address=")
        start("prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
              "--web.listen-address=127.0.0.1:9090")

        def ready(url):
            for _ in range(120):
                try:
                    http_get(url, timeout=1)
                    return True
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.5)
            return False
        record("components ready", all(ready(u) for u in (
            "http://127.0.0.1:9861/-/ready", "http://127.0.0.1:9090/-/ready", "http://127.0.0.1:9093/-/ready")))

        # The alerts use increase() of counters, which sees a rise only between two samples
        # Prometheus holds: wait for its own evidence that it has scraped the exporter and
        # stored both namespaces' counters before the test makes them rise. Its first
        # scrape of a new target comes about 5 s after /-/ready (target updates are
        # batched), and the exporter finds the namespaces at its next discovery.
        record("Prometheus has stored both namespaces' counters before they rise", wait_until(
            lambda: prom_has(f'up{{job="{ARGS.job}"}} == 1')
            and prom_has(f'netpressure_conntrack_drop_total{{netns="{ino(FULL)}"}}')
            and prom_has(f'netpressure_tcp_listen_overflows_total{{netns="{ino(LISTEN)}"}}'), 120))

        # Fill one namespace's table: more held connections than the lowered global max.
        with open(MAX_PATH, "w") as f:
            f.write(str(CT_MAX))
        held = hold_connections(procs, FULL, port=8080, backlog=256, clients=80)
        record("conntrack table filled", held == CT_MAX, f"{held} connections held")
        # Overflow a listener in a third namespace: backlog 1, never accepting.
        hold_connections(procs, LISTEN, port=7500, backlog=1, clients=10)
        # And give it a remote worth scanning: the remotes scan runs only while a
        # namespace holds at least 1/8 of its port range in sockets (here 125 of 1,000).
        held = hold_established(procs, LISTEN, port=7600, clients=150)
        record("150 connections to one remote held", held == 150, f"{held} held")

        full = wait_for_alert(received, "NetpressureConntrackTableFull", {"netns": ino(FULL)}, 60)
        record("NetpressureConntrackTableFull reaches Alertmanager's webhook", full is not None)
        if full:
            l, a = full["labels"], full["annotations"]
            record("  with its labels",
                   l.get("severity") == "critical" and l.get("job") == ARGS.job and l.get("instance") == "127.0.0.1:9861",
                   json.dumps(l))
            record("  with its annotations",
                   a.get("summary", "").startswith("A conntrack table is full")
                   and f"network namespace {ino(FULL)}" in a.get("description", "")
                   and f"limit of {CT_MAX}" in a.get("description", "")
                   and a.get("runbook_url", "").endswith("/NetpressureConntrackTableFull.md"),
                   json.dumps(a))

        over = wait_for_alert(received, "NetpressureListenQueueOverflow", {"netns": ino(LISTEN)}, 150)
        record("NetpressureListenQueueOverflow reaches Alertmanager's webhook", over is not None)
        if over:
            a = over["annotations"]
            record("  naming the listener at its limit", "127.0.0.1:7500" in a.get("description", ""), json.dumps(a))
            record("  with severity warning", over["labels"].get("severity") == "warning", json.dumps(over["labels"]))

        # The dashboards' remotes panels need the scan's series stored.
        record("Prometheus has stored the remote's sockets", wait_until(
            lambda: prom_has(f'netpressure_tcp_remote_sockets{{netns="{ino(LISTEN)}",remote_port="7600"}}'), 60))

        # Every dashboard query, variables substituted, returns at least one series.
        subst = {"$job": ARGS.job, "$instance": ".+", "$namespace": ".*", "$pod": ".*", "$__rate_interval": "30s"}
        # The dashboards' job variable (Grafana's label_values(), asked as the PromQL it
        # stands for) offers this job: the mixin's selector reaches the dashboards too.
        for path in sorted(ARGS.dashboards.glob("*.json")):
            job_var = [v for v in json.loads(path.read_text())["templating"]["list"] if v["name"] == "job"][0]
            inner = job_var["query"]["query"].removeprefix("label_values(").removesuffix(", job)")
            body = json.loads(http_get("http://127.0.0.1:9090/api/v1/query?"
                                       + urllib.parse.urlencode({"query": f"count by (job) ({inner})"})))
            jobs = [r["metric"].get("job") for r in body.get("data", {}).get("result", [])]
            record(f"{path.name} / job variable offers {ARGS.job}", jobs == [ARGS.job], f"{jobs} from {inner}")
        for path in sorted(ARGS.dashboards.glob("*.json")):
            for panel in json.loads(path.read_text())["panels"]:
                for t in panel["targets"]:
                    q = t["expr"]
                    for k, v in subst.items():
                        q = q.replace(k, v)
                    body = json.loads(http_get("http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": q})))
                    n = len(body["data"]["result"]) if body.get("status") == "success" else -1
                    record(f"{path.name} / {panel['title']} / {t['refId']} returns series", n > 0, f"{n} series for {q}")
        hook.shutdown()
    finally:
        with open(MAX_PATH, "w") as f:
            f.write(old_max)
        for p in procs:
            p.kill()
            p.wait()
        for ns in (MON, FULL, LISTEN):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if all(ok for _, ok in results):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"component logs kept in {tmp}", flush=True)
    passed = sum(ok for _, ok in results)
    print(f"e2e: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) and results else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default="netpressure", help="Prometheus's scrape job name for the exporter")
    ap.add_argument("--rules", type=lambda p: pathlib.Path(p).resolve(), default=ROOT / "alerts" / "netpressure.rules.yml")
    ap.add_argument("--dashboards", type=lambda p: pathlib.Path(p).resolve(), default=ROOT / "dashboards")
    ARGS = ap.parse_args()
    sys.exit(main())
