#!/usr/bin/env bash
# The Debian package, installed and run as its unit runs it.
#
# Builds it (scripts/build-deb.sh), installs it with apt, and runs the unit's ExecStart
# with the unit's own capabilities: under systemd where systemd is PID 1; elsewhere (this
# machine kind runs no init system) through setpriv as an unprivileged user with the
# unit's AmbientCapabilities, as DynamicUser= would. Scrapes it, then purges the package
# and checks that nothing is left.
# Usage (root, from the repository root): tests/package/deb.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=19872
UNIT=/lib/systemd/system/netpressure_exporter.service
passed=0 failed=0
check() { # name, command...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "PASS $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}
cleanup() {
  kill "${EXP:-}" 2>/dev/null || true
  if dpkg-query -W -f='${Status}' netpressure-exporter 2>/dev/null | grep -q "ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq netpressure-exporter >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
# The unit's AmbientCapabilities, as setpriv takes them: +net_admin,+sys_admin,...
unit_caps() { sed -n 's/^AmbientCapabilities=//p' "$UNIT" | tr ' ' '\n' | sed 's/^CAP_//; s/.*/+\L&/' | paste -sd,; }
# Waits until the exporter on $PORT is ready, then writes one scrape to the file $1.
scrape_when_ready() {
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$PORT/metrics" > "$1" || true
}

deb=$(scripts/build-deb.sh)
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
check "installs the binary, the unit and the defaults file" \
  test -x /usr/bin/netpressure_exporter -a -f "$UNIT" -a -f /etc/default/netpressure_exporter
check "the binary runs" sh -c "/usr/bin/netpressure_exporter --version | grep -q '$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)'"
check "the unit starts the packaged binary with the defaults file's flags" \
  sh -c "grep -q '^ExecStart=/usr/bin/netpressure_exporter \\\$ARGS' $UNIT && grep -q '^EnvironmentFile=-/etc/default/netpressure_exporter' $UNIT"

# The flags the defaults file gives, plus a test port.
echo 'ARGS="--web.listen-address=127.0.0.1:'$PORT'"' > /etc/default/netpressure_exporter
if [ "$(ps -p 1 -o comm=)" = systemd ]; then
  systemctl daemon-reload
  systemctl restart netpressure_exporter.service
else
  caps=$(unit_caps)
  # shellcheck disable=SC1091
  . /etc/default/netpressure_exporter
  # shellcheck disable=SC2086
  setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps="$caps" --ambient-caps="$caps" \
    /usr/bin/netpressure_exporter $ARGS 2>/dev/null &
  EXP=$!
fi
m=$(mktemp)
scrape_when_ready "$m"
check "serves as an unprivileged user with the unit's capabilities" \
  grep -q '^netpressure_source_up{source="conntrack_netlink"} 1' "$m"
check "samples the node's namespace as host" grep -q '^netpressure_tcp_sockets_in_use{netns="host"}' "$m"
check "counts drops by reason with the unit's capabilities (the BPF object is in the binary)" \
  grep -q '^netpressure_source_up{source="drop_reasons"} 1' "$m"
rm -f "$m"
if [ -n "${EXP:-}" ]; then kill "$EXP"; wait "$EXP" 2>/dev/null || true; EXP=; else systemctl stop netpressure_exporter.service; fi

# Socket activation as the packaged .socket unit does it: the socket held by the
# activator (systemd-socket-activate stands in for systemd here), the exporter started
# at the first connection with --web.systemd-socket, as the unit's user with its
# capabilities.
SOCKET=/lib/systemd/system/netpressure_exporter.socket
check "ships the socket unit" sh -c "grep -q '^ListenStream=9861' $SOCKET && grep -q '^WantedBy=sockets.target' $SOCKET"
caps=$(unit_caps)
systemd-socket-activate -l "127.0.0.1:$PORT" \
  setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps="$caps" --ambient-caps="$caps" \
  /usr/bin/netpressure_exporter --web.systemd-socket 2>/dev/null &
EXP=$!
m=$(mktemp)
scrape_when_ready "$m"
check "serves on the socket systemd passes (--web.systemd-socket)" grep -q '^netpressure_tcp_sockets_in_use{netns="host"}' "$m"
rm -f "$m"
kill "$EXP" 2>/dev/null || true; wait "$EXP" 2>/dev/null || true; EXP=

DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq netpressure-exporter >/dev/null
check "purge leaves nothing behind" \
  test ! -e /usr/bin/netpressure_exporter -a ! -e "$UNIT" -a ! -e "$SOCKET" -a ! -e /etc/default/netpressure_exporter -a ! -e /usr/share/doc/netpressure-exporter
echo "package: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
