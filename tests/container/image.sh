#!/usr/bin/env bash
# The container image users get, built and run here as the DaemonSet runs it.
#
# Builds the static binary (scripts/build-static.sh) into deploy/Containerfile's empty
# image with podman, then runs it as deploy/kubernetes/daemonset.yaml does: host network
# and PID namespace, every capability dropped but NET_ADMIN, SYS_ADMIN and SYS_PTRACE, a
# read-only root, the host's /proc, /sys and pod log directory mounted read-only under
# /host, and the DaemonSet's own args (but the listen address: loopback and a test port).
# Checks: the binary is static, the image carries its OCI labels, every source is up,
# another namespace (one this test makes) is sampled, conntrack comes over ctnetlink;
# and without NET_ADMIN the same container falls back to procfs and says so.
#
# podman here needs a test-only configuration (rootful podman's default ulimits fail
# with EPERM in this sandbox, and crun rejects its hybrid cgroup layout): CONTAINERS_CONF
# points at a file this script writes; /etc is left alone.
# Usage (root, from the repository root): tests/container/image.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=localhost/netpressure-exporter:test-$$
NS=np-image-$$
PORT=19871
work=$(mktemp -d)
export CONTAINERS_CONF=$work/containers.conf
cat > "$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
cleanup() {
  for c in "np-img-$$" "np-img-noadmin-$$"; do podman rm -f --ignore "$c" >/dev/null 2>&1 || true; done
  podman rmi -f "$TAG" >/dev/null 2>&1 || true
  kill "${HOLDER:-}" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
check() { # name, command...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "PASS $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}

bin=$(scripts/build-static.sh)
check "the release binary is static" sh -c "ldd '$bin' 2>&1 | grep -Eq 'not a dynamic executable|statically linked'"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
podman build -q -f deploy/Containerfile --build-arg BINARY="$bin" --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" -t "$TAG" . >/dev/null
label() { podman image inspect "$TAG" --format "{{ index .Labels \"org.opencontainers.image.$1\" }}"; }
check "image labelled with version, revision and source" \
  test "$(label version)" = "$version" -a "$(label revision)" = "$revision" -a -n "$(label source)"

# A pod-like namespace with a process in it, for the exporter to find through /host/proc.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" sleep 300 &
HOLDER=$!
mkdir -p "$work/pods"

# The DaemonSet's args, with the test's listen address.
mapfile -t args < <(awk '/^ *args:/ {on=1; next} on && /^ *- --/ {sub(/^ *- /, ""); print; next} on {exit}' \
  deploy/kubernetes/daemonset.yaml | grep -v '^--web.listen-address')
[ ${#args[@]} -ge 3 ] || { echo "cannot read the DaemonSet's args" >&2; exit 1; }
run() { # name, capabilities to add
  podman run -d --name "$1" --network host --pid host --cap-drop ALL --cap-add "$2" --read-only \
    -v /proc:/host/proc:ro -v /sys:/host/sys:ro -v "$work/pods:/host/var/log/pods:ro" \
    "$TAG" "--web.listen-address=127.0.0.1:$PORT" "${args[@]}" >/dev/null
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  podman logs "$1" >&2
  return 1
}
metric() { grep -E "^$1 " "$2" | awk '{print $2}'; }

run "np-img-$$" NET_ADMIN,SYS_ADMIN,SYS_PTRACE
inode=$(stat -L -c %i "/run/netns/$NS")
m=$work/metrics
# Wait for the test's namespace to be sampled (the first discovery has run by ready).
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/metrics" > "$m"
  grep -q "netpressure_tcp_sockets_in_use{netns=\"$inode\"}" "$m" && break
  sleep 0.1
done
check "promtool check metrics passes on the container's scrape" sh -c "promtool check metrics < '$m'"
check "every source up" test -z "$(grep -E '^netpressure_source_up\{' "$m" | awk '$2 != 1')"
check "conntrack over ctnetlink" test "$(metric 'netpressure_source_up\{source="conntrack_netlink"\}' "$m")" = 1
check "other namespaces sampled (the test's among them)" grep -q "netpressure_tcp_sockets_in_use{netns=\"$inode\"}" "$m"
check "the node's namespace is host" grep -q 'netpressure_tcp_sockets_in_use{netns="host"}' "$m"
# The subcommands as the runbooks run them in the exporter's pod.
check "conntrack-top in the container, the test's namespace by inode" sh -c \
  "podman exec 'np-img-$$' /netpressure_exporter conntrack-top --netns $inode --path.procfs=/host/proc \
     --path.pod-logs=/host/var/log/pods | grep -q '^conntrack table of netns $inode:'"
check "doctor in the container, from the exporter beside it" sh -c \
  "podman exec 'np-img-$$' /netpressure_exporter doctor --from http://127.0.0.1:$PORT/metrics --duration 1s \
     | grep -q '^netpressure doctor: read http'"
podman rm -f --ignore "np-img-$$" >/dev/null

run "np-img-noadmin-$$" SYS_ADMIN,SYS_PTRACE
curl -fs "http://127.0.0.1:$PORT/metrics" > "$m"
check "without NET_ADMIN: conntrack from procfs" \
  test "$(metric 'netpressure_source_up\{source="conntrack"\}' "$m")" = 1 \
  -a "$(metric 'netpressure_source_up\{source="conntrack_netlink"\}' "$m")" = 0
check "without NET_ADMIN: says so" sh -c "podman logs 'np-img-noadmin-$$' 2>&1 | grep -q 'reading procfs instead of ctnetlink'"

echo "container: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
