#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (run as root):
# - systemd-container + mmdebstrap: the end-to-end suite boots a real systemd
#   in a container (systemd-container pinned to the installed systemd version,
#   so installing it does not upgrade the host's systemd);
# - dbus, curl, python3, openssl, nodejs: real peers the tests talk to;
# - npm, and the npm packages the Node.js fixtures use
#   (tests/fixtures/node/package-lock.json);
# - tmux: the terminal `sockherd monit` is tested in;
# - wrk: the benchmarks' load generator; valgrind and strace: what
#   bench/dispatch-cost.sh counts with.
# Safe to run again: it installs only what is missing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/setup.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in mmdebstrap dbus curl python3 openssl wrk valgrind strace procps iproute2 tmux; do
    have "$pkg" || need+=("$pkg")
done
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
systemd_version=$(dpkg-query -W -f='${Version}' systemd)
have systemd-container || need+=("systemd-container=$systemd_version")

if [ "${#need[@]}" -eq 0 ]; then
    echo "setup: every package is installed"
else
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if ! apt-get install -y -qq --no-install-recommends "${need[@]}"; then
        # The pinned version may have left the mirror; take the current one.
        apt-get install -y -qq --no-install-recommends "${need[@]/systemd-container=*/systemd-container}"
    fi
fi

fixtures="$(dirname "$0")/../tests/fixtures/node"
if [ -d "$fixtures/node_modules/@godaddy/terminus" ]; then
    echo "setup: the Node.js fixtures' npm packages are installed"
else
    echo "setup: installing the Node.js fixtures' npm packages"
    npm ci --prefix "$fixtures" --no-audit --no-fund --loglevel=error
fi
