#!/usr/bin/env bash
# The socket sources with and without 50,000 TIME_WAIT sockets, in a namespace made for
# the run: the per-sample LISTEN dump must cost the same either way (the kernel skips the
# established hash for it), and the per-remote scan must take no longer than
# `ss -tan state time-wait` on the same sockets.
#
# Usage: sudo scripts/bench-sockets.sh [TIME_WAIT sockets, default 50000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
NS=np-bench-$$
cargo bench --bench sockets --no-run --quiet
cargo build --release --quiet --example remotes_vs_ss
trap 'ip netns del $NS 2>/dev/null || true' EXIT
ip netns add $NS
ip -n $NS link set lo up
# Room for N client ports, no reuse (every close leaves a TIME_WAIT socket), and a
# TIME_WAIT limit above N. TIME_WAIT lasts 60 s: the measurements below fit in it.
ip netns exec $NS sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=0 \
  net.ipv4.tcp_max_tw_buckets=$((N * 2))

run() {
  echo "== $1: $(ip netns exec $NS awk '/^TCP:/ {print $7}' /proc/net/sockstat) TIME_WAIT sockets"
  ip netns exec $NS cargo bench --offline --bench sockets -- --warm-up-time 1 --measurement-time 3 listeners \
    2>&1 | grep -E "^listeners|time:"
  ip netns exec $NS target/release/examples/remotes_vs_ss
}

run "empty namespace"
# Four destination ports, one client thread each: 50,000 sockets in about 6 s.
ip netns exec $NS python3 - "$N" <<'PY'
import socket, sys, threading
n, ports = int(sys.argv[1]), [7000, 7001, 7002, 7003]
per = n // len(ports)
def server(p, srv):
    for _ in range(per):
        s, _ = srv.accept()
        while s.recv(64): pass
        s.close()
def client(p):
    for _ in range(per):
        socket.create_connection(("127.0.0.1", p)).close()
threads = []
for p in ports:
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", p)); srv.listen(4096)
    threads += [threading.Thread(target=server, args=(p, srv)), threading.Thread(target=client, args=(p,))]
[t.start() for t in threads]
[t.join() for t in threads]
PY
run "with TIME_WAIT sockets"
