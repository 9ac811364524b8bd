#!/usr/bin/env bash
# Tail latency of the dispatch policies, in one run: rr vs least-conn vs none.
#
# The workers are testbins' `serial`, which serves one connection at a time
# like a pre-fork synchronous worker (gunicorn sync, PHP-FPM): the kind of app
# for which the policy matters. 5% of requests take 100 ms (GET /slow?ms=100),
# the rest answer at once. The load generator is testbins' `mixload`: closed
# loop, a new connection per request (a policy only decides where a
# connection goes), latency from connect() to the end of the answer. Under rr
# a quick request can land behind a slow one; least-conn sends it to a worker
# holding nothing; under none the workers accept by themselves, so only an
# idle worker (one blocked in accept()) takes a connection.
#
#   bench/policies.sh [WORKERS] [CLIENTS] [SECONDS]   (defaults: 8 workers, 6 clients, 20 s)
#
# Loopback only. Needs curl and python3 (to find a free port).
set -euo pipefail

WORKERS=${1:-8}
CLIENTS=${2:-6}
SECONDS_PER_RUN=${3:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
MANAGER_PID=

cleanup() {
    if [ -n "$MANAGER_PID" ]; then
        kill "$MANAGER_PID" 2>/dev/null || true
        wait "$MANAGER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "bench/policies.sh: $tool is not installed" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until workers answer on port $1.
wait_up() {
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench/policies.sh: nothing answers on port $1" >&2
    exit 1
}

echo "building sockherd, serial and mixload (release)…"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin sockherd
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p sockherd-testbins --bin serial --bin mixload
SOCKHERD=$ROOT/target/release/sockherd
SERIAL=$ROOT/target/release/serial
MIXLOAD=$ROOT/target/release/mixload

echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), Linux $(uname -r)"
echo "$WORKERS serial workers, $CLIENTS clients, ${SECONDS_PER_RUN}s per policy, a new connection per request, 5% GET /slow?ms=100"
echo

ROWS=()
for policy in rr least-conn none; do
    port=$(free_port)
    "$SOCKHERD" serve --log stderr --bus none --listen "127.0.0.1:$port" --policy "$policy" \
        -w "$WORKERS" -- "$SERIAL" 2>/dev/null &
    MANAGER_PID=$!
    wait_up "$port"
    "$MIXLOAD" "127.0.0.1:$port" "$CLIENTS" 2 5 100 >/dev/null # warm-up
    read -r requests secs errors p50 p90 p99 p999 max quick99 \
        < <("$MIXLOAD" "127.0.0.1:$port" "$CLIENTS" "$SECONDS_PER_RUN" 5 100)
    kill "$MANAGER_PID"
    wait "$MANAGER_PID" 2>/dev/null || true
    MANAGER_PID=
    rps=$(awk -v r="$requests" -v s="$secs" 'BEGIN { printf "%.0f", r / s }')
    ROWS+=("| \`$policy\` | $rps | $p50 | $p90 | **$p99** | $p999 | $max | $quick99 | $errors |")
done

echo "| policy | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | quick requests' p99 ms | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
