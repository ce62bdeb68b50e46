"""What the benchmark scripts read of a running exporter: its CPU time and RSS from
/proc, its series from a scrape, and the fast lane's tick durations from the
netpressure_sample_duration_seconds histogram between two scrapes. Imported by
scripts/bench-netns.sh and scripts/bench-cadence.sh (PYTHONPATH=scripts)."""
import os
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User plus system CPU time of the process, seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ


def rss_bytes(pid):
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")) * 1024


def scrape(port):
    """The exposition and its series, as {"name{labels}": value}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            values[k] = float(v)
    return body, values


def ticks(v0, v1):
    """Fast-lane ticks between two scrapes' values."""
    return v1["netpressure_sample_duration_seconds_count"] - v0["netpressure_sample_duration_seconds_count"]


def tick_quantile(v0, v1, p):
    """The smallest bucket bound (a string, as served) that at least a share p of the
    ticks between two scrapes stayed under."""
    n = ticks(v0, v1)
    prefix = "netpressure_sample_duration_seconds_bucket"
    for key in (k for k in v1 if k.startswith(prefix)):
        if v1[key] - v0.get(key, 0) >= p * n:
            return key.split('"')[1]
    return "+Inf"


def overruns(v0, v1):
    return v1["netpressure_sampler_overruns_total"] - v0["netpressure_sampler_overruns_total"]
