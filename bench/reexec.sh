#!/usr/bin/env bash
# bench/reexec.sh — what a re-exec in place costs the clients, in one run.
#
# The manager re-executes its own binary on SIGUSR2 (docs/upgrade.md): same
# PID, same workers, the listening socket never closed. This measures, in the
# embedded mode (`--bus none --log stderr`, NOTIFY_SOCKET on a listener of
# ours as under systemd), with WORKERS hello workers on loopback:
#   timing   REPEAT re-execs, one at a time, no other load: from SIGUSR2 to
#            the new image's READY=1; from SIGUSR2 to the answer to a request
#            made just after that READY=1 (serving from the new image); the
#            time the new image itself logs ("re-executed: … in N ms"); and
#            how long a request made right at the signal took (it waits in
#            the socket's queue while the manager is between images).
#            Median and max of each.
#   latency  wrk in close mode (a new connection per request, as in the
#            issue), DURATION s steady, then DURATION s with a SIGUSR2 every
#            EVERY s (each waits for the previous re-exec's READY=1), ROUNDS
#            times each: p99 (and p50, max, req/s) of both, and the ratio of
#            the p99s (the median of the rounds' ratios). Any socket error or
#            non-2xx answer is reported.
# At the end the manager must have the same PID and the same worker processes
# as at the start: a benchmark of re-execs that lost a worker would measure
# something else, so that fails the run.
#
# A benchmark, not a test: it exits 0 whatever the figures, and fails only
# when something cannot be measured.
#
# Usage:  bench/reexec.sh             (~1 min: 20 re-execs, 3 rounds of 2 × 10 s)
#         QUICK=1 bench/reexec.sh     (5 re-execs, 1 round of 2 × 3 s)
# Settings: WORKERS=4 REPEAT=20 DURATION=10 ROUNDS=3 EVERY=1 WARMUP=2
#   CONNECTIONS=64 THREADS=1 BASE_PORT=18080 OUT=DIR
# Needs: cargo, curl, wrk, python3.

set -euo pipefail

BENCH_NAME=reexec.sh
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPEAT=${REPEAT:-5}
    DURATION=${DURATION:-3}
    ROUNDS=${ROUNDS:-1}
    WARMUP=${WARMUP:-1}
fi
WORKERS=${WORKERS:-4}
REPEAT=${REPEAT:-20}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
EVERY=${EVERY:-1}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
BASE_PORT=${BASE_PORT:-18080}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_whole WORKERS REPEAT DURATION ROUNDS EVERY WARMUP CONNECTIONS THREADS BASE_PORT
((WORKERS > 0 && REPEAT > 0 && DURATION > 0 && ROUNDS > 0 && EVERY > 0)) ||
    die "WORKERS, REPEAT, DURATION, ROUNDS and EVERY must be at least 1"
need_tool wrk "on Debian/Ubuntu: apt-get install -y wrk"
need_tool curl "on Debian/Ubuntu: apt-get install -y curl"
need_tool python3 "it listens for sockherd's READY=1 and times the re-execs"
need_tool cargo "install Rust: https://rustup.rs"

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sockherd-reexec.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nproc) CPUs, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== building (release)"
(cd "$BENCH_ROOT" && cargo build --release --quiet -p sockherd --bin sockherd --example hello)
SOCKHERD=$TARGET_DIR/release/sockherd
HELLO=$TARGET_DIR/release/examples/hello
for bin in "$SOCKHERD" "$HELLO"; do
    [[ -x $bin ]] || die "$bin was not built"
done
echo "== $("$SOCKHERD" --version), git $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"

ms() { awk -v v="$1" 'BEGIN {printf "%.1f", v}'; }
# stat_of FILE COLUMN -> "median max" of that column
stat_of() {
    local med max
    med=$(awk -v c="$2" '{print $c}' "$1" | median)
    max=$(awk -v c="$2" '{print $c}' "$1" | sort -g | tail -1)
    echo "$(ms "$med") $(ms "$max")"
}
# wrk_max FILE -> the Max column of wrk's Latency line, in ms
wrk_max() {
    to_ms "$(awk '$1 == "Latency" {print $4}' "$1")"
}
# wrk_errors FILE -> "N" requests that failed: socket errors (connect, read,
# write, timeout) plus non-2xx answers
wrk_errors() {
    awk '/Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} /Non-2xx/ {n += $NF} END {print n + 0}' "$1"
}
# forget PID — a tracked process that ended by itself
forget() {
    local left=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || left+=("$p")
    done
    PIDS=(${left[@]+"${left[@]}"})
}
workers_of() {
    pgrep -P "$1" | sort -n | paste -sd' '
}

