#!/usr/bin/env bash
# Soak: a million connections through the manager while its workers are
# reloaded every 10 s, watching the manager's open descriptors and memory.
#
#   bench/soak.sh [CONNECTIONS] [WORKERS]     (defaults: 1000000, 4)
#   FLOOD=1 bench/soak.sh ...  worker 0 is `rogue flood` (it also serves, and
#                              sends 4 KB STATUS= messages as fast as the
#                              manager reads them); the others are `hello`
#
# Release build, the `hello` example as workers, wrk on loopback with one new
# connection per request (-H 'Connection: close'), a SIGHUP (rolling reload)
# every 10 s. The manager's fd count (/proc/PID/fd) and RSS are sampled every
# second and printed as a series. The baseline is taken after a 5 s warm-up
# (allocator pools and buffers sized by the first traffic are steady state,
# not a leak); the end sample after the load stops and every reload has
# finished. The warm-up's requests count towards the total and its failures
# too. Fails (exit 1) unless the fd count ends exactly where
# it began, RSS within 1 MiB of it, and wrk saw no socket error and no
# non-2xx answer. Takes minutes. Not part of CI; results go in bench/SOAK.md.
set -euo pipefail

CONNECTIONS=${1:-1000000}
WORKERS=${2:-4}
THREADS=2
CLIENTS=64
RELOAD_EVERY=10
WARMUP=5
SEGMENT=20
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SCRATCH=$(mktemp -d)
MANAGER=
BACKGROUND=()

cleanup() {
    for pid in "${BACKGROUND[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$MANAGER" ]; then kill "$MANAGER" 2>/dev/null || true; fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench/soak.sh: $tool is not installed (scripts/setup.sh)" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fds() { ls "/proc/$1/fd" | wc -l; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
count() { grep -c "$1" "$SCRATCH/manager.log" || true; }

# Totals over every wrk run.
requests=0 connect=0 read_errors=0 write=0 timeout=0 status=0

# One wrk run of $1 seconds, added to the totals. wrk runs for a duration,
# not a number of requests, so the soak is a series of runs.
segment() {
    local r c rd w s t
    wrk -t"$THREADS" -c"$CLIENTS" -d"$1s" -H 'Connection: close' -s "$HERE/soak.lua" \
        "http://127.0.0.1:$port/" >"$SCRATCH/wrk.txt"
    read -r r c rd w s t < <(sed -n 's/^SOAK requests=\([0-9]*\) connect=\([0-9]*\) read=\([0-9]*\) write=\([0-9]*\) status=\([0-9]*\) timeout=\([0-9]*\)$/\1 \2 \3 \4 \5 \6/p' "$SCRATCH/wrk.txt") || true
    if [ -z "${t:-}" ]; then
        echo "bench/soak.sh: no summary from wrk:" >&2
        cat "$SCRATCH/wrk.txt" >&2
        exit 1
    fi
    requests=$((requests + r)) connect=$((connect + c)) read_errors=$((read_errors + rd))
    write=$((write + w)) status=$((status + s)) timeout=$((timeout + t))
}

echo "building sockherd, the hello example and rogue (release)…"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin sockherd --example hello
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p sockherd-testbins --bin rogue
worker=("$ROOT/target/release/examples/hello")
if [ -n "${FLOOD:-}" ]; then
    # Worker 0 floods its channel; its replacements too, after every reload.
    printf '#!/bin/sh\nif [ "$SOCKHERD_WORKER_ID" = 0 ]; then exec "%s" flood; fi\nexec "%s"\n' \
        "$ROOT/target/release/rogue" "$ROOT/target/release/examples/hello" >"$SCRATCH/worker.sh"
    chmod +x "$SCRATCH/worker.sh"
    worker=("$SCRATCH/worker.sh")
    echo "worker 0 floods its channel"
fi
port=$(free_port)
"$ROOT/target/release/sockherd" serve --log stderr --listen "127.0.0.1:$port" --workers "$WORKERS" \
    -- "${worker[@]}" 2>"$SCRATCH/manager.log" &
