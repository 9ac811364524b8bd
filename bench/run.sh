#!/usr/bin/env bash
# bench/run.sh — sockherd against its baselines, in one run on one machine,
# printed as one table with ratios, and a verdict for each target.
#
# Sections (SECTIONS, default all four, run in this order):
#   rust   the Rust hello worker (examples/hello) behind `sockherd serve`,
#          which accepts every connection and passes it to the next worker
#          round-robin, against the same HTTP code in WORKERS processes that
#          accept() on one shared socket themselves (examples/hello_shared:
#          no hand-over at all, the limit); wrk with a new connection per
#          request (close) and with keep-alive;
#   node   the same Node app (bench/node/hello.js) under sockherd
#          (round-robin, and --policy none: each worker accepts on the
#          shared socket), under Node's own cluster primary, round-robin and SCHED_NONE
#          (bench/node/cluster.js), and under PM2 cluster mode (`pm2 start
#          -i WORKERS`, as is and with --no-pmx; PM2 installed by npm into
#          $OUT, each daemon with its own PM2_HOME; left out, saying so, when
#          npm cannot fetch it); close and keep-alive;
#   pool   sockherd with 2, 16, 64 and 256 hello workers (SIZES) side by
#          side, close mode: neither req/s nor the manager's CPU per
#          connection should depend on how many workers it round-robins over;
#   ready  time from exec'ing `sockherd serve` to its READY=1, with 4 and 64
#          workers (READY_SIZES), READY_REPEAT starts each: NOTIFY_SOCKET is a
#          datagram socket this script listens on, as systemd would, and
#          sockherd says READY=1 only once every worker is ready.
# For each manager (sockherd, Node's primary, PM2's God daemon) the table
# gives its memory (VmRSS after the runs / VmHWM, and RssAnon) and its CPU
# time (utime+stime) per request, from /proc/PID; and for every server the CPU
# time per request of the manager and its workers together. That one matters
# on a busy machine: there the CPUs go round by runnable process, so req/s
# favour the server with more busy processes, while CPU per request does not
# care. The targets get a verdict on both. The shared-accept baseline has no
# manager: its launcher only waits.
#
# With ROUNDS>1 each section's runs repeat, each round starting with another
# target; req/s and latencies are then the median run's, and a ratio is the
# median of the rounds' own ratios. Runs are loopback only.
#
# A benchmark, not a test: it exits 0 whether or not targets are met, and
# fails only when something cannot be measured. Its numbers depend on the
# machine and on what else runs there; the header says what that was.
#
# Usage:  QUICK=1 bench/run.sh       (a smoke run: 2 s per run, 1 round; ~1 min)
#         bench/run.sh               (10 s per run, 1 round; ~5 min)
#         ROUNDS=5 bench/run.sh      (what bench/RESULTS.md reports; ~18 min)
# Settings (environment): DURATION=10 WARMUP=3 ROUNDS=1 WORKERS=2
#   CONNECTIONS=64 THREADS=1 SIZES="2 16 64 256" READY_SIZES="4 64"
#   READY_REPEAT=5 SECTIONS="rust node pool ready" PM2=1 (0: leave PM2 out)
#   BASE_PORT=18080 (ports are taken from there up) OUT=DIR (raw wrk output
#   and logs; default: a new temporary directory, printed at the end).
# bench/dispatch.sh and bench/node.sh are this script with one section.
# Needs: cargo, curl, wrk, python3; node for the node section, npm for PM2.

set -euo pipefail

BENCH_NAME=${BENCH_NAME:-run.sh}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2}
    WARMUP=${WARMUP:-1}
    READY_REPEAT=${READY_REPEAT:-2}
fi
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SIZES=${SIZES:-2 16 64 256}
READY_SIZES=${READY_SIZES:-4 64}
READY_REPEAT=${READY_REPEAT:-5}
SECTIONS=${SECTIONS:-${BENCH_SECTIONS:-rust node pool ready}}
PM2=${PM2:-1}
BASE_PORT=${BASE_PORT:-18080}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_whole DURATION WARMUP ROUNDS WORKERS CONNECTIONS THREADS READY_REPEAT BASE_PORT
((DURATION > 0 && ROUNDS > 0 && WORKERS > 0 && READY_REPEAT > 0)) ||
    die "DURATION, ROUNDS, WORKERS and READY_REPEAT must be above 0"
for s in $SIZES $READY_SIZES; do
    [[ $s =~ ^[1-9][0-9]*$ ]] || die "SIZES and READY_SIZES: $s is not a worker count"
