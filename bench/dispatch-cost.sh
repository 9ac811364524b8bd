#!/usr/bin/env bash
# bench/dispatch-cost.sh — what the manager spends on one dispatched
# connection, counted rather than timed, so that a change can be checked in a
# minute on a noisy machine:
#
# - user-space instructions per connection: the manager runs under
#   `valgrind --tool=callgrind` (its workers do not), serves SMALL and then,
#   in a second run, LARGE connections; the difference of the two runs'
#   totals over LARGE - SMALL leaves start-up and shutdown out;
# - system calls per connection: `strace -c -f -p` on the manager (all its
#   threads, not its workers) while it serves STRACED connections, after a
#   warm-up.
#
# Each for every policy of POLICIES and every client count of CLIENTS:
# with 1 client the connections come one at a time, each wake-up of the
# manager finds one (the most it can cost); with 64, as many arrive at once
# as under `wrk -c64`, and a wake-up finds several. The manager runs slower
# under valgrind and strace than on its own, so with many clients its
# wake-ups find more connections than they would unobserved: read the
# many-client figures as "under load", the one-client figures as the worst.
# The load is testbins' `connload`: exactly N requests, each on a new
# connection, to 2 (WORKERS) `examples/hello` workers. Loopback only.
#
#   bench/dispatch-cost.sh                     (~1 minute)
#   POLICIES=rr CLIENTS=1 bench/dispatch-cost.sh
#
# Settings (environment): POLICIES="rr least-conn" CLIENTS="1 64" WORKERS=2
#   SMALL=500 LARGE=5500 STRACED=2000 BASE_PORT=18080 OUT=DIR (the callgrind
#   files, for callgrind_annotate, and the strace tables).
# Needs: cargo, valgrind, strace, curl, python3.

set -euo pipefail

BENCH_NAME=dispatch-cost.sh
POLICIES=${POLICIES:-rr least-conn}
CLIENTS=${CLIENTS:-1 64}
WORKERS=${WORKERS:-2}
SMALL=${SMALL:-500}
LARGE=${LARGE:-5500}
STRACED=${STRACED:-2000}
BASE_PORT=${BASE_PORT:-18080}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_whole WORKERS SMALL LARGE STRACED BASE_PORT
((LARGE > SMALL && STRACED > 0 && WORKERS > 0)) || die "need LARGE > SMALL, STRACED > 0, WORKERS > 0"
for c in $CLIENTS; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS: $c is not a client count"
done
need_tool valgrind "on Debian/Ubuntu: apt-get install -y valgrind"
need_tool strace "on Debian/Ubuntu: apt-get install -y strace"
need_tool curl "on Debian/Ubuntu: apt-get install -y curl"
need_tool python3 "it listens for sockherd's READY=1"
need_tool cargo "install Rust: https://rustup.rs"

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sockherd-cost.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== sockherd $(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo '(no git)'), building (release)"
(cd "$BENCH_ROOT" && cargo build --release --quiet -p sockherd --bin sockherd --example hello &&
    cargo build --release --quiet -p sockherd-testbins --bin connload)
SOCKHERD=$TARGET_DIR/release/sockherd
HELLO=$TARGET_DIR/release/examples/hello
CONNLOAD=$TARGET_DIR/release/connload
for bin in "$SOCKHERD" "$HELLO" "$CONNLOAD"; do
    [[ -x $bin ]] || die "$bin was not built"
done

# load PORT COUNT CLIENTS — COUNT requests, each on a new connection
load() {
    "$CONNLOAD" "127.0.0.1:$1" "$2" "$3" >>"$OUT/connload.log" 2>&1 ||
        die "connload: not every request was answered ($OUT/connload.log)"
}

