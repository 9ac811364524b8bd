# shellcheck shell=bash disable=SC2034
# (SC2034: the globals set here — READY_MS, MEM_HWM, … — are the callers' to read.)
# bench/lib.sh — what the benchmark scripts share; sourced, never run.
#
# - bookkeeping of the processes a script starts, so that it stops exactly
#   those, by PID, on every way out (never by name: the machine may run other
#   sockherds, nodes and PM2s that are none of the benchmark's business);
# - readiness: `start_sockherd` times sockherd's own READY=1 through a
#   NOTIFY_SOCKET this side listens on; `wait_answers` polls until N
#   different worker processes have answered, for servers that cannot say;
# - a process's CPU time and memory from /proc;
# - wrk runs over a set of targets in rounds, and their medians and ratios;
# - aligned Markdown tables.
#
# The caller runs under `set -euo pipefail`, sets BENCH_NAME (for messages)
# and OUT (a directory for logs and raw output), and sources this file, which
# installs the EXIT trap. Settings read here: DURATION, WARMUP, ROUNDS,
# CONNECTIONS, THREADS, BASE_PORT; start_sockherd also needs SOCKHERD (the
# binary).

BENCH_NAME=${BENCH_NAME:-$(basename "$0")}
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLK_TCK=$(getconf CLK_TCK)
# $EPOCHREALTIME, awk and printf all follow the locale's decimal separator;
# the arithmetic here assumes a dot.
export LC_ALL=C

die() {
    echo "$BENCH_NAME: $*" >&2
    exit 1
}

note() {
    echo "$BENCH_NAME: $*" >&2
}

# need_whole VAR... — dies unless each variable holds a whole number.
need_whole() {
    local name
    for name in "$@"; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "$name=${!name}: expected a whole number"
    done
}

# need_tool TOOL HOW-TO-GET-IT
need_tool() {
    command -v "$1" >/dev/null || die "$1 is not installed; $2"
}

# --- processes started here, and only those, are stopped on the way out ---

PIDS=()    # in start order; stopped newest first
AT_EXIT=() # functions to call on the way out, after the PIDs are stopped

track() {
    PIDS+=("$1")
}

# proc_stat PID — the fields of /proc/PID/stat after the command name, so
# that field N of proc(5) is word N-2 (state is word 1, utime word 12). The
# name is cut at its last ')' because it may hold spaces and parentheses:
# PM2's daemon is called "PM2 v7.0.4: God", and splitting its line on blanks
# reads two fields too early (that is how node.sh once saw it use 0 ticks).
proc_stat() {
    local line
    { line=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    echo "${line##*) }"
}

alive() {
    local state
    state=$(proc_stat "$1") || return 1
    [[ ${state%% *} != Z ]]
}

# cpu_ticks PID — utime + stime (all threads, in 1/CLK_TCK s)
cpu_ticks() {
    local fields
    fields=$(proc_stat "$1") || die "process $1 is gone"
    awk '{print $12 + $13}' <<<"$fields"
}

# cpu_ns PID — CPU time of the threads alive now, in ns (the first field of
# each /proc/PID/task/TID/schedstat): exact where clock ticks are too coarse,
# as for a start-up that takes milliseconds; time of threads that already
# exited is missing, which is why runs use cpu_ticks.
cpu_ns() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ns += $1} END {printf "%.0f\n", ns}'
}

# mem_kib PID VmRSS|VmHWM|RssAnon — in KiB
mem_kib() {
    awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"
}

# stop_pid PID — SIGTERM, then SIGKILL after 15 s (sockherd drains its
# workers within --kill-timeout, 5 s by default), and forgets it.
stop_pid() {
    local pid=$1 left=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        note "pid $pid did not stop within 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Reaps it if it is a child (a daemonised PM2 is not: nothing to reap).
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || left+=("$p")
    done
    PIDS=("${left[@]}")
}

