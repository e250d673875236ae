#!/usr/bin/env bash
# System tools the test suite needs beyond Python packages (installed by pip):
#   docker-compose  validates compose.yaml (no Docker engine is needed for that)
#   chromium        runs the JavaScript SDK's browser tests (headless, DevTools protocol)
#   prometheus      promtool checks and unit-tests the alert rules; prometheus itself runs
#                   the dashboard's queries against a local fleet (deploy/monitoring)
#   iptables        drops a gateway's packets on loopback: a host that vanished
#                   (tests/integration/test_vanished_gateway.py)
# Installs missing ones with apt-get (CI runs as root on Debian). The prometheus package
# would start (and enable) its own service: the tests start their own Prometheus, so the
# package's service is kept from starting and, where systemd runs, disabled.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: please install: ${missing[*]}" >&2
    exit 1
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
# policy-rc.d exit 101: "do not start services" for the packages installed now (Debian's
# invoke-rc.d and deb-systemd-invoke honour it); ours is removed again afterwards
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    own_policy=true
fi
cleanup() { if [ "$own_policy" = true ]; then "${sudo_cmd[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
echo "install-test-deps: installing ${missing[*]}" >&2
"${sudo_cmd[@]}" apt-get update -qq
others=()
for package in "${missing[@]}"; do
    if [ "$package" != prometheus ]; then others+=("$package"); fi
done
if [ "${#others[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${others[@]}" >/dev/null
fi
if [ "${#others[@]}" -lt "${#missing[@]}" ]; then
    # without its recommended node exporter (another service)
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
        --no-install-recommends prometheus >/dev/null
    if [ -d /run/systemd/system ]; then
        "${sudo_cmd[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi
