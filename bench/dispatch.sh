#!/usr/bin/env bash
# bench/dispatch.sh — what sockherd's round-robin dispatch costs, measured.
#
# It measures the same HTTP worker code two ways, in one run, on loopback:
#   sockherd  `sockherd serve --listen 127.0.0.1:PORT --workers N -- hello`:
#             the manager accepts every connection and passes its fd to a
#             worker over SCM_RIGHTS;
#   baseline  `hello_shared --processes N --listen 127.0.0.1:PORT`: N
#             processes accept() on one shared listening socket themselves —
#             the physical limit, no hand-over at all;
# each in two modes, with `wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency`:
#   close      a new connection per request (`Connection: close`): every
#              request goes through the manager's accept + sendmsg;
#   keepalive  connections reused: the manager only sees the first 64.
# It prints req/s, the ratio sockherd/baseline and p50/p99 latency per mode,
# the manager's memory (VmRSS, VmHWM from /proc/PID/status) and its CPU time
# (utime+stime from /proc/PID/stat) per connection over the close-mode runs.
#
# This is a benchmark, not a test: it passes or fails nothing, and its numbers
# depend on the machine and on whatever else runs there.
#
# Run from anywhere:  bench/dispatch.sh
# Settings (environment): WORKERS=2 DURATION=10 WARMUP=3 CONNECTIONS=64
#   THREADS=1 ROUNDS=1 (ROUNDS>1 alternates which goes first and reports
#   medians; the ratio is the median of each round's own ratio) BASE_PORT=18080 (sockherd there, baseline on BASE_PORT+1) OUT=dir for
#   raw wrk output and logs (default: a new temporary directory).
# Needs: cargo, curl, wrk (`apt-get install -y wrk`). Installs nothing.

set -euo pipefail

WORKERS=${WORKERS:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
BASE_PORT=${BASE_PORT:-18080}
SOCKHERD_PORT=$BASE_PORT
BASELINE_PORT=$((BASE_PORT + 1))

die() {
    echo "dispatch.sh: $*" >&2
    exit 1
}

for n in WORKERS DURATION WARMUP CONNECTIONS THREADS ROUNDS BASE_PORT; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n=${!n}: expected a whole number"
done
((WORKERS > 0 && DURATION > 0 && ROUNDS > 0)) || die "WORKERS, DURATION and ROUNDS must be above 0"

if ! command -v wrk >/dev/null; then
    echo "dispatch.sh: wrk is not installed; on Debian/Ubuntu: apt-get install -y wrk" >&2
    exit 1
fi
command -v curl >/dev/null || die "curl is not installed; on Debian/Ubuntu: apt-get install -y curl"
command -v cargo >/dev/null || die "cargo is not on PATH"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sockherd-bench.XXXXXX")}
mkdir -p "$OUT"
CLK_TCK=$(getconf CLK_TCK)

# --- processes started here, and only those, are stopped on the way out ---

PIDS=()

alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "dispatch.sh: pid $pid did not stop within 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits until every one of the N workers behind PORT has answered.
wait_ready() {
    local name=$1 port=$2 pid=$3 log=$4 deadline=$((SECONDS + 20)) seen
    while :; do
        alive "$pid" || die "$name exited during start-up; its log: $log"
        seen=$(for _ in $(seq $((2 * WORKERS))); do
            curl -s --max-time 1 "http://127.0.0.1:$port/" || true
        done | { grep -o 'worker [0-9]*' || true; } | sort -u | wc -l)
        ((seen >= WORKERS)) && return 0
        ((SECONDS < deadline)) || die "$name: only $seen of $WORKERS workers answered within 20 s; its log: $log"
        sleep 0.1
    done
}

# --- /proc readings of the manager ---

cpu_ticks() { # utime + stime, fields 14 and 15 of /proc/PID/stat
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

mem_kib() { # VmRSS or VmHWM, in KiB
    awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"
}

# --- wrk ---

# run_wrk URL MODE SECONDS FILE
run_wrk() {
    local url=$1 mode=$2 seconds=$3 file=$4 extra=()
    [[ $mode == close ]] && extra=(-H 'Connection: close')
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency "${extra[@]}" "$url" >"$file" 2>&1 ||
        die "wrk failed; its output: $file"
    parse "$file" >/dev/null
    if grep -qE 'Socket errors|Non-2xx' "$file"; then
        echo "dispatch.sh: note: $(basename "$file"): $(grep -E 'Socket errors|Non-2xx' "$file" | tr -s ' ' | paste -sd';')" >&2
    fi
}

# to_ms VALUE-WITH-UNIT (wrk prints us, ms or s)
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n
    }'
}