next_port port
log=$OUT/sockherd.log
echo "== sockherd, $WORKERS hello workers, on 127.0.0.1:$port"
start_sockherd reexec "$port" "$WORKERS" "$log" -- "$HELLO"
manager=$STARTED_PID
ready_file=$OUT/notify-$port.ready
wait_answers reexec "$port" "$manager" "$WORKERS" "$log"
workers0=$(workers_of "$manager")
echo "== manager pid $manager, workers $workers0"

# --- timing: REPEAT re-execs, one at a time ---

# Per re-exec, one line: ms from SIGUSR2 to READY=1, to the answer to a
# request made after READY=1, as the new image logged it, and the time a
# request made right at the signal took.
TIMER='
import os, re, signal, socket, sys, threading, time
pid, port, ready, log, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
done = re.compile(rb"re-executed: .* in ([0-9]+) ms")

def lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()

def get():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise SystemExit("not a 200 answer: %r" % data[:80])

def wait_for(cond, what):
    deadline = time.time() + 30
    while not cond():
        if time.time() > deadline:
            raise SystemExit("no %s within 30 s" % what)
        time.sleep(0.0005)

for i in range(n):
    r0 = len(lines(ready))
    d0 = len([l for l in lines(log) if done.search(l)])
    at_signal = {}
    def early():
        get()
        at_signal["t"] = time.time()
    t0 = time.time()
    os.kill(pid, signal.SIGUSR2)
    th = threading.Thread(target=early)
    th.start()
    wait_for(lambda: len(lines(ready)) > r0, "READY=1")
    t_ready = float(lines(ready)[r0])
    get()
    t_serve = time.time()
    th.join()
    wait_for(lambda: len([l for l in lines(log) if done.search(l)]) > d0, "re-executed line in the log")
    logged = [done.search(l).group(1) for l in lines(log) if done.search(l)][d0]
    print("%.2f %.2f %s %.2f" % ((t_ready - t0) * 1e3, (t_serve - t0) * 1e3, logged.decode(), (at_signal["t"] - t0) * 1e3),
          flush=True)
    time.sleep(0.2)
'
echo "== timing: $REPEAT re-execs by SIGUSR2, one at a time"
python3 -c "$TIMER" "$manager" "$port" "$ready_file" "$log" "$REPEAT" >"$OUT/timing.txt" ||
    die "timing the re-execs failed; see $OUT/timing.txt and $log"
[[ $(wc -l <"$OUT/timing.txt") == "$REPEAT" ]] || die "$REPEAT re-execs timed, $(wc -l <"$OUT/timing.txt") lines in $OUT/timing.txt"

# --- latency: steady against a re-exec every EVERY s ---

# reexec_loop SECONDS: a SIGUSR2 every EVERY s for SECONDS s, each after the
# previous one's READY=1; writes how many it sent to $OUT/loop.count.
reexec_loop() {
    local end=$((SECONDS + $1)) n sent=0 deadline
    while ((SECONDS < end)); do
        sleep "$EVERY"
        n=$(wc -l <"$ready_file")
        kill -USR2 "$manager"
        sent=$((sent + 1))
        deadline=$((SECONDS + 30))
        until (($(wc -l <"$ready_file") > n)); do
            ((SECONDS < deadline)) || { echo "no READY=1 within 30 s of a SIGUSR2" >&2; return 1; }
            sleep 0.005
        done
    done
    echo "$sent" >"$OUT/loop.count"
}

url=http://127.0.0.1:$port/
mkdir -p "$OUT/latency"
if ((WARMUP > 0)); then
    echo "== latency: warming up (${WARMUP}s)"
    run_wrk "$url" close "$WARMUP" "$OUT/latency/warmup.txt"
