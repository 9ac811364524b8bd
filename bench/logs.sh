#!/usr/bin/env bash
# bench/logs.sh — what worker logging costs the manager, in one run.
#
# Without systemd (`--log stderr`, stderr to a file: the embedded mode) every
# worker line goes through the manager's log thread. This measures, with 2
# workers of testbins' `chatty`:
#   access   close-mode req/s (wrk, a new connection per request) with a
#            quiet app and with the same app writing one line per request (an
#            access log), and the manager's CPU per connection in both: the
#            difference is the manager's CPU per logged line on top of
#            dispatch, and the req/s ratio is what logging costs serving;
#            also the CPU of the manager's event loop alone (its main
#            thread), which logging must leave as it is;
#   flood    each worker writing 25,000 numbered lines per second for 5 s
#            (50,000 lines/s, FLOOD_RATE per worker): how long until all of
#            them are in the file, how many arrived (all must), and the
#            manager's CPU per line.
# Under systemd the workers write to journal streams of their own and the
# manager is not in their path: 0 CPU per line (tests/e2e/run.sh logs what
# the manager used while 250,000 lines went by).
#
# A benchmark, not a test: it exits 0 whatever the figures, and fails only
# when something cannot be measured (or a line is missing).
#
# Usage:  bench/logs.sh               (10 s per wrk run; ~2 min)
#         QUICK=1 bench/logs.sh       (2 s per run)
# Settings: DURATION=10 WARMUP=3 ROUNDS=1 CONNECTIONS=64 THREADS=1
#   FLOOD_RATE=25000 FLOOD_SECONDS=5 BASE_PORT=18080 OUT=DIR
# Needs: cargo, curl, wrk, python3.

set -euo pipefail

BENCH_NAME=logs.sh
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2}
    WARMUP=${WARMUP:-1}
fi
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
FLOOD_RATE=${FLOOD_RATE:-25000}
FLOOD_SECONDS=${FLOOD_SECONDS:-5}
BASE_PORT=${BASE_PORT:-18080}
WORKERS=2

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_whole DURATION WARMUP ROUNDS CONNECTIONS THREADS FLOOD_RATE FLOOD_SECONDS BASE_PORT
need_tool wrk "on Debian/Ubuntu: apt-get install -y wrk"
need_tool curl "on Debian/Ubuntu: apt-get install -y curl"
need_tool python3 "it listens for sockherd's READY=1"
need_tool cargo "install Rust: https://rustup.rs"

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sockherd-logs.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nproc) CPUs, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== building (release)"
(cd "$BENCH_ROOT" && cargo build --release --quiet -p sockherd --bin sockherd -p sockherd-testbins --bin chatty)
SOCKHERD=$TARGET_DIR/release/sockherd
CHATTY=$TARGET_DIR/release/chatty
for bin in "$SOCKHERD" "$CHATTY"; do
    [[ -x $bin ]] || die "$bin was not built"
done

xfmt() { printf '%.2f×' "$1"; }

# loop_ticks PID — utime + stime of the manager's main thread, the event loop
# that accepts and hands over connections (the log thread is another).
loop_ticks() {
    awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/task/$1/stat"
}

# --- access: a quiet app and an access log, side by side ---

mark=${#PIDS[@]}
next_port port
echo "== access: sockherd, $WORKERS quiet chatty workers, on 127.0.0.1:$port"
start_sockherd quiet "$port" "$WORKERS" "$OUT/quiet.log" -- "$CHATTY"
target access quiet "$port" "$STARTED_PID"
next_port port
echo "== access: sockherd, $WORKERS chatty workers logging every request, on 127.0.0.1:$port"
start_sockherd logging "$port" "$WORKERS" "$OUT/logging.log" -- "$CHATTY" --log-requests
target access logging "$port" "$STARTED_PID"
declare -A LOOP_BEFORE LOOP_US
for name in quiet logging; do
    LOOP_BEFORE[$name]=$(loop_ticks "${TARGET_PID[access/$name]}")
done
measure access close
for name in quiet logging; do
    # The loop's ticks over the warm-up and the runs, per request of both.
    requests=$(($(parse_wrk "$OUT/access/warmup-$name.txt" | cut -d' ' -f4) + REQUESTS[access/$name/close]))
    LOOP_US[$name]=$(awk -v t=$(($(loop_ticks "${TARGET_PID[access/$name]}") - LOOP_BEFORE[$name])) \
        -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
done
logged=$(grep -c ' served request ' "$OUT/logging.log" || true)
stop_since "$mark"

quiet_us=$(cpu_us access quiet close)
logging_us=$(cpu_us access logging close)
per_line=$(awk -v a="$logging_us" -v b="$quiet_us" 'BEGIN {printf "%.1f", a - b}')
r=$(ratio access logging quiet close)

# --- flood: 50,000 numbered lines per second ---

next_port port
echo "== flood: $WORKERS workers writing $FLOOD_RATE lines/s each for $FLOOD_SECONDS s, on 127.0.0.1:$port"
mark=${#PIDS[@]}
start_sockherd flood "$port" "$WORKERS" "$OUT/flood.log" -- "$CHATTY" --lines "$FLOOD_RATE" "$FLOOD_SECONDS"
manager=$STARTED_PID
t0=$EPOCHREALTIME
ticks0=$(cpu_ticks "$manager")
total=$((FLOOD_RATE * FLOOD_SECONDS))
deadline=$((SECONDS + FLOOD_SECONDS + 120))
until [[ $(grep -c " done $total\$" "$OUT/flood.log" || true) == "$WORKERS" ]]; do
    ((SECONDS < deadline)) || die "the flood's lines did not all arrive within $((FLOOD_SECONDS + 120)) s; see $OUT/flood.log"
    sleep 0.1
done
ticks1=$(cpu_ticks "$manager")
t1=$EPOCHREALTIME
stop_since "$mark"
arrived=$(grep -c '\]: worker [0-9]* line [0-9]*$' "$OUT/flood.log" || true)
wanted=$((total * WORKERS))
flood_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
flood_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="$arrived" 'BEGIN {printf "%.2f", n ? t / hz * 1e6 / n : 0}')
flood_cpu=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')

{
    echo "what|result"
    echo "close mode, quiet app|$(printf '%.0f' "$(result access quiet close | cut -d' ' -f1)") req/s; manager CPU per connection $quiet_us µs, of which its event loop ${LOOP_US[quiet]} µs"
    echo "close mode, one line per request|$(printf '%.0f' "$(result access logging close | cut -d' ' -f1)") req/s; manager CPU per connection $logging_us µs, of which its event loop ${LOOP_US[logging]} µs ($logged lines logged)"
    echo "req/s with the access log, over without|$(xfmt "$r")"
    echo "manager CPU per logged line (difference)|$per_line µs"
    echo "flood: lines arrived, of $wanted|$arrived"
    echo "flood: last line in the file after|$flood_s s (written over $FLOOD_SECONDS s)"
    echo "flood: manager CPU, per line|$flood_cpu s, $flood_us µs"
} | table_print ll
[[ $arrived == "$wanted" ]] || die "$((wanted - arrived)) flood lines missing; see $OUT/flood.log"
echo "== raw output: $OUT"
