#!/usr/bin/env bash
# Installs what the tests need (Debian packages; kubernetes-validate from PyPI into
# target/manifest-venv) and runs the whole test suite: unit tests, parser tests on
# captured kernel data, live-kernel tests that create network namespaces, fill conntrack
# tables and lower nf_conntrack_max (restored after), and the Kubernetes manifests.
# Needs root on Linux with conntrack and nftables. Usage, as root: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root: the tests create network namespaces and change nf_conntrack_max" >&2
  exit 1
fi

# nftables: the ct state rule that makes conntrack track a test namespace; conntrack: -F;
# prometheus: promtool and the server for the end-to-end test; prometheus-alertmanager:
# amtool and Alertmanager; libcap2-bin: capsh, to run the exporter without CAP_NET_ADMIN;
# qemu-system-x86, busybox-static, cpio, xz-utils: booting other kernels (tests/vm); podman,
# runc: building and running the container image (tests/container); curl: scraping it;
# wrk: load on the HTTP endpoint (tests/web.rs); openssl, apache2-utils (htpasswd):
# certificates and bcrypt hashes for --web.config.file (tests/tls.rs); clang, llvm (llvm-strip),
# libbpf-dev (bpf_helpers.h), linux-libc-dev: rebuilding the BPF object to compare it
# (tests/bpf_object.rs); bpftool: the kernel's own view of programs and BTF (tests/drops.rs);
# systemd: systemd-socket-activate, for --web.systemd-socket (tests/listen.rs, the .deb);
# jsonnet: rendering the monitoring mixin (mixin/) into the rule files.
packages=(nftables conntrack prometheus prometheus-alertmanager libcap2-bin iproute2 qemu-system-x86 busybox-static cpio xz-utils util-linux
          podman runc curl wrk openssl apache2-utils
          clang llvm libbpf-dev linux-libc-dev bpftool systemd jsonnet)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# kubectl renders the kustomizations (the machine image has it; Debian's package otherwise).
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --locked --all-targets

# Alert rules: the committed files are the mixin's output, promtool check and unit tests.
jsonnetfmt --test mixin/*.libsonnet
python3 mixin/render.py --check
promtool check rules alerts/netpressure.rules.yml
# The mixin rendered with another _config (alerts/tests/second-config.test.yml says which).
mkdir -p target
second='{"selector": "job=\"np-other\"", "conntrackFillingWarning": 0.9, "conntrackFillingWarningFor": "2m"}'
python3 mixin/render.py --out target/second-config --config "$second"
promtool check rules target/second-config/rules.yml
promtool test rules alerts/tests/*.test.yml

# Alertmanager example, dashboards (conventions), runbooks.
amtool check-config deploy/alertmanager/alertmanager.yml >/dev/null
python3 scripts/check-dashboards.py

# The exporter on Linux 5.10 (Debian bullseye's kernel under qemu), with and without
# conntrack loaded.
tests/vm/old-kernel.sh

# A node shaped like production (250 pods, 50 bind-mounted namespaces, 1,500 mounts,
# 5,000 processes, 100,000 conntrack entries, ...), every family compared with the
# kernel's own tools: on this machine's kernel, and on bookworm's 6.1 booted with 64 CPUs
# online of 128 possible. `tests/vm/node-shape.sh all` adds 5.10 and 6.12.
cargo build --locked --examples # `cargo test` builds examples as tests only
tests/vm/node-shape.sh host
tests/vm/node-shape.sh 6.1

# End to end: exporter, Prometheus and Alertmanager; alerts reach a webhook, every
# dashboard query returns series.
python3 tests/e2e/alerting.py
# The same under the mixin's second _config: another job name, its rules and dashboards.
python3 tests/e2e/alerting.py --job np-other --rules target/second-config/rules.yml \
  --dashboards target/second-config

# The artifacts users install: the static binary in the container image, run as the
# DaemonSet runs it; the Debian package, installed, run as its unit runs it, purged.
tests/container/image.sh
tests/package/deb.sh

# Kubernetes manifests, offline against the schemas kubernetes-validate ships (PyPI).
venv=target/manifest-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import kubernetes_validate, yaml" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
"$venv/bin/python" scripts/validate-manifests.py

# `doctor --format json` against its schema (jsonschema comes with kubernetes-validate).
"$venv/bin/python" scripts/check-doctor-json.py