# instructions POLICY CLIENTS COUNT — the manager's instructions over a whole
# run (start, COUNT connections, stop), from callgrind's summary
instructions() {
    local mark=${#PIDS[@]} port file=$OUT/callgrind-$1-c$2-n$3.out
    next_port port
    SERVE_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$file")
    SERVE_ARGS=(--policy "$1")
    start_sockherd "sockherd under callgrind" "$port" "$WORKERS" "$OUT/callgrind-$1-c$2-n$3.log" -- "$HELLO"
    SERVE_WRAP=()
    SERVE_ARGS=()
    load "$port" "$3" "$2"
    stop_since "$mark"
    awk '/^summary:/ {print $2; found = 1} END {exit !found}' "$file" ||
        die "no callgrind summary in $file"
}

# syscalls POLICY CLIENTS — strace -c's table of the manager's system calls
# while it serves STRACED connections, written to a file; prints its path
syscalls() {
    local mark=${#PIDS[@]} port table=$OUT/strace-$1-c$2.txt tracer
    next_port port
    SERVE_ARGS=(--policy "$1")
    start_sockherd "sockherd" "$port" "$WORKERS" "$OUT/strace-$1-c$2.log" -- "$HELLO"
    SERVE_ARGS=()
    load "$port" 200 "$2" # warm-up: buffers, the timer wheel, the workers
    strace -c -f -q -p "$STARTED_PID" -o "$table" 2>>"$OUT/strace-$1-c$2.log" &
    tracer=$!
    # Attached once the kernel names a tracer for the manager.
    for _ in $(seq 100); do
        [[ $(awk '/^TracerPid:/ {print $2}' "/proc/$STARTED_PID/status") != 0 ]] && break
        sleep 0.05
    done
    load "$port" "$STRACED" "$2"
    kill -INT "$tracer"
    wait "$tracer" || true
    stop_since "$mark"
    echo "$table"
}

# per_conn TABLE SYSCALL... — calls of those system calls per connection
# (all of them for "total")
per_conn() {
    local table=$1
    shift
    awk -v n="$STRACED" -v names=" $* " '
        $NF == "total" && names == " total " {print_it = 1; calls = $4}
        NF >= 5 && index(names, " " $NF " ") && $NF != "total" {
            # "% time seconds usecs/call calls [errors] syscall"
            calls += $4
        }
        END {printf "%.2f", calls / n}' "$table"
}

ROWS=("policy|clients|instructions/conn|syscalls/conn|accept4|sendmsg|close + close_range|recvmsg|epoll_wait|other")
for policy in $POLICIES; do
    for clients in $CLIENTS; do
        echo "== $policy, $clients client(s): callgrind, $SMALL and $LARGE connections"
        small=$(instructions "$policy" "$clients" "$SMALL")
        large=$(instructions "$policy" "$clients" "$LARGE")
        ir=$(awk -v a="$small" -v b="$large" -v n=$((LARGE - SMALL)) 'BEGIN {printf "%.0f", (b - a) / n}')
        echo "== $policy, $clients client(s): strace, $STRACED connections"
        table=$(syscalls "$policy" "$clients")
        total=$(per_conn "$table" total)
        accept=$(per_conn "$table" accept4 accept)
        send=$(per_conn "$table" sendmsg sendmmsg)
        close=$(per_conn "$table" close close_range)
        recv=$(per_conn "$table" recvmsg recvmmsg recvfrom)
        wait_=$(per_conn "$table" epoll_wait epoll_pwait epoll_pwait2)
        other=$(awk -v t="$total" -v a="$accept" -v s="$send" -v c="$close" -v r="$recv" -v w="$wait_" \
            'BEGIN {o = t - a - s - c - r - w; printf "%.2f", (o > 0 ? o : 0)}')
        ROWS+=("$policy|$clients|$ir|$total|$accept|$send|$close|$recv|$wait_|$other")
    done
done

echo
echo "Manager cost per dispatched connection, $WORKERS hello workers, a new connection per request"
echo "(instructions: callgrind, ($LARGE − $SMALL runs) / $((LARGE - SMALL)); system calls: strace -c -f, $STRACED connections)"
echo
printf '%s\n' "${ROWS[@]}" | table_print llrrrrrrrr
echo
echo "raw output: $OUT (callgrind_annotate $OUT/callgrind-rr-c1-n$LARGE.out for where it goes)"