fi
reexecs=0
for round in $(seq "$ROUNDS"); do
    echo "== latency: round $round/$ROUNDS, steady, ${DURATION}s"
    run_wrk "$url" close "$DURATION" "$OUT/latency/r$round-steady.txt"
    echo "== latency: round $round/$ROUNDS, a re-exec every ${EVERY}s, ${DURATION}s"
    rm -f "$OUT/loop.count"
    reexec_loop "$DURATION" &
    loop=$!
    track "$loop"
    run_wrk "$url" close "$DURATION" "$OUT/latency/r$round-reexec.txt"
    wait "$loop" || die "the re-exec loop failed; see $log"
    forget "$loop"
    reexecs=$((reexecs + $(cat "$OUT/loop.count")))
done

alive "$manager" || die "the manager (pid $manager) is gone; see $log"
workers1=$(workers_of "$manager")
[[ $workers1 == "$workers0" ]] ||
    die "the workers changed across the re-execs: $workers0 -> $workers1; see $log"
logged_total=$(grep -c 're-executed: ' "$log" || true)
[[ $logged_total == $((REPEAT + reexecs)) ]] ||
    die "$((REPEAT + reexecs)) SIGUSR2 sent, $logged_total re-executions logged; see $log"
failures=$(grep -cE 'reexec-failed|cannot re-execute' "$log" || true)
[[ $failures == 0 ]] || die "$failures re-execs failed; see $log"

# --- the table ---

declare -A P99 P50 RPS MAX ERR
for kind in steady reexec; do
    for round in $(seq "$ROUNDS"); do
        f=$OUT/latency/r$round-$kind.txt
        read -r rps p50 p99 _ < <(parse_wrk "$f")
        echo "$rps $p50 $p99 $(wrk_max "$f") $(wrk_errors "$f")"
    done >"$OUT/latency/$kind.txt"
    # The median round by p99, whose other figures go with it.
    read -r RPS[$kind] P50[$kind] P99[$kind] MAX[$kind] _ < <(sort -g -k3,3 "$OUT/latency/$kind.txt" | sed -n "$(((ROUNDS + 1) / 2))p")
    ERR[$kind]=$(awk '{n += $5} END {print n + 0}' "$OUT/latency/$kind.txt")
done
p99_ratio=$(paste "$OUT/latency/reexec.txt" "$OUT/latency/steady.txt" |
    awk '{printf "%.3f\n", $8 ? $3 / $8 : 0}' | median)

read -r ready_med ready_max < <(stat_of "$OUT/timing.txt" 1)
read -r serve_med serve_max < <(stat_of "$OUT/timing.txt" 2)
read -r logged_med logged_max < <(stat_of "$OUT/timing.txt" 3)
read -r early_med early_max < <(stat_of "$OUT/timing.txt" 4)

echo
echo "re-exec in place, $WORKERS workers, sockherd $("$SOCKHERD" --version | cut -d' ' -f2-)"
{
    echo "what|median|max"
    echo "SIGUSR2 → READY=1 from the new image ($REPEAT re-execs)|$ready_med ms|$ready_max ms"
    echo "SIGUSR2 → answer to a request made after that READY=1|$serve_med ms|$serve_max ms"
    echo "the new image's own figure (\"re-executed: … in N ms\")|$logged_med ms|$logged_max ms"
    echo "a request made right at the signal: answered after|$early_med ms|$early_max ms"
} | table_print lrr
echo
{
    echo "close mode, $CONNECTIONS connections, ${DURATION}s × $ROUNDS|req/s|p50|p99|max|failed"
    echo "steady|$(printf '%.0f' "${RPS[steady]}")|${P50[steady]} ms|${P99[steady]} ms|${MAX[steady]} ms|${ERR[steady]}"
    echo "a re-exec every ${EVERY}s ($reexecs in all)|$(printf '%.0f' "${RPS[reexec]}")|${P50[reexec]} ms|${P99[reexec]} ms|${MAX[reexec]} ms|${ERR[reexec]}"
    echo "p99 during re-execs over steady|$(printf '%.2f×' "$p99_ratio")||||"
} | table_print lrrrrr
echo
echo "== the manager kept pid $manager and its workers ($workers1) through $((REPEAT + reexecs)) re-execs"
echo "== raw output: $OUT"