# parse FILE -> "req/s p50_ms p99_ms requests"
parse() {
    local rps p50 p99 requests
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
    p50=$(awk '$1 == "50%" {print $2}' "$1")
    p99=$(awk '$1 == "99%" {print $2}' "$1")
    requests=$(awk '/ requests in / {print $1}' "$1")
    [[ -n $rps && -n $p50 && -n $p99 && -n $requests ]] || die "cannot read wrk's output in $1"
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $requests"
}

# ratios MODE -> sockherd/baseline req/s of each round, one a line. Each
# round's two runs are back to back, so their ratio is the least disturbed
# by what else the machine does.
ratios() {
    local r s b
    for r in $(seq "$ROUNDS"); do
        read -r s _ < <(parse "$OUT/round$r-sockherd-$1.txt")
        read -r b _ < <(parse "$OUT/round$r-baseline-$1.txt")
        awk -v s="$s" -v b="$b" 'BEGIN {printf "%.3f\n", s / b}'
    done
}

# median TARGET MODE -> the "req/s p50 p99 requests" of the median run by req/s
median() {
    local r
    for r in $(seq "$ROUNDS"); do
        parse "$OUT/round$r-$1-$2.txt"
    done | sort -n -k1,1 | sed -n "$(((ROUNDS + 1) / 2))p"
}

# --- build ---

echo "== building (release)"
(cd "$ROOT" && cargo build --release --quiet -p sockherd --bin sockherd --example hello --example hello_shared)
SOCKHERD=$TARGET/release/sockherd
HELLO=$TARGET/release/examples/hello
HELLO_SHARED=$TARGET/release/examples/hello_shared
for bin in "$SOCKHERD" "$HELLO" "$HELLO_SHARED"; do
    [[ -x $bin ]] || die "$bin was not built"
done

# --- start both ---

for port in "$SOCKHERD_PORT" "$BASELINE_PORT"; do
    port_busy "$port" && die "127.0.0.1:$port is in use; set BASE_PORT"
done

echo "== starting sockherd with $WORKERS workers on 127.0.0.1:$SOCKHERD_PORT"
"$SOCKHERD" serve --listen "127.0.0.1:$SOCKHERD_PORT" --workers "$WORKERS" --log stderr -- "$HELLO" \
    >"$OUT/sockherd.log" 2>&1 &
MANAGER=$!
PIDS+=("$MANAGER")
wait_ready sockherd "$SOCKHERD_PORT" "$MANAGER" "$OUT/sockherd.log"
RSS_IDLE=$(mem_kib "$MANAGER" VmRSS)

echo "== starting the shared-accept baseline with $WORKERS processes on 127.0.0.1:$BASELINE_PORT"
"$HELLO_SHARED" --processes "$WORKERS" --listen "127.0.0.1:$BASELINE_PORT" >"$OUT/baseline.log" 2>&1 &
LAUNCHER=$!
PIDS+=("$LAUNCHER")
wait_ready baseline "$BASELINE_PORT" "$LAUNCHER" "$OUT/baseline.log"

url() {
    case $1 in
    sockherd) echo "http://127.0.0.1:$SOCKHERD_PORT/" ;;
    baseline) echo "http://127.0.0.1:$BASELINE_PORT/" ;;
    esac
}

if ((WARMUP > 0)); then
    echo "== warming up (${WARMUP}s each)"
    for target in sockherd baseline; do
        run_wrk "$(url "$target")" close "$WARMUP" "$OUT/warmup-$target.txt"
    done
fi

# --- measure ---