done
for s in $SECTIONS; do
    [[ $s =~ ^(rust|node|pool|ready)$ ]] || die "SECTIONS: unknown section $s (rust, node, pool, ready)"
done
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

need_tool wrk "on Debian/Ubuntu: apt-get install -y wrk"
need_tool curl "on Debian/Ubuntu: apt-get install -y curl"
need_tool python3 "it listens for sockherd's READY=1"
need_tool cargo "install Rust: https://rustup.rs"
if want node; then
    need_tool node "on Debian/Ubuntu: apt-get install -y nodejs (or leave the node section out: SECTIONS)"
fi

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sockherd-bench.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}
NODE_APP=$BENCH_ROOT/bench/node/hello.js
NODE_PRIMARY=$BENCH_ROOT/bench/node/cluster.js
# Node apps listen where PORT and HOST say; HOST keeps Node's own primary and
# PM2 on loopback like everything else (Node binds every interface without it).
export HOST=127.0.0.1

# The command as given: the settings that came from the environment, then the script.
COMMAND=$(
    for v in QUICK DURATION WARMUP ROUNDS WORKERS CONNECTIONS THREADS SIZES READY_SIZES READY_REPEAT SECTIONS PM2; do
        # Only what came from the environment: the rest are defaults.
        if printenv "$v" >/dev/null; then printf '%s=%q ' "$v" "${!v}"; fi
    done
    printf '%s' "${BENCH_COMMAND:-bench/run.sh}"
)

machine() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
    echo "$(nproc) CPUs (${cpu:-unknown}), $mem, $(uname -sr)"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_LOAD=$(loadavg)
echo "== $START_DATE on $(machine); load average $START_LOAD"
echo "== command: $COMMAND"

echo "== building (release)"
(cd "$BENCH_ROOT" && cargo build --release --quiet -p sockherd --bin sockherd --example hello --example hello_shared)
SOCKHERD=$TARGET_DIR/release/sockherd
HELLO=$TARGET_DIR/release/examples/hello
HELLO_SHARED=$TARGET_DIR/release/examples/hello_shared
for bin in "$SOCKHERD" "$HELLO" "$HELLO_SHARED"; do
    [[ -x $bin ]] || die "$bin was not built"
done

ROWS=() # the table, one '|'-separated row each
TARGETS=() # "what|value|verdict"

# row BENCHMARK SETUP GROUP NAME MODE VS — a measured row; VS is the ratio
# cell, already formatted.
row() {
    local rps p50 p99 mem=— cpu=—
    read -r rps p50 p99 _ < <(result "$3" "$4" "$5")
    if ((TARGET_MANAGER[$3/$4])); then
        mem="$(mib "${MEM_RSS[$3/$4]}") / $(mib "${MEM_HWM[$3/$4]}") MiB ($(mib "${MEM_ANON[$3/$4]}") anon)"
        cpu="$(cpu_us "$3" "$4" "$5") µs"
    fi
    ROWS+=("$1|$2|$(printf '%.0f' "$rps") req/s|$6|$p50 ms|$p99 ms|$mem|$cpu|$(cpu_us "$3" "$4" "$5" tree) µs")
}

# xfmt RATIO -> "a.bc×"
xfmt() { printf '%.2f×' "$1"; }

# --- rust: sockherd round-robin against shared accept ---

