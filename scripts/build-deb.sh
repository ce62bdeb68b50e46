#!/usr/bin/env bash
# A Debian package of the static binary, built with dpkg-deb (no packaging tool to
# install): /usr/bin/netpressure_exporter, the systemd units of deploy/systemd (the
# service pointed at /usr/bin; the socket for socket activation, not enabled), /etc/default/netpressure_exporter for flags (a conffile), the --help
# text, the README and the licence. The service is enabled and started on install where
# systemd runs, stopped on removal. Prints the package's path.
#
# Usage: scripts/build-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build-static.sh)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name=netpressure-exporter
root=target/debian/${name}_${version}_amd64
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/default" \
  "$root/usr/share/doc/$name"
install -m 0755 "$bin" "$root/usr/bin/netpressure_exporter"
strip --strip-debug "$root/usr/bin/netpressure_exporter"
sed 's|/usr/local/bin/|/usr/bin/|' deploy/systemd/netpressure_exporter.service \
  > "$root/lib/systemd/system/netpressure_exporter.service"
# Shipped, not enabled: the service listens by itself unless the user switches to it.
install -m 0644 deploy/systemd/netpressure_exporter.socket "$root/lib/systemd/system/"
cat > "$root/etc/default/netpressure_exporter" <<'DEFAULT'
# Flags for netpressure_exporter (netpressure_exporter --help, or
# /usr/share/doc/netpressure-exporter/flags.txt), for example:
#   ARGS="--web.listen-address=127.0.0.1:9861 --no-collector.netns"
# TLS and basic auth (exporter-toolkit format; `systemctl reload` re-reads it):
#   ARGS="--web.config.file=/etc/netpressure_exporter/web-config.yml"
# Socket activation (netpressure_exporter.socket; see the comments in that unit):
#   ARGS="--web.systemd-socket"
ARGS=""
DEFAULT
"$bin" --help > "$root/usr/share/doc/$name/flags.txt"
cp README.md "$root/usr/share/doc/$name/README.md"
{ echo "Upstream-Name: netpressure_exporter"; echo "License: Apache-2.0"; echo; cat LICENSE; } \
  > "$root/usr/share/doc/$name/copyright"
echo /etc/default/netpressure_exporter > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: amd64
Maintainer: netpressure_exporter developers <netpressure@users.noreply.github.com>
Section: net
Priority: optional
Installed-Size: $(du -sk "$root" | cut -f1)
Homepage: https://github.com/netpressure/netpressure_exporter
Description: Prometheus exporter for conntrack, socket and file-descriptor pressure
 Samples the conntrack table, listener accept queues and SYN backlogs, TIME_WAIT
 sockets and ephemeral ports per destination, the input backlog and file
 descriptors of a Linux node and of every network namespace on it (each pod's),
 several times a second, and serves them with their peaks to Prometheus.
 Statically linked: no dependency.
CONTROL
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now netpressure_exporter.service || true
fi
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl disable --now netpressure_exporter.service || true
fi
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zxz --build "$root" "target/debian/" >/dev/null
echo "target/debian/${name}_${version}_amd64.deb"