CPU_TICKS=0
CPU_REQUESTS=0
KEEPALIVE_TICKS=0
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order=(sockherd baseline); else order=(baseline sockherd); fi
    for mode in close keepalive; do
        for target in "${order[@]}"; do
            echo "== round $round/$ROUNDS: $target, $mode, ${DURATION}s"
            file=$OUT/round$round-$target-$mode.txt
            if [[ $target == sockherd ]]; then
                before=$(cpu_ticks "$MANAGER")
                run_wrk "$(url "$target")" "$mode" "$DURATION" "$file"
                after=$(cpu_ticks "$MANAGER")
                if [[ $mode == close ]]; then
                    CPU_TICKS=$((CPU_TICKS + after - before))
                    read -r _ _ _ requests < <(parse "$file")
                    CPU_REQUESTS=$((CPU_REQUESTS + requests))
                else
                    KEEPALIVE_TICKS=$((KEEPALIVE_TICKS + after - before))
                fi
            else
                run_wrk "$(url "$target")" "$mode" "$DURATION" "$file"
            fi
        done
    done
done

alive "$MANAGER" || die "the sockherd manager died during the run; its log: $OUT/sockherd.log"
RSS_END=$(mem_kib "$MANAGER" VmRSS)
HWM=$(mem_kib "$MANAGER" VmHWM)
cleanup

# --- report ---

echo
echo "sockherd dispatch vs shared accept — $WORKERS workers, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS round(s)"
echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $(uname -sr), sockherd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
printf '| %-9s | %14s | %14s | %5s | %13s | %13s | %13s | %13s |\n' \
    mode "sockherd req/s" "baseline req/s" ratio "sockherd p50" "sockherd p99" "baseline p50" "baseline p99"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ----------- ---------------: ---------------: ------: --------------: \
    --------------: --------------: --------------:
declare -A RATIO BY_ROUND
for mode in close keepalive; do
    read -r s_rps s_p50 s_p99 _ < <(median sockherd "$mode")
    read -r b_rps b_p50 b_p99 _ < <(median baseline "$mode")
    RATIO[$mode]=$(ratios "$mode" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")
    BY_ROUND[$mode]=$(ratios "$mode" | paste -sd' ')
    printf '| %-9s | %14.0f | %14.0f | %5s | %10s ms | %10s ms | %10s ms | %10s ms |\n' \
        "$mode" "$s_rps" "$b_rps" "${RATIO[$mode]}" "$s_p50" "$s_p99" "$b_p50" "$b_p99"
done
if ((ROUNDS > 1)); then
    echo
    echo "req/s and latencies: the median run of each; ratio: the median of the rounds' own ratios"
    echo "ratios by round: close ${BY_ROUND[close]}; keep-alive ${BY_ROUND[keepalive]}"
fi
US_PER_CONN=$(awk -v t="$CPU_TICKS" -v hz="$CLK_TCK" -v n="$CPU_REQUESTS" 'BEGIN {printf "%.2f", n ? t / hz * 1e6 / n : 0}')
CPU_SHARE=$(awk -v t="$CPU_TICKS" -v hz="$CLK_TCK" -v d="$((DURATION * ROUNDS))" 'BEGIN {printf "%.0f", t / hz / d * 100}')
echo
echo "manager memory: VmRSS $(awk -v k="$RSS_IDLE" 'BEGIN {printf "%.1f", k / 1024}') MiB after start," \
    "$(awk -v k="$RSS_END" 'BEGIN {printf "%.1f", k / 1024}') MiB after the runs; VmHWM $(awk -v k="$HWM" 'BEGIN {printf "%.1f", k / 1024}') MiB"
echo "manager CPU in close mode: $US_PER_CONN µs per connection" \
    "($CPU_TICKS ticks of 1/$CLK_TCK s over $CPU_REQUESTS connections; ${CPU_SHARE}% of one CPU)"
echo "manager CPU in keep-alive mode: $((KEEPALIVE_TICKS * 1000 / CLK_TCK)) ms over $((DURATION * ROUNDS)) s" \
    "(it only sees the first $CONNECTIONS connections)"
echo
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "NOT met"}'; }
echo "targets:"
echo "  close-mode ratio      ${RATIO[close]} (≥ 0.90): $(verdict "${RATIO[close]}" 0.90 '>=')"
echo "  keep-alive ratio      ${RATIO[keepalive]} (≥ 0.98): $(verdict "${RATIO[keepalive]}" 0.98 '>=')"
echo "  manager VmHWM         $(awk -v k="$HWM" 'BEGIN {printf "%.1f", k / 1024}') MiB (≤ 5 MiB): $(verdict "$HWM" 5120 '<=')"
echo "  manager CPU per conn  $US_PER_CONN µs (≤ 10 µs): $(verdict "$US_PER_CONN" 10 '<=')"
echo
echo "raw wrk output and logs: $OUT"
