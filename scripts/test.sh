#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, the Rust unit and
# integration tests (real sockherd, real workers, real dbus-daemon, real node),
# then the end-to-end suite inside a real systemd (tests/e2e/run.sh), and the
# Debian package installed, upgraded and removed in a clean container
# (tests/e2e/package.sh).
# Run scripts/setup.sh once first (as root) to install what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets --quiet
echo "== cargo test"
cargo test --workspace 2>&1 | tee "$log/cargo"
echo "== end-to-end in a real systemd"
tests/e2e/run.sh 2>&1 | tee "$log/e2e"
echo "== the Debian package in a clean container"
tests/e2e/package.sh 2>&1 | tee "$log/package"

# One closing line for the whole run.
awk '
    /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
    /^[0-9]+ passed, [0-9]+ failed/ { p += $1; f += $3 }
    END { printf "%d passed, %d failed\n", p, f }
' "$log/cargo" "$log/e2e" "$log/package"
