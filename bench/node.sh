#!/usr/bin/env bash
# Node.js under sockherd vs Node's own cluster primary (round-robin and
# SCHED_NONE) vs PM2 cluster mode: the same app (bench/node/hello.js), the same
# number of workers, wrk with one new connection per request (-H 'Connection:
# close'), on loopback. Prints requests/s, each relative to Node's round-robin
# primary, and what the manager itself costs: its CPU time per 1000 requests
# and its memory (sockherd, Node's primary, PM2's daemon). Throughput on a
# loaded machine is noisy; the manager's CPU per request much less so.
#
#   bench/node.sh [WORKERS] [SECONDS]       (defaults: 2 workers, 10 s)
#
# Needs node and wrk; PM2 is installed with npm into a scratch directory with
# its own PM2_HOME, and skipped if npm cannot fetch it.
set -euo pipefail

WORKERS=${1:-2}
SECONDS_PER_RUN=${2:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
APP=$HERE/node/hello.js
SCRATCH=$(mktemp -d)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -x "$SCRATCH/node_modules/.bin/pm2" ]; then
        PM2_HOME=$SCRATCH/pm2-home "$SCRATCH/node_modules/.bin/pm2" kill >/dev/null 2>&1 || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

for tool in node wrk curl; do
    command -v "$tool" >/dev/null || { echo "bench/node.sh: $tool is not installed" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until the server on port $1 answers.
wait_up() {
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench/node.sh: nothing answers on port $1" >&2
    exit 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs wrk against port $1 while watching manager pid $2; prints requests/s
# and the manager's CPU milliseconds per 1000 requests.
load() {
    local before after out
    before=$(cpu_ticks "$2")
    out=$(wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" -H 'Connection: close' "http://127.0.0.1:$1/")
    after=$(cpu_ticks "$2")
    awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v secs="$SECONDS_PER_RUN" \
        '/^Requests\/sec/ { printf "%s %.1f\n", $2, ticks * 1000 / hz / ($2 * secs / 1000) }' <<<"$out"
}

RESULTS=()
# record NAME "RPS CPU" RSS
record() {
    local rps cpu
    read -r rps cpu <<<"$2"
    RESULTS+=("$1|$rps")
    printf '%-24s %9s req/s   manager: %5s ms CPU per 1000 requests, RSS %6s KiB\n' "$1" "$rps" "$cpu" "$3"
}

echo "building sockherd (release)…"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin sockherd
SOCKHERD=$ROOT/target/release/sockherd
echo "node $(node --version), $WORKERS workers, ${SECONDS_PER_RUN}s per run, wrk -t1 -c64, new connection per request"

# Node's own primary, both scheduling policies.
for policy in rr none; do
    port=$(free_port)
    PORT=$port WORKERS=$WORKERS NODE_CLUSTER_SCHED_POLICY=$policy node "$HERE/node/cluster.js" &
    pid=$!
    PIDS+=("$pid")
    wait_up "$port"
    record "node cluster ($policy)" "$(load "$port" "$pid")" "$(rss_kib "$pid")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done

# sockherd as the primary.
port=$(free_port)
PORT=$port "$SOCKHERD" serve --log stderr --listen "127.0.0.1:$port" --workers "$WORKERS" -- node "$APP" 2>/dev/null &
pid=$!
PIDS+=("$pid")
wait_up "$port"
record "sockherd" "$(load "$port" "$pid")" "$(rss_kib "$pid")"
kill "$pid"; wait "$pid" 2>/dev/null || true

# PM2 cluster mode.
if (cd "$SCRATCH" && npm install --silent --no-audit --no-fund pm2 >/dev/null 2>&1); then
    port=$(free_port)
    export PM2_HOME=$SCRATCH/pm2-home
    pm2=$SCRATCH/node_modules/.bin/pm2
    PORT=$port "$pm2" start "$APP" -i "$WORKERS" --name bench >/dev/null
    wait_up "$port"
    daemon=$(cat "$PM2_HOME/pm2.pid")
    record "pm2 -i $WORKERS" "$(load "$port" "$daemon")" "$(rss_kib "$daemon")"
    "$pm2" kill >/dev/null 2>&1 || true
else
    echo "pm2: skipped (npm could not install it)"
fi

echo
base=$(printf '%s\n' "${RESULTS[@]}" | awk -F'|' '$1 == "node cluster (rr)" {print $2}')
for r in "${RESULTS[@]}"; do
    IFS='|' read -r name rps <<<"$r"
    awk -v n="$name" -v r="$rps" -v b="$base" 'BEGIN { printf "%-24s %.2f× node cluster (rr)\n", n, r / b }'
done