section_rust() {
    local mark=${#PIDS[@]} port launcher
    next_port port
    echo "== rust: sockherd, $WORKERS hello workers, on 127.0.0.1:$port"
    start_sockherd sockherd "$port" "$WORKERS" "$OUT/rust-sockherd.log" -- "$HELLO"
    target rust sockherd "$port" "$STARTED_PID"
    next_port port
    echo "== rust: shared accept, $WORKERS hello_shared processes, on 127.0.0.1:$port"
    "$HELLO_SHARED" --processes "$WORKERS" --listen "127.0.0.1:$port" >"$OUT/rust-shared.log" 2>&1 &
    launcher=$!
    track "$launcher"
    wait_answers shared "$port" "$launcher" "$WORKERS" "$OUT/rust-shared.log"
    target rust shared "$port" "$launcher" nomanager
    measure rust close keepalive
    stop_since "$mark"

    local mode label r c
    for mode in close keepalive; do
        label="Rust hello, $(mode_label "$mode")"
        r=$(ratio rust sockherd shared "$mode")
        RATIO_RUST[$mode]=$r
        row "$label" "sockherd rr, $WORKERS workers" rust sockherd "$mode" "$(xfmt "$r") shared"
        row "$label" "shared accept, $WORKERS processes" rust shared "$mode" "1 (reference)"
    done
    TARGETS+=("close mode ≥ 0.95× shared accept (req/s)|$(xfmt "${RATIO_RUST[close]}")|$(verdict "${RATIO_RUST[close]}" '>=' 0.95)")
    c=$(cpu_ratio rust sockherd shared close)
    TARGETS+=("  same, by server CPU per request¹|$(xfmt "$c")|$(verdict "$c" '>=' 0.95)")
    TARGETS+=("keep-alive ≥ 0.98× shared accept (req/s)|$(xfmt "${RATIO_RUST[keepalive]}")|$(verdict "${RATIO_RUST[keepalive]}" '>=' 0.98)")
    c=$(cpu_ratio rust sockherd shared keepalive)
    TARGETS+=("  same, by server CPU per request¹|$(xfmt "$c")|$(verdict "$c" '>=' 0.98)")
    local hwm=${MEM_HWM[rust/sockherd]}
    TARGETS+=("manager VmHWM ≤ 5 MiB ($WORKERS workers)|$(mib "$hwm") MiB|$(verdict "$hwm" '<=' 5120)")
    local us
    us=$(cpu_us rust sockherd close)
    TARGETS+=("manager CPU ≤ 5 µs per connection (close mode)|$us µs|$(verdict "$us" '<=' 5)")
    if ((ROUNDS > 1)); then
        NOTES+=("rust, sockherd/shared by round: close $(round_ratios rust sockherd shared close | paste -sd' '); keep-alive $(round_ratios rust sockherd shared keepalive | paste -sd' ')")
    fi
}

mode_label() {
    if [[ $1 == close ]]; then echo "new conn/req"; else echo "keep-alive"; fi
}

# --- node: the same app under sockherd, Node's primary and PM2 ---

PM2_BIN=
PM2_VERSION=
PM2_HOMES=() # every PM2_HOME a daemon was started with, for pm2_cleanup

pm2_install() {
    local dir=$OUT/pm2
    mkdir -p "$dir"
    echo "== node: installing PM2 from npm into $dir"
    # `timeout`: an unreachable registry makes npm retry for minutes.
    if ! command -v npm >/dev/null; then
        PM2_SKIPPED="npm is not installed"
    elif ! timeout 300 npm install --prefix "$dir" --no-save --no-audit --no-fund --silent pm2 >"$dir/npm.log" 2>&1; then
        PM2_SKIPPED="npm could not install pm2 (is the registry reachable? $dir/npm.log)"
    elif [[ ! -x $dir/node_modules/.bin/pm2 ]]; then
        PM2_SKIPPED="npm ran but left no pm2 ($dir/npm.log)"
    else
        PM2_BIN=$dir/node_modules/.bin/pm2
        # From its package.json: any pm2 command, --version included,
        # starts a daemon if none runs.
        PM2_VERSION=$(node -p "require('$dir/node_modules/pm2/package.json').version")
        AT_EXIT+=(pm2_cleanup)
        return 0
    fi
    note "PM2 left out: $PM2_SKIPPED"
    return 1
}

# pm2 HOME ARGS... — the PM2 CLI with PM2_HOME=HOME
pm2() {
    local home=$1
    shift
    PM2_HOME=$home "$PM2_BIN" "$@"
}

# PM2's CLI daemonises a "God" process, the cluster primary of the apps it
# starts; pm2.pid in PM2_HOME names it. pm2_daemon HOME checks that PID
# against its command line, `PM2 vX.Y.Z: God Daemon (HOME)`, before anything
# is read from or sent to it.
pm2_daemon() {
    local pid
    pid=$(cat "$1/pm2.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "God Daemon ($1)" || return 1
    echo "$pid"
}

# pm2_start NAME PORT [PM2-OPTION...] — the Node app in PM2 cluster mode, with
# a daemon of its own (PM2_HOME=$OUT/pm2/NAME), so that each daemon's CPU and
# memory are one app's; a target of the node group.
pm2_start() {
    local name=$1 port=$2 home=$OUT/pm2/$1 log=$OUT/node-$1.log daemon
    shift 2
    PM2_HOMES+=("$home")
    echo "== node: PM2 $PM2_VERSION cluster mode, $WORKERS workers${*:+ ($*)}, on 127.0.0.1:$port"
    PORT=$port pm2 "$home" start "$NODE_APP" -i "$WORKERS" --name sockherd-bench "$@" >"$log" 2>&1 ||
        die "pm2 start failed; its output: $log"
    daemon=$(pm2_daemon "$home") || die "no PM2 daemon for $home after pm2 start; its output: $log"
    # Not a child of this shell, but started by it: stopped by PID too.
    track "$daemon"
    wait_answers "$name" "$port" "$daemon" "$WORKERS" "$log"
    target node "$name" "$port" "$daemon"
}

# pm2_stop HOME — `pm2 kill` stops the apps and the daemon the PM2 way, and
# stop_pid makes sure of the daemon. Only while a daemon of ours runs there:
# any pm2 command starts one if none does. By pm2.pid, so that a daemon is
# found even if the script stopped between `pm2 start` and reading it.
pm2_stop() {
    local pid
    pid=$(pm2_daemon "$1") || return 0
    pm2 "$1" kill >>"$OUT/node-pm2.log" 2>&1 || true
    stop_pid "$pid"
}

pm2_cleanup() {
    local home
    for home in "${PM2_HOMES[@]}"; do
        pm2_stop "$home"
    done
    rm -rf "$OUT/pm2/node_modules"
}

# node_primary NAME POLICY PORT — Node's cluster primary with
# NODE_CLUSTER_SCHED_POLICY=POLICY (rr: the primary accepts and hands each
# connection to a worker; none: the workers accept on a shared socket)
node_primary() {
    local log=$OUT/node-$1.log pid
    echo "== node: Node's cluster primary, $2, on 127.0.0.1:$3"
    PORT=$3 WORKERS=$WORKERS NODE_CLUSTER_SCHED_POLICY=$2 node "$NODE_PRIMARY" >"$log" 2>&1 &
    pid=$!
    track "$pid"
    wait_answers "node cluster ($2)" "$3" "$pid" "$WORKERS" "$log"
    target node "$1" "$3" "$pid"
}

section_node() {
    local mark=${#PIDS[@]} port pm2=0
    next_port port
    echo "== node: sockherd, $WORKERS node workers, on 127.0.0.1:$port"
    PORT=$port start_sockherd "sockherd (node)" "$port" "$WORKERS" "$OUT/node-sockherd.log" -- node "$NODE_APP"
    target node sockherd "$port" "$STARTED_PID"
    next_port port
    echo "== node: sockherd --policy none, $WORKERS node workers, on 127.0.0.1:$port"
    SERVE_ARGS=(--policy none)
    PORT=$port start_sockherd "sockherd none (node)" "$port" "$WORKERS" \
        "$OUT/node-sockherd-none.log" -- node "$NODE_APP"
    SERVE_ARGS=()
    target node sockherd-none "$port" "$STARTED_PID"
    next_port port
    node_primary rr rr "$port"
    next_port port
    node_primary none none "$port"
    if [[ $PM2 == 1 ]] && pm2_install; then
        next_port port
        pm2_start pm2 "$port"
        # PM2 loads its metrics module into every worker by default, which
        # wraps each HTTP request; --no-pmx shows what PM2 costs without it.
        next_port port
        pm2_start pm2-no-pmx "$port" --no-pmx
        pm2=1
    elif [[ $PM2 != 1 ]]; then
        PM2_SKIPPED="PM2=$PM2"
    fi
    measure node close keepalive
    pm2_cleanup
    stop_since "$mark"

    local mode label vs
    for mode in close keepalive; do
        label="Node hello.js, $(mode_label "$mode")"
        vs="$(xfmt "$(ratio node sockherd rr "$mode")") node rr"
        if ((pm2)); then
            RATIO_PM2[$mode]=$(ratio node sockherd pm2 "$mode")
            vs="$vs, $(xfmt "${RATIO_PM2[$mode]}") PM2"
        fi
        row "$label" "sockherd, $WORKERS workers" node sockherd "$mode" "$vs"
        row "$label" "node cluster rr, $WORKERS workers" node rr "$mode" "1 (reference)"
        row "$label" "sockherd --policy none" node sockherd-none "$mode" "$(xfmt "$(ratio node sockherd-none none "$mode")") SCHED_NONE"
        row "$label" "node cluster SCHED_NONE" node none "$mode" "$(xfmt "$(ratio node none rr "$mode")") node rr"
        if ((pm2)); then
            row "$label" "PM2 -i $WORKERS" node pm2 "$mode" "$(xfmt "$(ratio node pm2 rr "$mode")") node rr"
            row "$label" "PM2 -i $WORKERS --no-pmx" node pm2-no-pmx "$mode" "$(xfmt "$(ratio node pm2-no-pmx rr "$mode")") node rr"
        fi
    done
    if ((ROUNDS > 1)); then
        NOTES+=("node, new conn/req, sockherd/node rr by round: $(round_ratios node sockherd rr close | paste -sd' ')")
        if ((pm2)); then
            NOTES+=("node, new conn/req, sockherd/PM2 by round: $(round_ratios node sockherd pm2 close | paste -sd' ')")
        fi
    fi
    local r c
    r=$(ratio node sockherd-none none close)
    TARGETS+=("Node app, --policy none ≥ 0.9× Node's SCHED_NONE, close mode (req/s)|$(xfmt "$r")|$(verdict "$r" '>=' 0.9)")
    c=$(cpu_ratio node sockherd-none none close)
    TARGETS+=("  same, by server CPU per request¹|$(xfmt "$c")|$(verdict "$c" '>=' 0.9)")
    r=$(ratio node sockherd rr close)
    TARGETS+=("Node app, round-robin ≥ 1.2× Node's round-robin, close mode (req/s)|$(xfmt "$r")|$(verdict "$r" '>=' 1.2)")
    c=$(cpu_ratio node sockherd rr close)
    TARGETS+=("  same, by server CPU per request¹|$(xfmt "$c")|$(verdict "$c" '>=' 1.2)")
    if ((pm2)); then
        TARGETS+=("Node app, round-robin ≥ 3× PM2 with its defaults (pm2 start -i $WORKERS), close mode (req/s)|$(xfmt "${RATIO_PM2[close]}")|$(verdict "${RATIO_PM2[close]}" '>=' 3)")
        c=$(cpu_ratio node sockherd pm2 close)
        TARGETS+=("  same, by server CPU per request¹|$(xfmt "$c")|$(verdict "$c" '>=' 3)")
    else
        TARGETS+=("Node app, round-robin ≥ 3× PM2 with its defaults|—|not measured: $PM2_SKIPPED")
    fi
    local hwm=${MEM_HWM[node/sockherd]}
    TARGETS+=("manager VmHWM ≤ 5 MiB ($WORKERS node workers)|$(mib "$hwm") MiB|$(verdict "$hwm" '<=' 5120)")
}

# --- pool: dispatch cost against the number of workers ---

section_pool() {
    local mark=${#PIDS[@]} port n sizes first vs r
    read -ra sizes <<<"$SIZES"
    for n in "${sizes[@]}"; do
        next_port port
        echo "== pool: sockherd, $n hello workers, on 127.0.0.1:$port"
        start_sockherd "sockherd ($n workers)" "$port" "$n" "$OUT/pool-$n.log" -- "$HELLO"
        target pool "$n" "$port" "$STARTED_PID"
    done
    measure pool close
    stop_since "$mark"

    first=${sizes[0]}
    for n in "${sizes[@]}"; do
        if ((n == first)); then
            vs="1 (reference)"
        else
            vs="$(xfmt "$(ratio pool "$n" "$first" close)") $first workers"
        fi
        row "pool size, new conn/req" "sockherd rr, $n workers" pool "$n" close "$vs"
    done
    local last=${sizes[-1]}
    if ((ROUNDS > 1 && ${#sizes[@]} > 1)); then
        NOTES+=("pool, $last/$first workers by round: $(round_ratios pool "$last" "$first" close | paste -sd' ')")
    fi
    if ((${#sizes[@]} > 1)); then
        r=$(ratio pool "$last" "$first" close)
        TARGETS+=("req/s flat with pool size: $last vs $first workers ≥ 0.90×|$(xfmt "$r")|$(verdict "$r" '>=' 0.90)")
    fi
    if ((${#sizes[@]} > 1)); then
        # Flat: the manager's CPU per connection at the largest pool within
        # 1.2× of the smallest (the figures are ±10 % from run to run).
        local cpu_first cpu_last per
        cpu_first=$(cpu_us pool "$first" close)
        cpu_last=$(cpu_us pool "$last" close)
        r=$(awk -v a="$cpu_last" -v b="$cpu_first" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
        TARGETS+=("manager CPU/conn flat: $last vs $first workers ≤ 1.2× ($cpu_last vs $cpu_first µs)|$(xfmt "$r")|$(verdict "$r" '<=' 1.2)")
        per=$(awk -v a="${MEM_HWM[pool/$last]}" -v b="${MEM_HWM[pool/$first]}" -v n=$((last - first)) \
            'BEGIN {printf "%.1f", (a - b) / n}')
        TARGETS+=("manager memory ≤ 16 KiB per extra worker (VmHWM, $first → $last)|$per KiB|$(verdict "$per" '<=' 16)")
    fi
    local hwm=${MEM_HWM[pool/$first]}
    TARGETS+=("manager VmHWM ≤ 5 MiB ($first workers, pool run)|$(mib "$hwm") MiB|$(verdict "$hwm" '<=' 5120)")
}

# --- ready: start to READY=1 ---

section_ready() {
    local n i mark port times_ms cpu_ms rss anon med lo hi
    for n in $READY_SIZES; do
        times_ms=()
        cpu_ms=()
        for i in $(seq "$READY_REPEAT"); do
            mark=${#PIDS[@]}
            next_port port
            start_sockherd "sockherd ($n workers)" "$port" "$n" "$OUT/ready-$n-$i.log" -- "$HELLO"
            echo "== ready: $n workers, start $i/$READY_REPEAT: READY=1 after $READY_MS ms"
            times_ms+=("$READY_MS")
            cpu_ms+=("$READY_CPU_MS")
            rss=$(mem_kib "$STARTED_PID" VmRSS)
            anon=$(mem_kib "$STARTED_PID" RssAnon)
            stop_since "$mark"
        done
        med=$(printf '%s\n' "${times_ms[@]}" | median)
        lo=$(printf '%s\n' "${times_ms[@]}" | sort -g | head -1)
        hi=$(printf '%s\n' "${times_ms[@]}" | sort -g | tail -1)
        ROWS+=("start → READY=1|sockherd, $n workers|$med ms|—|—|—|$(mib "$rss") MiB ($(mib "$anon") anon)|$(printf '%s\n' "${cpu_ms[@]}" | median) ms|—")
        NOTES+=("start → READY=1 with $n workers: ${times_ms[*]} ms (median $med, range $lo–$hi)")
    done
    NOTES+=("start → READY=1 rows: the manager's VmRSS at READY=1 (of the last start) and its CPU time until then (median)")
}

declare -A RATIO_RUST RATIO_PM2
NOTES=()
PM2_SKIPPED=
for s in $SECTIONS; do
    "section_$s"
done

# --- report ---

END_LOAD=$(loadavg)
versions="sockherd $(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo '?'), $({ wrk --version 2>&1 || true; } | head -1 | cut -d" " -f1-2)"
if want node; then versions="$versions, node $(node --version)"; fi
if [[ -n $PM2_BIN ]]; then versions="$versions, PM2 $PM2_VERSION"; fi
echo
echo "sockherd benchmark — $START_DATE"
echo "machine:  $(machine)"
echo "load:     $START_LOAD at the start, $END_LOAD at the end (1, 5, 15 min)"
echo "versions: $versions"
echo "command:  $COMMAND"
echo "runs:     wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, loopback; $ROUNDS round(s);" \
    "req/s and latencies: the median run; ratios: the median of the rounds' own"
echo
{
    echo "benchmark|setup|result|ratio|p50|p99|manager VmRSS / VmHWM (RssAnon)|manager CPU/req|server CPU/req"
    printf '%s\n' "${ROWS[@]}"
} | table_print llrlrrrrr
if [[ -n $PM2_SKIPPED ]]; then
    echo
    echo "PM2 left out: $PM2_SKIPPED"
fi
echo "CPU/req: utime+stime per request served (in new conn/req mode: per connection), of the manager"
echo "alone and of the whole server (manager and workers; wrk not counted)."
echo "VmRSS/VmHWM count the pages of the binary and of libc it maps; RssAnon is what it allocated itself."
for n in "${NOTES[@]}"; do
    echo "note: $n"
done
echo
echo "targets:"
{
    echo "target|measured|verdict"
    printf '%s\n' "${TARGETS[@]}"
} | table_print lrl
echo "¹ the ratio req/s would have if CPU time were all that limited both: the other's server CPU"
echo "  per request over sockherd's. On a machine where other jobs compete for the CPUs, a server"
echo "  with more busy processes gets a larger share of them, and req/s favour it."
echo
echo "raw wrk output and logs: $OUT"
