#!/usr/bin/env bash
# System tools the test suite needs beyond Python packages (installed by pip):
#   docker-compose  validates compose.yaml (no Docker engine is needed for that)
#   chromium        runs the JavaScript SDK's browser tests (headless, DevTools protocol)
# Installs missing ones with apt-get (CI runs as root on Debian).
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: please install: ${missing[*]}" >&2
    exit 1
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
echo "install-test-deps: installing ${missing[*]}" >&2
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