MANAGER=$!
for _ in $(seq 1 200); do
    [ "$(count 'event="worker-ready"')" -ge "$WORKERS" ] && break
    sleep 0.05
done
curl -fsS "http://127.0.0.1:$port/" >/dev/null

echo "warming up: ${WARMUP}s"
segment "$WARMUP"
sleep 1
start_fds=$(fds "$MANAGER")
start_rss=$(rss_kib "$MANAGER")
echo "baseline: $start_fds fds, $start_rss KiB RSS"

# One sample a second: seconds since the baseline, fds, RSS in KiB.
(
    t0=$(date +%s)
    while kill -0 "$MANAGER" 2>/dev/null; do
        echo "$(( $(date +%s) - t0 )) $(fds "$MANAGER") $(rss_kib "$MANAGER")" >>"$SCRATCH/series.txt"
        sleep 1
    done
) &
BACKGROUND+=($!)

# A rolling reload every 10 s, counted.
(
    while sleep "$RELOAD_EVERY"; do
        kill -HUP "$MANAGER" 2>/dev/null || exit 0
        echo hup >>"$SCRATCH/hups.txt"
    done
) &
reloader=$!
BACKGROUND+=("$reloader")

echo "soaking: $CONNECTIONS connections, $WORKERS workers, wrk -t$THREADS -c$CLIENTS, a reload every ${RELOAD_EVERY}s"
began=$(date +%s)
while [ "$requests" -lt "$CONNECTIONS" ]; do
    segment "$SEGMENT"
    echo "  $requests requests so far; socket errors: $((connect + read_errors + write + timeout)); non-2xx: $status"
done
took=$(( $(date +%s) - began ))
kill "$reloader" 2>/dev/null || true
wait "$reloader" 2>/dev/null || true

# Let the last reload finish, then settle. A SIGHUP that arrives while a
# reload is under way is refused by the manager, so reloads started are
# what to wait for.
hups=$(wc -l <"$SCRATCH/hups.txt" 2>/dev/null || echo 0)
for _ in $(seq 1 600); do
    [ "$(count 'event="reload-finished"')" -ge "$(count 'event="reload-started"')" ] && break
    sleep 0.1
done
reloads=$(count 'event="reload-started"')
sleep 2
end_fds=$(fds "$MANAGER")
end_rss=$(rss_kib "$MANAGER")

echo
echo "series (seconds, fds, RSS KiB):"
cat "$SCRATCH/series.txt"
echo
reloads_ok=$(grep 'event="reload-finished"' "$SCRATCH/manager.log" | grep -c 'ok=true' || true)
errors=$((connect + read_errors + write + timeout))
echo "requests: $requests in ${took}s; socket errors: $errors (connect $connect, read $read_errors, write $write, timeout $timeout); non-2xx: $status"
echo "reloads: $hups SIGHUPs sent, $reloads started, $reloads_ok finished ok"
echo "manager fds: $start_fds -> $end_fds; RSS: $start_rss KiB -> $end_rss KiB ($((end_rss - start_rss)) KiB)"
if [ -n "${FLOOD:-}" ]; then
    echo "flooding: worker 0 was read no faster than its budget $(count 'event="worker-flooding"') times (one log line per flood)"
fi

failed=0
[ "$requests" -ge "$CONNECTIONS" ] || { echo "FAIL: fewer than $CONNECTIONS requests"; failed=1; }
[ "$errors" -eq 0 ] && [ "$status" -eq 0 ] || { echo "FAIL: failed requests"; failed=1; }
[ "$reloads" -gt 0 ] && [ "$reloads_ok" -eq "$reloads" ] || { echo "FAIL: not every reload finished ok"; failed=1; }
[ "$end_fds" -eq "$start_fds" ] || { echo "FAIL: the manager's fd count moved"; failed=1; }
moved=$((end_rss - start_rss))
[ "${moved#-}" -le 1024 ] || { echo "FAIL: the manager's RSS moved by more than 1 MiB"; failed=1; }
if ! kill -0 "$MANAGER" 2>/dev/null; then echo "FAIL: the manager died"; failed=1; fi
[ "$failed" -eq 0 ] && echo "PASS"
exit "$failed"
