#!/usr/bin/env python3
"""The cost of a conntrack breakdown against what an operator runs by hand.

For each size (default 100000 and 250000 entries) it fills the table of a throwaway
network namespace with unreplied UDP entries (one datagram per distinct tuple, from 64
source addresses to 16 destinations, their timeout raised so that they last the run),
then measures, 5 times each, median of CPU (user + system of the process and its
children) and wall time:

  ours:  netpressure_exporter conntrack-top --netns NS   (dump, count by state,
         top sources with their owners, top destinations; release build)
  hand:  conntrack -L | awk '{first src=}' | sort | uniq -c | sort -rn | head
         (the top sources alone: one of the three questions conntrack-top answers)

nf_conntrack_max is raised for the run if it is below the size (and restored), under
the lock the tests use. Usage, as root: scripts/bench-breakdown.py [SIZE...]
"""
import ctypes
import fcntl
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTER = os.path.join(ROOT, "target", "release", "netpressure_exporter")
NS = f"npbd{os.getpid()}"
MAX_PATH = "/proc/sys/net/netfilter/nf_conntrack_max"
RUNS = 5
HAND = (
    "conntrack -L 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^src=/) {print $i; break}}' "
    "| sort | uniq -c | sort -rn | head"
)


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def fill(n):
    """n distinct unreplied UDP flows in NS, sent from a thread that entered it."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{NS}", os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0
    try:
        socks = []
        for s in range(64):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((f"127.1.{s}.1", 0))
            socks.append(u)
        sent = 0
        port = 1024
        while sent < n:
            for u in socks:
                for d in range(16):
                    u.sendto(b"x", (f"127.2.0.{d + 1}", port))
                    sent += 1
            port += 1
    finally:
        libc.setns(own, 0x40000000)
        os.close(fd)
        os.close(own)


def measure(cmd):
    """CPU seconds (this child and its descendants) and wall seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{cmd}: {out.stderr}")
    user = after.ru_utime - before.ru_utime
    cpu = user + (after.ru_stime - before.ru_stime)
    return cpu, wall, out.stdout, user


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 250_000]
    sh("cargo", "build", "--release", "--quiet", cwd=ROOT)
    lock = open("/tmp/netpressure-conntrack-max.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    old_max = open(MAX_PATH).read().strip()
    try:
        need = max(sizes) + 10_000
        if int(old_max) < need:
            open(MAX_PATH, "w").write(str(need))
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, nf_conntrack_buckets "
              f"{open('/proc/sys/net/netfilter/nf_conntrack_buckets').read().strip()}")
        print(f"{'entries':>8} | {'ours CPU':>9} {'wall':>8} | {'hand CPU':>9} {'wall':>8} | CPU ratio")
        for n in sizes:
            sh("ip", "netns", "add", NS)
            try:
                sh("ip", "-n", NS, "link", "set", "lo", "up")
                sh("ip", "netns", "exec", NS, "sh", "-c",
                   "nft add table inet np && nft add chain inet np out '{ type filter hook output priority raw; }' "
                   "&& nft add rule inet np out ct state new counter "
                   "&& sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600")
                fill(n)
                count = int(sh("ip", "netns", "exec", NS, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)
                ours = [measure(f"{EXPORTER} conntrack-top --netns {NS}") for _ in range(RUNS)]
                script = f"/tmp/{NS}.sh"
                open(script, "w").write(HAND + "\n")
                hand = [measure(f"ip netns exec {NS} sh {script}") for _ in range(RUNS)]
                os.unlink(script)
                top = hand[-1][2].split()
                assert len(top) >= 2 and int(top[0]) > 0, f"the hand pipeline printed {hand[-1][2]!r}"
                # The exporter's own account of its dump (wall time of dump + counting).
                dumped = ours[-1][2].splitlines()[0]
                oc, ow = statistics.median(r[0] for r in ours), statistics.median(r[1] for r in ours)
                hc, hw = statistics.median(r[0] for r in hand), statistics.median(r[1] for r in hand)
                print(f"{count:>8} | {oc * 1000:>7.0f}ms {ow * 1000:>6.0f}ms | {hc * 1000:>7.0f}ms {hw * 1000:>6.0f}ms | {hc / oc:>6.1f}x")
                ou, hu = statistics.median(r[3] for r in ours), statistics.median(r[3] for r in hand)
                print(f"           user CPU: ours {ou * 1000:.0f}ms, hand {hu * 1000:.0f}ms (the rest is the kernel's)")
                print(f"           conntrack-top: {dumped}")
            finally:
                subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    finally:
        open(MAX_PATH, "w").write(old_max)
        lock.close()


if __name__ == "__main__":
    main()