# stop_since MARK — stops what was started after MARK=${#PIDS[@]}, newest first.
stop_since() {
    while ((${#PIDS[@]} > $1)); do
        stop_pid "${PIDS[-1]}"
    done
}

bench_cleanup() {
    local f
    stop_since 0
    for f in "${AT_EXIT[@]}"; do
        "$f" || true
    done
    AT_EXIT=()
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# --- ports, on loopback only ---

NEXT_PORT=${BASE_PORT:-18080}

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# next_port VAR — sets VAR to the next port from BASE_PORT up that nothing
# listens on. A fixed range rather than the kernel's ephemeral ports, which
# wrk's own connections draw from.
next_port() {
    while port_busy "$NEXT_PORT"; do
        NEXT_PORT=$((NEXT_PORT + 1))
    done
    printf -v "$1" '%s' "$NEXT_PORT"
    NEXT_PORT=$((NEXT_PORT + 1))
}

# --- readiness ---

# wait_answers NAME PORT PID N LOG — polls until N different processes have
# answered on 127.0.0.1:PORT (every benchmark app puts `pid NNN` in its
# answer), as long as PID lives; 30 s at most. A new connection per request
# (Connection: close): keep-alive would ask the same worker again and again.
wait_answers() {
    local name=$1 port=$2 pid=$3 n=$4 log=$5 deadline=$((SECONDS + 30)) seen=0 urls=()
    for _ in $(seq $((2 * n))); do
        urls+=("http://127.0.0.1:$port/")
    done
    while :; do
        alive "$pid" || die "$name exited during start-up; its log: $log"
        seen=$({ curl -s --max-time 2 -H 'Connection: close' "${urls[@]}" 2>/dev/null || true; } |
            { grep -o 'pid [0-9]*' || true; } | sort -u | wc -l)
        ((seen >= n)) && return 0
        ((SECONDS < deadline)) || die "$name: $seen of $n workers answered within 30 s; its log: $log"
        sleep 0.1
    done
}

# Listens on an AF_UNIX datagram socket the way systemd does for Type=notify
# and writes the wall-clock time of every READY=1 to a file. It keeps
# listening after that, as systemd would: the manager goes on sending STATUS=.
NOTIFY_LISTENER='
import socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
with open(sys.argv[2], "w") as out:
    while True:
        data = sock.recv(65536)
        now = time.time()
        if b"READY=1" in data.split(b"\n"):
            out.write("%.6f\n" % now)
            out.flush()
'

# start_sockherd NAME PORT WORKERS LOG -- COMMAND... — starts `sockherd serve`
# on 127.0.0.1:PORT with NOTIFY_SOCKET pointing at a listener of ours and
# waits for its READY=1, which it sends once every worker is ready. Sets
# STARTED_PID (the manager), READY_MS (from just before exec to READY=1, in
# milliseconds) and READY_CPU_MS (the manager's CPU time until then). Needs
# SOCKHERD. No D-Bus (--bus none): the control plane plays no part in
# dispatch, and a session bus where the script runs must not change the result.
# Two optional arrays change the command: SERVE_WRAP runs it under another
# program that keeps its pid (valgrind), SERVE_ARGS adds to `serve`'s flags.
start_sockherd() {
    local name=$1 port=$2 workers=$3 log=$4 sock ready t0 t1 deadline=$((SECONDS + 60)) manager
    shift 5
    sock=$OUT/notify-$port.sock
    ready=$OUT/notify-$port.ready
    ((${#sock} <= 100)) || die "$sock: too long a path for a Unix socket; set OUT to a shorter directory"
    rm -f "$sock" "$ready"
    python3 -c "$NOTIFY_LISTENER" "$sock" "$ready" 2>>"$log" &
    track $!
    until [[ -S $sock ]]; do
        alive "${PIDS[-1]}" || die "the READY=1 listener for $name did not start; see $log"
        sleep 0.02
    done
    t0=$EPOCHREALTIME
    NOTIFY_SOCKET=$sock ${SERVE_WRAP[@]+"${SERVE_WRAP[@]}"} "$SOCKHERD" serve --bus none --log stderr \
        --listen "127.0.0.1:$port" ${SERVE_ARGS[@]+"${SERVE_ARGS[@]}"} --workers "$workers" -- "$@" >>"$log" 2>&1 &
    manager=$!
    track "$manager"
    until [[ -s $ready ]]; do
        alive "$manager" || die "$name exited during start-up; its log: $log"
        ((SECONDS < deadline)) || die "$name: no READY=1 within 60 s; its log: $log"
        sleep 0.02
    done
    READY_CPU_MS=$(awk -v ns="$(cpu_ns "$manager")" 'BEGIN {printf "%.1f", ns / 1e6}')
    read -r t1 <"$ready"
    READY_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) * 1000}')
    STARTED_PID=$manager
    # READY=1 means ready; one answer proves it is the right thing on the port.
    wait_answers "$name" "$port" "$manager" 1 "$log"
}

# --- wrk ---

# run_wrk URL MODE SECONDS FILE — MODE close: a new connection per request;
# keepalive: wrk's CONNECTIONS connections reused throughout.
run_wrk() {
    local url=$1 mode=$2 seconds=$3 file=$4 extra=()
    [[ $mode == close ]] && extra=(-H 'Connection: close')
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency "${extra[@]}" "$url" >"$file" 2>&1 ||
        die "wrk failed; its output: $file"
    parse_wrk "$file" >/dev/null
    if grep -qE 'Socket errors|Non-2xx' "$file"; then
        note "$(basename "$file"): $(grep -E 'Socket errors|Non-2xx' "$file" | tr -s ' ' | paste -sd';')"
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

# parse_wrk FILE -> "req/s p50_ms p99_ms requests"
parse_wrk() {
    local rps p50 p99 requests
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
    p50=$(awk '$1 == "50%" {print $2}' "$1")
    p99=$(awk '$1 == "99%" {print $2}' "$1")
    requests=$(awk '/ requests in / {print $1}' "$1")
    [[ -n $rps && -n $p50 && -n $p99 && -n $requests ]] || die "cannot read wrk's output in $1"
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $requests"
}

# median — of the numbers on stdin, one a line (the mean of the middle two
# of an even count)
median() {
    sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else if (NR) print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# --- targets measured in rounds ---
#
# A group is the set of servers compared with each other (e.g. the same app
# under four managers). `target GROUP NAME PORT PID [nomanager]` adds one:
# PID is the process the server was started as (sockherd, Node's primary,
# PM2's daemon, hello_shared's launcher), its children are the workers;
# `nomanager` says PID only waits and is no manager worth reporting.
# `measure GROUP MODE...` runs them all. Raw output:
# $OUT/GROUP/rROUND-NAME-MODE.txt.

declare -A TARGET_PORT TARGET_PID TARGET_MANAGER TICKS TREE_TICKS REQUESTS MEM_RSS MEM_HWM MEM_ANON
declare -A GROUP_TARGETS

target() {
    TARGET_PORT[$1/$2]=$3
    TARGET_PID[$1/$2]=$4
    TARGET_MANAGER[$1/$2]=$([[ ${5:-} == nomanager ]] && echo 0 || echo 1)
    GROUP_TARGETS[$1]="${GROUP_TARGETS[$1]:-} $2"
}

# tree PID — PID and its children (the workers; none of them has children)
tree() {
    echo "$1"
    pgrep -P "$1" || true
}

# tree_ticks PID... — utime + stime of all of them, read in one go: a pool
# has up to 257 processes
tree_ticks() {
    local pid files=()
    for pid in "$@"; do
        files+=("/proc/$pid/stat")
    done
    awk '{sub(/.*\) /, ""); t += $12 + $13} END {print t + 0}' "${files[@]}" 2>/dev/null
}

# measure GROUP MODE... — a close-mode warm-up of WARMUP s per target, then
# ROUNDS rounds; round r starts with target r (cyclically), so that no one
# target always runs first or last. Per target and mode it adds up the
# requests served, the manager's CPU ticks, and the CPU ticks of the whole
# server (the manager and its workers, wrk left out): on a machine busy with
# other work the CPU a server takes per request says more about its cost
# than its req/s, which depend on how many processes it has to claim a share
# of the CPUs with. At the end it takes each manager's VmRSS, VmHWM and
# RssAnon (VmRSS less the pages mapped from files: what it allocated itself).
measure() {
    local group=$1 names name mode round i n before after tree_before tree_after file requests pid procs
    shift
    read -ra names <<<"${GROUP_TARGETS[$group]}"
    n=${#names[@]}
    mkdir -p "$OUT/$group"
    if ((WARMUP > 0)); then
        echo "== $group: warming up (${WARMUP}s each)"
        for name in "${names[@]}"; do
            run_wrk "http://127.0.0.1:${TARGET_PORT[$group/$name]}/" close "$WARMUP" "$OUT/$group/warmup-$name.txt"
        done
    fi
    for round in $(seq "$ROUNDS"); do
        for mode in "$@"; do
            for i in $(seq 0 $((n - 1))); do
                name=${names[(round - 1 + i) % n]}
                pid=${TARGET_PID[$group/$name]}
                file=$OUT/$group/r$round-$name-$mode.txt
                echo "== $group: round $round/$ROUNDS, $name, $mode, ${DURATION}s"
                mapfile -t procs < <(tree "$pid")
                before=$(cpu_ticks "$pid")
                tree_before=$(tree_ticks "${procs[@]}")
                run_wrk "http://127.0.0.1:${TARGET_PORT[$group/$name]}/" "$mode" "$DURATION" "$file"
                after=$(cpu_ticks "$pid")
                tree_after=$(tree_ticks "${procs[@]}")
                [[ $(tree "$pid" | paste -sd' ') == "${procs[*]}" ]] ||
                    note "$group/$name: its workers changed during the run; its CPU figures miss the ones that left"
                read -r _ _ _ requests < <(parse_wrk "$file")
                TICKS[$group/$name/$mode]=$((${TICKS[$group/$name/$mode]:-0} + after - before))
                TREE_TICKS[$group/$name/$mode]=$((${TREE_TICKS[$group/$name/$mode]:-0} + tree_after - tree_before))
                REQUESTS[$group/$name/$mode]=$((${REQUESTS[$group/$name/$mode]:-0} + requests))
            done
        done
    done
    for name in "${names[@]}"; do
        pid=${TARGET_PID[$group/$name]}
        alive "$pid" || die "$group/$name: pid $pid died during the runs"
        MEM_RSS[$group/$name]=$(mem_kib "$pid" VmRSS)
        MEM_HWM[$group/$name]=$(mem_kib "$pid" VmHWM)
        MEM_ANON[$group/$name]=$(mem_kib "$pid" RssAnon)
    done
}

# result GROUP NAME MODE -> "req/s p50_ms p99_ms requests" of the median run
# by req/s (of an even count the lower middle one: a run that happened, so
# that its latencies go with its req/s)
result() {
    local round
    for round in $(seq "$ROUNDS"); do
        parse_wrk "$OUT/$1/r$round-$2-$3.txt"
    done | sort -g -k1,1 | sed -n "$(((ROUNDS + 1) / 2))p"
}

# round_ratios GROUP A B MODE -> A's req/s over B's, one round a line
round_ratios() {
    local round a b
    for round in $(seq "$ROUNDS"); do
        read -r a _ < <(parse_wrk "$OUT/$1/r$round-$2-$4.txt")
        read -r b _ < <(parse_wrk "$OUT/$1/r$round-$3-$4.txt")
        awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f\n", a / b}'
    done
}

# ratio GROUP A B MODE -> the median of the rounds' ratios: the runs of one
# round are minutes apart at most, so each round's ratio is the least
# disturbed by what else the machine does at the time.
ratio() {
    round_ratios "$@" | median
}

# cpu_us GROUP NAME MODE [TREE] -> CPU µs per request over all rounds (per
# connection in close mode, where every request is a new connection): the
# manager's, or with TREE=tree the whole server's
cpu_us() {
    local ticks=${TICKS[$1/$2/$3]:-0}
    [[ ${4:-} != tree ]] || ticks=${TREE_TICKS[$1/$2/$3]:-0}
    awk -v t="$ticks" -v hz="$CLK_TCK" -v n="${REQUESTS[$1/$2/$3]:-0}" \
        'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}'
}

# cpu_ratio GROUP A B MODE -> B's server CPU per request over A's: what A's
# req/s would be relative to B's if CPU time were all that limited them
cpu_ratio() {
    awk -v a="$(cpu_us "$1" "$2" "$4" tree)" -v b="$(cpu_us "$1" "$3" "$4" tree)" \
        'BEGIN {printf "%.3f", a ? b / a : 0}'
}

# --- formatting ---

mib() {
    awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'
}

# verdict VALUE OP LIMIT -> "met" or "NOT met"
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "NOT met"}'
}

# table_print [ALIGN] — reads rows of '|'-separated cells, the first one the
# header, and prints a Markdown table with every column padded. ALIGN has one
# letter per column, l or r (default: the first two left, the rest right).
# Widths count characters, not bytes (cells hold ×, µ, →): awk runs in the C
# locale here, so UTF-8 continuation bytes are subtracted by hand.
table_print() {
    awk -F'|' -v align="${1:-}" '
        function width(s) { return length(s) - gsub(/[\200-\277]/, "", s) }
        function left(i) { return substr(align, i, 1) == "l" || (align == "" && i <= 2) }
        function pad(s, i, gap) {
            gap = sprintf("%" (w[i] - width(s)) "s", "")
            return left(i) ? s gap : gap s
        }
        {
            rows[NR] = $0
            for (i = 1; i <= NF; i++) if (width($i) > w[i]) w[i] = width($i)
            if (NF > nf) nf = NF
        }
        END {
            for (r = 1; r <= NR; r++) {
                n = split(rows[r], c, "|")
                line = "|"
                for (i = 1; i <= nf; i++) line = line " " pad(i <= n ? c[i] : "", i) " |"
                print line
                if (r > 1) continue
                line = "|"
                for (i = 1; i <= nf; i++) {
                    dash = sprintf("%" (w[i] + 1) "s", "")
                    gsub(/ /, "-", dash)
                    line = line (left(i) ? "-" dash "|" : dash ":|")
                }
                print line
            }
        }'
}
