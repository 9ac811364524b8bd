#!/usr/bin/env bash
# run.sh: sockherd under a real systemd, end to end.
#
# Boots systemd as PID 1 in a systemd-nspawn container (bookworm, systemd
# 252), installs units/example.socket and units/example.service as
# app.socket/app.service (plus the drop-in e2e.conf), and checks socket
# activation, sd_notify (READY, STATUS, RELOADING, STOPPING), the watchdog,
# the journal fields, the D-Bus interface and the CLI on the real system bus,
# reload (SIGHUP and `systemctl reload`, also one that fails), the manager's
# re-exec in place (SIGUSR2 and `sockherd upgrade` under load, into another
# build, and the refusals), restart under load, and stop. TESTS.md lists
# every check.
#
# Usage (root): tests/e2e/run.sh
#   E2E_NO_BUILD=1   skip `cargo build --workspace --all-targets`
#   E2E_REQUIRE=1    a host that cannot run the suite is a failure, not a skip
#   E2E_KEEP=1       leave the container running at the end (prints how to enter it)
#                    and keep the logs, which are otherwise removed when all checks pass
#   E2E_ROOTFS=DIR   where the bookworm rootfs is built once and kept
#                    (default /var/lib/machines/sockherd-e2e-bookworm)
# Prints PASS:/FAIL: lines, then "N passed, N failed"; exits non-zero on any failure.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
T0=$(ts)

# ------------------------------------------------------------ 0. the host
[ "$(uname -s)" = Linux ] || skip_suite "not Linux"
[ "$(id -u)" = 0 ] || skip_suite "needs root (systemd-nspawn, cgroups)"
command -v nsenter >/dev/null || skip_suite "no nsenter (util-linux)"
ensure_packages || skip_suite "systemd-nspawn/mmdebstrap missing and cannot be installed"
STATE=$(mktemp -d /tmp/sockherd-e2e.XXXXXX)

if [ -z "${E2E_NO_BUILD:-}" ]; then
  t=$(ts)
  log "cargo build --workspace --all-targets"
  (cd "$ROOT" && cargo build --workspace --all-targets) >"$STATE/build.log" 2>&1 || {
    tail -30 "$STATE/build.log"
    echo "FAIL: cargo build"
    exit 1
  }
  log "built in $(elapsed "$t") s"
fi
BIN=$ROOT/target/debug
if [ ! -x "$BIN/sockherd" ] || [ ! -x "$BIN/examples/hello" ]; then
  echo "FAIL: $BIN/sockherd or $BIN/examples/hello is missing"
  exit 1
fi

t=$(ts)
ensure_rootfs || { echo "FAIL: building the rootfs (log: $STATE/bootstrap.log)"; exit 1; }
log "rootfs ready in $(elapsed "$t") s"
reap_stale

# On any exit, stop the client load if one runs (see load_start): its loops
# would run on, and a container halting under them leaves a stopped nsenter
# behind on the host. Then tear the container down unless told to keep it.
on_exit() {
  [ -z "${LOAD_PID:-}" ] || load_stop
  [ -n "${E2E_KEEP:-}" ] || teardown
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP
boot_or_exit "$BIN"

# ------------------------------------------------------------ helpers
prop() { cx systemctl show -P "$1" "${2:-app.service}"; }
# Body of GET PATH through the socket; curl's exit status.
get() { cx curl -sS --max-time "${2:-10}" "http://127.0.0.1:8080$1"; }
# One line per journal entry of UNIT (default app.service) selected by a jq program.
jqj() { cx sh -c 'journalctl -u "$1" -o json --no-pager | jq -r "$2"' sh "${UNIT:-app.service}" "$1"; }
status_matches() { prop StatusText | grep -Eq "$1"; }
# "state|status" of app.service, read in one call (one consistent view).
sample() {
  cx systemctl show -p ActiveState -p StatusText app.service |
    awk -F= '{ v[$1] = substr($0, length($1) + 2) } END { print v["ActiveState"] "|" v["StatusText"] }'
}
# The worker id and pid of N requests in a row: "id pid" lines.
served_by() {
  local i body
  for i in $(seq 1 "$1"); do
    body=$(get /) || return 1
    sed -nE 's/^hello from worker ([0-9]+) \(pid ([0-9]+)\)$/\1 \2/p' <<<"$body"
  done
}
# round_robin FILE [N]: each id is the previous one + 1 (mod N, default 4),
# and all N appear.
round_robin() {
  awk -v n="${2:-4}" 'NR > 1 && $1 != (prev + 1) % n { bad = 1 } { prev = $1; seen[$1] = 1 }
       END { exit bad || length(seen) != n }' "$1"
}
not() { ! "$@"; }
prop_is() { test "$(prop "$1")" = "$2"; }
alive() { cx kill -0 "$1" 2>/dev/null; }
none_alive() { local p; for p in "$@"; do alive "$p" && return 1; done; return 0; }
journal_has() { [ -n "$(jqj "$1")" ]; }

# The manager's object on the system bus.
MGR=(io.sockherd.app /io/sockherd/Manager io.sockherd.Manager1)
# A property's value as busctl prints it, without the type: 4, "running".
mgr_prop() { cx busctl get-property "${MGR[@]}" "$1" | cut -d' ' -f2-; }
# ListWorkers, one "id pid state connections" line per worker process.
workers() {
  cx busctl --json=short call "${MGR[@]}" ListWorkers |
    jq -r '.data[0][] | "\(.[0]) \(.[1]) \(.[2]) \(.[6])"'
}
# The pids of the ready workers, sorted.
ready_pids() { workers | awk '$3 == "ready" { print $2 }' | sort; }
conns_of() { workers | awk -v id="$1" '$1 == id { print $4 }'; }
conns_of_is() { test "$(conns_of "$1")" = "$2"; }

# Client load from inside the container while something happens to the
# service: 3 loops of GET /, each on a new connection, until the stop file
# appears. One "curl-exit-status http-code seconds" line per request; exit
# status 7 is a refused connection.
LOAD_STOP=/run/sockherd-e2e-load-stop
load_start() {
  LOAD_OUT=$1
  cx rm -f "$LOAD_STOP"
  cx bash -c '
    for _ in 1 2 3; do
      until [ -e "$1" ]; do
        out=$(curl -s -o /dev/null --max-time 30 -w "%{http_code} %{time_total}" http://127.0.0.1:8080/)
        echo "$? $out"
      done &
    done
    wait' sh "$LOAD_STOP" >"$LOAD_OUT" &
  LOAD_PID=$!
}
load_reaches() { [ "$(wc -l <"$LOAD_OUT")" -ge "$1" ]; }
# Each loop ends after its request in flight.
load_stop() {
  cx touch "$LOAD_STOP"
  wait "$LOAD_PID"
  LOAD_PID=
}
# under_load NAME CMD...: runs CMD while the load runs: the load is under way
# before CMD starts and goes on for a while after it returns. Sets rc (CMD's
# exit status), and sent, failed, refused and waited (requests that took
# 0.5 s or more: they waited in the socket or in the manager).
under_load() {
  local name=$1 n
  shift
  load_start "$STATE/load-$name.txt"
  eventually load_reaches 15
  "$@"
  rc=$?
  n=$(wc -l <"$LOAD_OUT")
  eventually load_reaches $((n + 15))
  load_stop
  read -r sent failed refused waited < <(awk '{ n++ } $1 != 0 || $2 != 200 { f++ } $1 == 7 { r++ }
    $3 >= 0.5 { w++ } END { printf "%d %d %d %d\n", n, f, r, w }' "$LOAD_OUT")
  log "$name under load: $sent requests sent, $failed failed, $refused refused, $waited waited >= 0.5 s"
}

# ------------------------------------------------------------ 1. units
log "installing the example units as app.socket/app.service"
cx mkdir -p /usr/local/lib/sockherd /etc/systemd/system/app.service.d
# The user the shipped unit runs apps as, as the package's sysusers.d entry
# creates it: with it, DynamicUser= takes this static user, which the bus
# policy lets own io.sockherd.*.
cx mkdir -p /etc/sysusers.d
cx sh -c 'cat >/etc/sysusers.d/sockherd.conf' <"$ROOT/packaging/sysusers/sockherd.conf"
cx systemd-sysusers
# A copy, not a link into the read-only bind mount: the re-exec checks
# replace this file the way a package upgrade replaces /usr/bin/sockherd.
cx install -m 755 /opt/sockherd/sockherd /usr/local/bin/sockherd
cx ln -sf /opt/sockherd/examples/hello /usr/local/lib/sockherd/hello
cx ln -sf /opt/sockherd/chatty /usr/local/lib/sockherd/chatty
cx sh -c 'cat >/usr/local/lib/sockherd/e2e-worker && chmod 755 /usr/local/lib/sockherd/e2e-worker' <"$HERE/worker.sh"
cx sh -c 'cat >/etc/systemd/system/app.socket' <"$ROOT/units/example.socket"
cx sh -c 'cat >/etc/systemd/system/app.service' <"$ROOT/units/example.service"
cx sh -c 'cat >/etc/systemd/system/app.service.d/e2e.conf' <"$HERE/e2e.conf"
cx systemctl daemon-reload
# The bus policy, before the service starts: without it the system bus
# refuses the manager its name, and everyone else their calls to it.
cx sh -c 'cat >/etc/dbus-1/system.d/io.sockherd.conf' <"$ROOT/packaging/dbus/io.sockherd.conf"
check "the D-Bus policy is installed and dbus-daemon reloads it (ReloadConfig)" \
  cx busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig

cx systemd-analyze verify app.socket app.service >"$STATE/verify.txt" 2>&1
check "systemd-analyze verify: the units are clean" test ! -s "$STATE/verify.txt"
cx systemd-analyze security --no-pager app.service >"$STATE/security.txt" 2>&1
exposure=$(sed -nE 's/.*Overall exposure level for app.service: ([0-9.]+).*/\1/p' "$STATE/security.txt")
log "systemd-analyze security app.service: exposure ${exposure:-?}; what is left open:"
grep '✗' "$STATE/security.txt" | sed -E 's/^✗ +([^ ]+) .* ([0-9.]+)$/      \1 \2/'

check "systemd-analyze security: exposure $exposure is below 3.0 (OK)" \
  awk -v e="${exposure:-10}" 'BEGIN { exit !(e < 3.0) }'

# ------------------------------------------------------------ 2. socket activation, READY
check "systemctl start app.socket" cx systemctl start app.socket
check "socket listening, service inactive until the first connection" \
  test "$(cx systemctl is-active app.socket) $(cx systemctl is-active app.service)" = "active inactive"
(get / 30 >"$STATE/first.txt" 2>&1; echo $? >"$STATE/first.rc") &
first=$!
: >"$STATE/start-samples.txt"
started() {
  local s
  s=$(sample)
  echo "$s" >>"$STATE/start-samples.txt"
  case "$s" in active\|* | failed\|*) return 0 ;; esac
  return 1
}
E2E_POLL=30 eventually started
wait "$first"
check "the first connection starts the service and is answered ($(cat "$STATE/first.txt"))" \
  grep -q '^hello from worker [0-3] ' "$STATE/first.txt"
check "ActiveState=activating while the workers start, with a 'starting:' status" \
  grep -q '^activating|starting: [0-3]/4 workers ready' "$STATE/start-samples.txt"
check "ActiveState=active only after READY=1 (all 4 workers ready)" \
  sh -c '! grep "^active|" "$1" | grep -vq "|4/4 workers ready"' sh "$STATE/start-samples.txt"
check "the service is active" test "$(prop ActiveState)" = active

# ------------------------------------------------------------ 3. round robin, status line
served_by 8 >"$STATE/rr.txt"
check "8 requests go round-robin over the 4 workers ($(awk '{ printf "%s ", $1 }' "$STATE/rr.txt"))" \
  round_robin "$STATE/rr.txt"
check "StatusText: '4/4 workers ready · 9 connections · 0 restarts'" \
  eventually status_matches '^4/4 workers ready · 9 connections · 0 restarts$'

# ------------------------------------------------------------ 4. journal fields
check "journal: worker-started events with SOCKHERD_APP/WORKER_ID/WORKER_PID, priority 6" \
  test "$(jqj 'select(.SOCKHERD_EVENT == "worker-started" and .SOCKHERD_APP == "app"
               and (.SOCKHERD_WORKER_ID | test("^[0-3]$")) and (.SOCKHERD_WORKER_PID | test("^[0-9]+$"))
               and .PRIORITY == "6") | .SOCKHERD_WORKER_ID' | sort -u | tr '\n' ' ')" = "0 1 2 3 "
check "journal: worker-ready events for all 4 workers" \
  test "$(jqj 'select(.SOCKHERD_EVENT == "worker-ready") | .SOCKHERD_WORKER_ID' | sort -u | tr '\n' ' ')" = "0 1 2 3 "
check "journal: SOCKHERD_APP is one plain value on every manager entry" \
  test "$(jqj 'select(.SOCKHERD_APP != null) | .SOCKHERD_APP | if type == "string" then . else "ARRAY" end' | sort -u)" = app
check "journal: SYSLOG_IDENTIFIER=app on manager entries" \
  journal_has 'select(.SOCKHERD_EVENT == "worker-started" and .SYSLOG_IDENTIFIER == "app")'
# Worker lines: each worker writes to journal streams it connected itself, so
# journald files every line under the worker's own pid, and
# SYSLOG_IDENTIFIER=app/ID names the worker.
pid_of() { awk -v id="$1" '$1 == id { print $2; exit }' "$STATE/rr.txt"; }
stdout_lines() {
  jqj '. as $e | select(($e.MESSAGE // "" | tostring | test("says hello on stdout")) and .PRIORITY == "6"
        and ($e.MESSAGE | startswith("worker " + ($e.SYSLOG_IDENTIFIER | ltrimstr("app/")) + " ")))
        | "\(.SYSLOG_IDENTIFIER) \(._PID)"' | sort -u
}
check "journal: each worker's stdout line has SYSLOG_IDENTIFIER=app/ID and the worker's own _PID, priority 6" \
  test "$(stdout_lines)" = "$(for i in 0 1 2 3; do echo "app/$i $(pid_of "$i")"; done)"
check "journal: worker stderr lines at priority 3" \
  journal_has 'select((.MESSAGE // "" | tostring | test("says hello on stderr")) and .PRIORITY == "3" and (.SYSLOG_IDENTIFIER | test("^app/[0-3]$")))'
check "journal: no empty entry from the streams' set-up" \
  not journal_has 'select((.SYSLOG_IDENTIFIER // "" | startswith("app/")) and (.MESSAGE // "") == "")'
cx journalctl -u app.service -t app/3 -o cat --no-pager >"$STATE/worker3.txt"
check "journalctl -u app.service -t app/3 shows worker 3's lines only" \
  sh -c 'grep -q "^worker 3 says hello" "$1" && ! grep -q "^worker [012] says" "$1"' sh "$STATE/worker3.txt"

# sockherd logs: the same journal, PM2's way (`ID|app | line`).
cx sockherd logs app -n all >"$STATE/logs-app.txt" 2>&1
logs_all_workers() {
  local i
  for i in 0 1 2 3; do
    grep -qE "^[0-9-]+ [0-9:.]+ +$i\|app +\| worker $i says hello on stdout$" "$1" &&
      grep -qE "^[0-9-]+ [0-9:.]+ +$i\|sockherd +\| worker $i \(pid [0-9]+\) is ready" "$1" || return 1
  done
}
check "sockherd logs app: each worker's lines and the manager's events, with the worker's id" \
  logs_all_workers "$STATE/logs-app.txt"
cx sockherd logs app --worker 1 -n all >"$STATE/logs-w1.txt" 2>&1
logs_worker_1() {
  grep -qE " 1\|app +\| worker 1 says hello on stdout$" "$1" &&
    grep -qE " 1\|app +\| worker 1 says hello on stderr$" "$1" &&
    grep -qE " 1\|sockherd +\| worker 1 \(pid [0-9]+\) is ready" "$1" &&
    ! grep -vqE "^[0-9-]+ [0-9:.]+ +1\|" "$1"
}
check "sockherd logs app --worker 1: worker 1's lines and the manager's events about it, nothing else" \
  logs_worker_1 "$STATE/logs-w1.txt"
logs_none() {
  cx sockherd logs no-such-app >"$1" 2>&1
  test $? = 1 && grep -q '"no-such-app" has no entries in the journal: it does not log there' "$1"
}
check "sockherd logs of an app with no journal entries says it does not log there (exit 1)" \
  logs_none "$STATE/logs-none.txt"
since_bad() { cx sockherd logs app --since "not a time" >/dev/null 2>&1; test $? = 2; }
check "sockherd logs --since garbage is bad input (exit 2)" since_bad
# Follows worker 2 while it crashes (below): its exit and restart appear as they happen.
# From a time before the crash rather than `-n 0`: journalctl may seek to the
# journal's end a moment after it started, and what came in between is missed.
follow_since=$(cx date '+%Y-%m-%d %H:%M:%S')
cx timeout 60 sockherd logs app --worker 2 -f --since "$follow_since" >"$STATE/logs-follow.txt" 2>&1 &
follow=$!
follow_ready() { cx sh -c 'pgrep -f "journalctl .*SYSLOG_IDENTIFIER=app/2" >/dev/null'; }
eventually follow_ready

# ------------------------------------------------------------ 5. a worker crash
victim=$(awk '$1 == 2 { print $2; exit }' "$STATE/rr.txt")
cx kill -KILL "$victim"
check "a SIGKILLed worker is restarted: StatusText counts 1 restart" \
  eventually status_matches '^4/4 workers ready · [0-9]+ connections · 1 restart$'
check "journal: worker-exited with SOCKHERD_EXIT_SIGNAL=9 for pid $victim, a warning (priority 4)" \
  journal_has "select(.SOCKHERD_EVENT == \"worker-exited\" and .SOCKHERD_WORKER_PID == \"$victim\"
                      and .SOCKHERD_EXIT_SIGNAL == \"9\" and .SOCKHERD_EXIT_CODE == null and .PRIORITY == \"4\")"
check "the service itself was not restarted (NRestarts=0)" test "$(prop NRestarts)" = 0
follow_saw_crash() {
  grep -qE " 2\|sockherd +\| worker 2 \(pid $victim\) .*SIGKILL" "$1" &&
    grep -qE " 2\|app +\| worker 2 says hello on stdout$" "$1"
}
check "sockherd logs app --worker 2 -f: worker 2's crash and its new worker's first line, as they happen" \
  eventually follow_saw_crash "$STATE/logs-follow.txt"
kill "$follow" 2>/dev/null
wait "$follow" 2>/dev/null

# ------------------------------------------------------------ 6. reload (SIGHUP)
# SIGHUP starts a reload and does not wait for it, so poll for its end.
# `systemctl reload`, which waits, is section 8.
served_by 4 >"$STATE/before-reload.txt"
old_pids=$(awk '{ print $2 }' "$STATE/before-reload.txt" | sort -u)
: >"$STATE/reload-samples.txt"
cx systemctl kill --kill-who=main -s HUP app.service
reload_done() {
  sample >>"$STATE/reload-samples.txt"
  journal_has 'select(.SOCKHERD_EVENT == "reload-finished" and .SOCKHERD_GENERATION == "2" and .SOCKHERD_OK == "true")' &&
    test "$(prop ActiveState)" = active
}
E2E_POLL=30 check "SIGHUP: the rolling reload to generation 2 finishes (journal reload-finished)" eventually reload_done
check "ActiveState=reloading during the reload (RELOADING=1), with a 'reloading' status" \
  grep -q '^reloading|reloading to generation 2: ' "$STATE/reload-samples.txt"
check "READY=1 at its end: active, StatusText '4/4 workers ready'" \
  eventually status_matches '^4/4 workers ready · '
served_by 8 >"$STATE/after-reload.txt"
new_pids=$(awk '{ print $2 }' "$STATE/after-reload.txt" | sort -u)
all_new() { test "$(echo "$new_pids" | wc -l)" = 4 && test -z "$(comm -12 <(echo "$new_pids") <(echo "$old_pids"))"; }
check "after the reload all 4 workers have new pids" all_new
check "after the reload requests still go round-robin" round_robin "$STATE/after-reload.txt"
check "the old workers drained: journal worker-exited with SOCKHERD_EXIT_CODE=0, priority 6" \
  test "$(for p in $old_pids; do jqj "select(.SOCKHERD_EVENT == \"worker-exited\" and .SOCKHERD_WORKER_PID == \"$p\" and .SOCKHERD_EXIT_CODE == \"0\" and .PRIORITY == \"6\") | .SOCKHERD_WORKER_PID"; done | wc -l)" = 4

# ------------------------------------------------------------ 7. D-Bus and the CLI on the system bus
# The shipped unit runs the manager as root, so `--bus auto` puts it on the
# system bus, where the policy lets root own io.sockherd.*.
owner_pid() {
  cx busctl --json=short call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
    GetConnectionUnixProcessID s io.sockherd.app | jq -r '.data[0]'
}
check "the manager (MainPID) owns io.sockherd.app on the system bus" \
  test "$(owner_pid)" = "$(prop MainPID)"

cx busctl call "${MGR[@]}" Scale u 6 >"$STATE/scale.txt" 2>&1
rc=$?
ready_then=$(mgr_prop ReadyWorkers)
check "busctl call io.sockherd.app ... Scale u 6 (as root) succeeds" test "$rc" = 0
check "Scale returns once the new workers are ready (ReadyWorkers=$ready_then when it returns)" \
  test "$ready_then" = 6
served_by 6 >"$STATE/rr6.txt"
check "requests then reach all 6 workers, round-robin ($(awk '{ printf "%s ", $1 }' "$STATE/rr6.txt"))" \
  round_robin "$STATE/rr6.txt" 6

# Scale-down removes the highest ids. Put a slow request in worker 4: the
# next request after one served by worker 3 goes there.
for _ in 1 2 3 4 5 6; do
  [ "$(get / | sed -nE 's/^hello from worker ([0-9]+) .*/\1/p')" = 3 ] && break
done
pid4=$(workers | awk '$1 == 4 { print $2 }')
conns4=$(conns_of 4)
(cx curl -sS --max-time 30 -w '%{http_code}\n' "http://127.0.0.1:8080/slow?ms=2000" \
  >"$STATE/slow-scale.txt" 2>&1) &
slow=$!
check "a /slow?ms=2000 request is in worker 4 (pid $pid4)" eventually conns_of_is 4 $((conns4 + 1))
t=$(ts)
cx busctl call "${MGR[@]}" ScaleBy i -- -2 >"$STATE/scaleby.txt" 2>&1
rc=$?
took=$(elapsed "$t")
check "ScaleBy i -2 returns the new count ($(cat "$STATE/scaleby.txt"))" \
  test "$rc $(cat "$STATE/scaleby.txt")" = "0 u 4"
check "ScaleBy returns once the removed workers have drained (${took} s; worker 4 has exited)" \
  not alive "$pid4"
wait "$slow"
check "the in-flight slow request in the removed worker got its answer ($(tr '\n' ' ' <"$STATE/slow-scale.txt"))" \
  test "$(cat "$STATE/slow-scale.txt")" = "$(printf 'hello from worker 4 (pid %s)\n200' "$pid4")"
served_by 8 >"$STATE/rr4.txt"
check "requests go round-robin over the 4 remaining workers" round_robin "$STATE/rr4.txt"

# The policy lets anyone send to the manager; the manager itself refuses the
# methods that change something. dbus-send, because busctl does not print
# the error's name.
as_nobody() { cx setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
as_nobody dbus-send --system --print-reply --dest=io.sockherd.app /io/sockherd/Manager \
  io.sockherd.Manager1.Scale uint32:8 >"$STATE/nobody-scale.txt" 2>&1
rc=$?
denied() { test "$rc" != 0 && grep -q '^Error io.sockherd.Error.AccessDenied: uid 65534 may not call Scale(8)' "$1"; }
check "nobody (uid 65534) calling Scale gets io.sockherd.Error.AccessDenied" denied "$STATE/nobody-scale.txt"
check "... and nothing changed (Workers=4)" test "$(mgr_prop Workers)" = 4
check "journal: the refusal is logged (dbus-denied, priority 4)" \
  eventually journal_has 'select(.SOCKHERD_EVENT == "dbus-denied" and .PRIORITY == "4" and (.MESSAGE // "" | tostring | test("uid 65534")))'
check "nobody can read ReadyWorkers (busctl get-property: u 4)" \
  test "$(as_nobody busctl get-property "${MGR[@]}" ReadyWorkers)" = "u 4"

cx sockherd status >"$STATE/cli-status.txt" 2>&1
check "sockherd status (system bus) lists the app" \
  grep -qE '^app \(io\.sockherd\.app\): running, 4/4 workers ready, generation 2, ' "$STATE/cli-status.txt"
cx sockherd status app >"$STATE/cli-status-app.txt" 2>&1
table_ok() {
  grep -qE '^id +pid +state +↺ +cpu +mem +connections +uptime$' "$1" &&
    test "$(grep -cE '^[0-3] +[0-9]+ +ready +[0-9]+ +[0-9.]+% +[0-9.]+[KMG]iB +[0-9]+ +[0-9]+[smhd]' "$1")" = 4
}
check "sockherd status app shows the workers table (id pid state ↺ cpu mem connections uptime)" \
  table_ok "$STATE/cli-status-app.txt"

# ------------------------------------------------------------ 8. systemctl reload, under load
# ExecReload= calls Reload() through `sockherd reload`, which returns when the
# reload has finished: so must `systemctl reload`. Checked right when it
# returns, without polling.
gen_before=$(mgr_prop Generation)
pids_before=$(ready_pids)
reload_now() {
  cx systemctl reload app.service 2>"$STATE/reload.err"
  reload_rc=$?
  gen_then=$(mgr_prop Generation)
  pids_then=$(ready_pids)
  state_then=$(prop ActiveState)
}
under_load reload reload_now
check "systemctl reload app.service succeeds" test "$reload_rc" = 0
check "when it returns, Generation is bumped ($gen_before -> $gen_then)" test "$gen_then" = $((gen_before + 1))
check "when it returns, all 4 ready workers are new" \
  test "$(echo "$pids_then" | wc -l) $(comm -12 <(echo "$pids_then") <(echo "$pids_before") | wc -l)" = "4 0"
check "when it returns, the unit is active" test "$state_then" = active
check "journal: the manager logged reload-finished for generation $gen_then" \
  eventually journal_has "select(.SOCKHERD_EVENT == \"reload-finished\" and .SOCKHERD_GENERATION == \"$gen_then\")"
check "no request failed during the reload ($sent sent, $failed failed, $refused refused)" \
  test "$sent" -ge 30 -a "$failed" = 0

# ------------------------------------------------------------ 9. a reload that fails
# New code that cannot start: with the flag file, worker.sh hangs before
# ready, the manager gives up on it after --ready-timeout 5s, and the reload
# fails. `systemctl reload` must say so, and the old workers keep serving.
gen_before=$gen_then
pids_before=$pids_then
cx touch /run/sockherd-e2e-hang
under_load failed-reload reload_now
cx rm -f /run/sockherd-e2e-hang
check "systemctl reload fails (exit status $reload_rc) when the new workers cannot become ready" \
  test "$reload_rc" != 0
check "the generation stays $gen_before" test "$gen_then" = "$gen_before"
check "the same 4 workers are ready (pids unchanged)" test "$pids_then" = "$pids_before"
check "the unit stays active" test "$state_then" = active
check "journal: ExecReload= (busctl Reload) gave the reason: not ready within 5s" \
  eventually journal_has 'select(.MESSAGE // "" | tostring | test("reload failed: .*not ready within 5s"))'
check "no request failed during the failed reload ($sent sent, $failed failed, $refused refused)" \
  test "$sent" -ge 30 -a "$failed" = 0
check "StatusText says the reload failed and which generation still serves" \
  status_matches "reload to generation $((gen_before + 1)) failed, generation $gen_before still serving"
check "journal: reload-finished with SOCKHERD_OK=false, an error (priority 3)" \
  eventually journal_has "select(.SOCKHERD_EVENT == \"reload-finished\" and .SOCKHERD_GENERATION == \"$((gen_before + 1))\"
                      and .SOCKHERD_OK == \"false\" and .PRIORITY == \"3\")"
only_old_left() { test "$(workers | awk '{ print $2 }' | sort)" = "$pids_before"; }
check "the hung new worker is gone; only the old workers are left" eventually only_old_left

# ------------------------------------------------------------ 9b. re-exec in place
# The manager execs the binary at its own path again (/usr/local/bin/sockherd,
# a copy in the container) as the same process, keeping its workers and
# sockets: by SIGUSR2 under load, five times in a row; into a stamped copy of
# the binary ("another build") with `sockherd upgrade`; and into files it must
# refuse. The CLI runs from /opt/sockherd, so that it works while
# /usr/local/bin/sockherd is made unrunnable.
CLI=/opt/sockherd/sockherd
crate_version=$(awk -F'"' '/^version = / { print $2; exit }' "$ROOT/Cargo.toml")
version0=$(cx "$CLI" --version | sed 's/^sockherd //')
# A string property without busctl's quotes.
mgr_str() { mgr_prop "$1" | sed -E 's/^"(.*)"$/\1/'; }
mgr_str_is() { test "$(mgr_str "$1")" = "$2"; }
events() { jqj "select(.SOCKHERD_EVENT == \"$1\") | \"x\"" | wc -l; }
# Connections dispatched, summed over the workers (ListWorkers' counters).
dispatched() { workers | awk '{ s += $4 } END { print s + 0 }'; }
watchdog_fired() { cx journalctl -u app.service --no-pager -o cat | grep -q "Watchdog timeout"; }
main_pid=$(prop MainPID)
pids_before=$(ready_pids)
nrestarts=$(prop NRestarts)
image0=$(mgr_prop ImageStartedUsec)
done0=$(events reexec-done)
failed0=$(events reexec-failed)
check "Version is the binary's own ($version0), ImageStartedUsec is set ($image0)" \
  test "$(mgr_str Version)" = "$version0" -a "${image0:-0}" -gt 0
check "the binary's version is the crate's, without a label ($version0)" test "$version0" = "$crate_version"

# (a) SIGUSR2, 5 times in a row under load; ActiveState sampled throughout.
: >"$STATE/reexec-samples.txt"
usr2_done() { sample >>"$STATE/reexec-samples.txt"; test "$(events reexec-done)" -ge "$1"; }
usr2_times() {
  local i
  for i in $(seq 1 "$1"); do
    cx systemctl kill --kill-who=main -s USR2 app.service || return 1
    E2E_POLL=30 eventually usr2_done $((done0 + i)) || return 1
  done
}
conns_then=$(dispatched)
under_load reexec-usr2 usr2_times 5
check "SIGUSR2 5 times: 5 re-execs done (journal: reexec-done)" test "$rc" = 0 -a "$(events reexec-done)" = $((done0 + 5))
log "ActiveState while re-executing: $(cut -d'|' -f1 "$STATE/reexec-samples.txt" | sort | uniq -c | tr -s ' ' | paste -sd,)"
check "ActiveState stayed active throughout (or reloading, between RELOADING=1 and READY=1)" \
  sh -c 'test -s "$1" && ! grep -vqE "^(active|reloading)\|" "$1"' sh "$STATE/reexec-samples.txt"
check "the manager kept its PID (MainPID $main_pid)" test "$(prop MainPID)" = "$main_pid"
check "the same 4 worker processes are ready (pids unchanged)" test "$(ready_pids)" = "$pids_before"
check "no restart counted (NRestarts=$nrestarts)" test "$(prop NRestarts)" = "$nrestarts"
check "no request failed across the re-execs ($sent sent, $failed failed, $refused refused)" \
  test "$sent" -ge 30 -a "$failed" = 0
check "the connection counters continued ($conns_then dispatched before, $(dispatched) after $sent more)" \
  test "$(dispatched)" -ge $((conns_then + sent))
check "ImageStartedUsec moved on ($image0 -> $(mgr_prop ImageStartedUsec))" \
  test "$(mgr_prop ImageStartedUsec)" -gt "$image0"
check "the manager still owns io.sockherd.app" test "$(owner_pid)" = "$main_pid"
check "journal: reexec 're-executing /usr/local/bin/sockherd: $version0 → $version0', priority 6" \
  journal_has "select(.SOCKHERD_EVENT == \"reexec\" and .PRIORITY == \"6\"
                      and .MESSAGE == \"re-executing /usr/local/bin/sockherd: $version0 → $version0\")"
took_ms() { jqj 'select(.SOCKHERD_EVENT == "reexec-done") | .MESSAGE' | sed -nE 's/.* in ([0-9]+) ms, .*/\1/p'; }
log "re-exec times the new image logged (ms): $(took_ms | tail -5 | paste -sd' ')"
check "journal: reexec-done 're-executed: $version0 → $version0 in N ms, 4 workers kept', priority 6" \
  journal_has "select(.SOCKHERD_EVENT == \"reexec-done\" and .PRIORITY == \"6\"
                      and (.MESSAGE | test(\"^re-executed: .* → .* in [0-9]+ ms, 4 workers kept$\")))"
check "the watchdog did not fire (WatchdogSec=3s; no 'Watchdog timeout')" not watchdog_fired

# (b) Another build on disk, then `sockherd upgrade app`, under load.
cx sh -c 'cat >/usr/local/lib/sockherd/stamp-build.sh' <"$ROOT/scripts/stamp-build.sh"
cx bash /usr/local/lib/sockherd/stamp-build.sh "$CLI" e2e-2 /usr/local/bin/sockherd >"$STATE/stamp.txt" 2>&1
check "scripts/stamp-build.sh replaces /usr/local/bin/sockherd with a copy labelled e2e-2 ($(cat "$STATE/stamp.txt"))" \
  test "$(cx /usr/local/bin/sockherd --version)" = "sockherd $crate_version (e2e-2)"
upgrade_app() {
  cx "$CLI" upgrade app >"$STATE/upgrade-$1.txt" 2>&1
  upgrade_rc=$?
  version_then=$(mgr_str Version)
}
under_load upgrade upgrade_app b
check "sockherd upgrade app succeeds: $(head -1 "$STATE/upgrade-b.txt")" \
  sh -c 'test "$1" = 0 && grep -qE "^app: $2 → $3 \(e2e-2\) in [0-9]+ ms$" "$4"' \
  sh "$upgrade_rc" "$version0" "$crate_version" "$STATE/upgrade-b.txt"
check "when it returns, Version is '$crate_version (e2e-2)'" test "$version_then" = "$crate_version (e2e-2)"
check "the same manager (MainPID $main_pid) runs the new file (/proc/PID/exe: $(cx readlink "/proc/$main_pid/exe"))" \
  test "$(prop MainPID)" = "$main_pid" -a "$(cx readlink "/proc/$main_pid/exe")" = /usr/local/bin/sockherd
check "... with the same 4 workers" test "$(ready_pids)" = "$pids_before"
check "no request failed during the upgrade ($sent sent, $failed failed, $refused refused)" \
  test "$sent" -ge 30 -a "$failed" = 0
cx sockherd status app >"$STATE/status-reexec.txt" 2>&1
check "sockherd status app: 'manager: $crate_version (e2e-2), image started …'" \
  grep -qE "^ *manager: $crate_version \(e2e-2\), image started " "$STATE/status-reexec.txt"
check "journal: reexec-done '… $version0 → $crate_version (e2e-2) …'" \
  journal_has "select(.SOCKHERD_EVENT == \"reexec-done\" and (.MESSAGE | startswith(\"re-executed: $version0 → $crate_version (e2e-2) in \")))"

# (c) The file on disk is not executable: refused, and the manager serves on.
image_b=$(mgr_prop ImageStartedUsec)
cx chmod a-x /usr/local/bin/sockherd
cx "$CLI" upgrade app >"$STATE/upgrade-noexec.txt" 2>&1
rc=$?
cx chmod 755 /usr/local/bin/sockherd
check "sockherd upgrade app into a file that is not executable: exit 1 ($(head -1 "$STATE/upgrade-noexec.txt"))" \
  sh -c 'test "$1" = 1 && grep -qiE "^sockherd: (io\.sockherd\.)?app: .*(executable|permission)" "$2"' sh "$rc" "$STATE/upgrade-noexec.txt"
refused_alike() {
  mgr_str_is Version "$crate_version (e2e-2)" && test "$(mgr_prop ImageStartedUsec)" = "$image_b" &&
    test "$(prop MainPID) $(prop ActiveState)" = "$main_pid active" && test "$(ready_pids)" = "$pids_before"
}
check "... the manager keeps serving on its old code (same image, same PID and workers, active)" refused_alike
check "... requests are answered by the same 4 workers" \
  test "$(served_by 8 | awk '{ print $2 }' | sort -u)" = "$pids_before"

# (d) A binary that refuses the state (its __reexec-check fails).
cx sh -c 'printf "#!/bin/sh\necho \"this build cannot read state version \$2\" >&2\nexit 3\n" >/usr/local/bin/.sockherd.new &&
  chmod 755 /usr/local/bin/.sockherd.new && mv -f /usr/local/bin/.sockherd.new /usr/local/bin/sockherd'
cx "$CLI" upgrade app >"$STATE/upgrade-refused.txt" 2>&1
rc=$?
check "sockherd upgrade app into a binary whose __reexec-check refuses: exit 1 ($(head -1 "$STATE/upgrade-refused.txt"))" \
  sh -c 'test "$1" = 1 && grep -qE "^sockherd: (io\.sockherd\.)?app: .*this build cannot read state version" "$2"' sh "$rc" "$STATE/upgrade-refused.txt"
check "... the manager keeps serving on its old code (same image, same PID and workers, active)" refused_alike
check "journal: reexec-failed 'cannot re-execute /usr/local/bin/sockherd: …; still serving on $crate_version (e2e-2)' twice, priority 4" \
  test "$(jqj "select(.SOCKHERD_EVENT == \"reexec-failed\" and .PRIORITY == \"4\"
                      and (.MESSAGE | test(\"^cannot re-execute /usr/local/bin/sockherd: .*; still serving on $crate_version \\\\(e2e-2\\\\)$\")))
               | \"x\"" | wc -l)" = $((failed0 + 2))

# (e) During a reload a re-exec is refused (Busy); `sockherd upgrade` retries
# it until the reload is over. The reload hangs (the flag file) and fails after
# the 5 s ready timeout; the upgrade puts the original binary back.
cx sh -c 'cp /opt/sockherd/sockherd /usr/local/bin/.sockherd.new && mv -f /usr/local/bin/.sockherd.new /usr/local/bin/sockherd'
cx touch /run/sockherd-e2e-hang
cx systemctl reload app.service 2>/dev/null &
reload_job=$!
E2E_POLL=10 eventually status_matches '^reloading to generation '
cx dbus-send --system --print-reply --dest=io.sockherd.app /io/sockherd/Manager \
  io.sockherd.Manager1.Reexec >"$STATE/reexec-busy.txt" 2>&1
check "Reexec during a reload: io.sockherd.Error.Busy ($(head -1 "$STATE/reexec-busy.txt"))" \
  grep -q '^Error io.sockherd.Error.Busy' "$STATE/reexec-busy.txt"
t=$(ts)
cx "$CLI" upgrade app >"$STATE/upgrade-busy.txt" 2>&1
rc=$?
took=$(elapsed "$t")
wait "$reload_job"
cx rm -f /run/sockherd-e2e-hang
check "sockherd upgrade app during the reload waits for it and succeeds (${took} s: $(head -1 "$STATE/upgrade-busy.txt"))" \
  test "$rc" = 0
check "... back on the original build: Version '$version0', same PID and workers" \
  test "$(mgr_str Version) $(prop MainPID) $(ready_pids | paste -sd,)" = "$version0 $main_pid $(echo "$pids_before" | paste -sd,)"
check "through all of it: no restart counted, no watchdog timeout, active" \
  test "$(prop NRestarts) $(prop ActiveState)" = "$nrestarts active" -a -z "$(watchdog_fired && echo fired)"

# ------------------------------------------------------------ 10. systemctl restart, under load
# The manager drains and a new one starts; systemd keeps the listening socket,
# so connections made meanwhile wait in its backlog and are answered.
main_before=$(prop MainPID)
under_load restart cx systemctl restart app.service
check "systemctl restart app.service succeeds" test "$rc" = 0
check "a new manager serves (MainPID $main_before -> $(prop MainPID))" \
  test "$(prop MainPID)" != "$main_before" -a "$(prop ActiveState)" = active
check "no connection was refused or failed during the restart ($sent sent, $failed failed, $refused refused)" \
  test "$sent" -ge 30 -a "$failed" = 0 -a "$refused" = 0
check "some waited for the new manager and were answered ($waited took 0.5 s or more)" test "$waited" -ge 1

# ------------------------------------------------------------ 11. watchdog
main_pid=$(prop MainPID)
worker_pids=$(ready_pids)
# Counted from here, whatever the manual restart above did to it.
nrestarts=$(prop NRestarts)
log "SIGSTOP to the manager (pid $main_pid); WatchdogSec=3s"
cx kill -STOP "$main_pid"
queued=()
for i in 1 2 3; do
  (get / 40 >"$STATE/queued-$i.txt" 2>&1; echo $? >"$STATE/queued-$i.rc") &
  queued+=($!)
done
E2E_POLL=30 check "the hung manager is killed by the watchdog and restarted (NRestarts=$((nrestarts + 1)))" \
  eventually prop_is NRestarts $((nrestarts + 1))
restarted() {
  local pid
  pid=$(prop MainPID)
  prop_is ActiveState active && test "$pid" != 0 && test "$pid" != "$main_pid"
}
E2E_POLL=30 check "active again, with a new MainPID" eventually restarted
wait "${queued[@]}"
check "connections made while it hung were queued and answered, none refused" \
  sh -c 'for i in 1 2 3; do test "$(cat "$1/queued-$i.rc")" = 0 && grep -q "^hello from worker" "$1/queued-$i.txt" || exit 1; done' sh "$STATE"
watchdog_logged() { cx journalctl -u app.service --no-pager -o cat | grep -q "Watchdog timeout"; }
check "journal: systemd reported the watchdog timeout" eventually watchdog_logged
# shellcheck disable=SC2086 # a list of pids
check "the hung manager and its workers are gone" none_alive "$main_pid" $worker_pids

# ------------------------------------------------------------ 12. stop drains
served_by 4 >"$STATE/before-stop.txt"
worker_pids=$(awk '{ print $2 }' "$STATE/before-stop.txt" | sort -u)
count() { prop StatusText | sed -nE 's/.* ([0-9]+) connections? .*/\1/p'; }
count_is() { test "$(count)" = "$1"; }
# This manager has had the 3 queued connections and these 4.
check "StatusText counts this manager's 7 connections" eventually count_is 7
before=7
(cx curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:8080/slow?ms=2000" \
  >"$STATE/slow.txt" 2>&1) &
slow=$!
check "the slow request is in a worker (StatusText counts it)" \
  eventually count_is $((before + 1))
: >"$STATE/stop-samples.txt"
t=$(ts)
cx systemctl stop app.socket app.service &
stopping=$!
while kill -0 "$stopping" 2>/dev/null; do sample >>"$STATE/stop-samples.txt"; sleep 0.1; done
wait "$stopping"
stop_rc=$?
took=$(elapsed "$t")
wait "$slow"
check "systemctl stop app.socket app.service succeeds after the drain (${took} s)" test "$stop_rc" = 0
check "the in-flight /slow?ms=2000 request got its answer (HTTP $(cat "$STATE/slow.txt"))" \
  test "$(cat "$STATE/slow.txt")" = 200
check "StatusText said 'stopping: draining workers' during the stop (STOPPING=1)" \
  grep -q '|stopping: draining workers' "$STATE/stop-samples.txt"
check "the manager exited cleanly (Result=success, status 0)" \
  test "$(prop Result) $(prop ExecMainStatus)" = "success 0"
check "journal: shutdown-finished" journal_has 'select(.SOCKHERD_EVENT == "shutdown-finished")'
# shellcheck disable=SC2086 # a list of pids
check "no worker process is left" none_alive $worker_pids
check "the unit's cgroup is gone" test -z "$(prop ControlGroup)"
check "both units inactive" \
  test "$(cx systemctl is-active app.socket) $(cx systemctl is-active app.service)" = "inactive inactive"
port_closed() { ! get / 3 2>/dev/null; }
check "the port is closed" port_closed

# ------------------------------------------------------------ 13. logs: 50,000 lines/s, none lost
# The units `sockherd unit` writes (its journald rate limit included) for an
# app of 2 chatty workers, each writing 25,000 numbered lines per second for
# 5 s once ready: every number must be in the journal once, in order.
check "sockherd unit writes logs.socket and logs.service" \
  cx sockherd unit logs --listen 8090 --workers 2 --sockherd /usr/local/bin/sockherd \
  --output /etc/systemd/system -- /usr/local/lib/sockherd/chatty --lines 25000 5
cx systemctl daemon-reload
check "systemctl start logs.service" cx systemctl start logs.service
logs_main=$(prop MainPID logs.service)
logs_cpu_before=$(cx awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$logs_main/stat")
t=$(ts)
last_line_is() { test "$(cx journalctl -u logs.service -t "logs/$1" -n 1 -o cat --no-pager)" = "$2"; }
logs_done() { last_line_is 0 "worker 0 done 125000" && last_line_is 1 "worker 1 done 125000"; }
E2E_POLL=90 check "both workers wrote their 125,000 lines (journal: 'worker N done 125000')" eventually logs_done
took=$(elapsed "$t")
logs_cpu=$(( $(cx awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$logs_main/stat") - logs_cpu_before ))
log "250,000 lines in the journal ${took} s after start; the manager used $((logs_cpu * 10)) ms of CPU meanwhile"
# in_order ID: worker ID's lines are `worker ID line 0` … `line 124999`, each once.
in_order() {
  cx journalctl -u logs.service -t "logs/$1" -o cat --no-pager |
    awk -v id="$1" '$1 == "worker" && $2 == id && $3 == "line" { if ($4 != want) { bad = 1; exit } want++ }
                   END { exit bad || want != 125000 }'
}
check "journal: worker 0's 125,000 numbered lines, each once and in order" in_order 0
check "journal: worker 1's 125,000 numbered lines, each once and in order" in_order 1
logs_workers() {
  cx busctl --json=short call io.sockherd.logs /io/sockherd/Manager io.sockherd.Manager1 ListWorkers |
    jq -r '.data[0][] | "logs/\(.[0]) \(.[1])"' | sort
}
logs_pids() {
  for i in 0 1; do
    cx journalctl -u logs.service -t "logs/$i" -n 1 -o json --no-pager | jq -r '"\(.SYSLOG_IDENTIFIER) \(._PID)"'
  done
}
check "journal: the lines carry each worker's own _PID" test "$(logs_pids)" = "$(logs_workers)"
journald_suppressed() { cx journalctl -t systemd-journald -o cat --no-pager | grep -q "Suppressed"; }
check "journald suppressed nothing (LogRateLimitBurst= of the generated unit)" not journald_suppressed
check "systemctl stop logs.socket logs.service" cx systemctl stop logs.socket logs.service

# A worker that dies at once: its last words are still filed under the unit.
cx systemd-run --quiet --unit=crashy /usr/local/bin/sockherd serve --name crashy --workers 1 \
  --max-restarts 3 --listen 127.0.0.1:8091 -- /bin/sh -c 'echo crash at start >&2; exit 1'
crash_lines() { cx journalctl "$@" -o cat --no-pager | grep -c "^crash at start$"; }
crashy_gave_up() { test "$(prop ActiveState crashy.service)" != active; }
E2E_POLL=60 check "a worker that crashes at start: the manager gives up after 4 starts" eventually crashy_gave_up
check "journal: all 4 crash lines are under -u crashy.service (as many as under -t crashy/0)" \
  test "$(crash_lines -u crashy.service) $(crash_lines -t crashy/0)" = "4 4"
cx systemctl reset-failed crashy.service 2>/dev/null

# A worker that cannot connect its own streams keeps its pipes to the
# manager, which forwards its lines with SOCKHERD_* fields.
check "a manager whose workers cannot reach /run/systemd/journal/stdout starts (Type=notify)" \
  cx systemd-run --quiet --unit=app-fallback -p Type=notify -p NotifyAccess=main \
  -p InaccessiblePaths=/run/systemd/journal/stdout \
  /usr/local/bin/sockherd serve --name fallback --workers 2 --listen 127.0.0.1:8092 \
  -- /usr/local/lib/sockherd/e2e-worker
forwarded_ids() {
  UNIT=app-fallback.service jqj 'select((.MESSAGE // "" | tostring | test("says hello on stdout")) and .PRIORITY == "6"
        and .SOCKHERD_STREAM == "stdout" and (.SOCKHERD_WORKER_PID | test("^[0-9]+$"))
        and .SYSLOG_IDENTIFIER == ("fallback/" + .SOCKHERD_WORKER_ID)) | .SOCKHERD_WORKER_ID' | sort -u | tr '\n' ' '
}
forwarded() { test "$(forwarded_ids)" = "0 1 "; }
check "... its workers' lines reach the journal through the manager, with SOCKHERD_WORKER_ID/PID/STREAM" \
  eventually forwarded
check "... stops cleanly" cx systemctl stop app-fallback.service

# ------------------------------------------------------------ 14. bad input under systemd
# No journal socket (hidden from the unit), --log journal, and a garbage
# WATCHDOG_USEC: warnings on stderr (which systemd sends to the journal),
# and the service still starts and serves.
check "a manager with no journal socket and WATCHDOG_USEC=garbage starts (Type=notify)" \
  cx systemd-run --quiet --unit=app-degraded -p Type=notify -p NotifyAccess=main \
  -p InaccessiblePaths=/run/systemd/journal/socket -p Environment=WATCHDOG_USEC=garbage \
  /usr/local/bin/sockherd serve --name degraded --log journal --workers 1 \
  --listen 127.0.0.1:8081 -- /usr/local/lib/sockherd/hello
serves_8081() { cx curl -sS --max-time 10 http://127.0.0.1:8081/ | grep -q "^hello from worker 0"; }
check "... and serves" serves_8081
UNIT=app-degraded.service
check "... warning: cannot log to the journal, logging to stderr" \
  eventually journal_has 'select(.MESSAGE // "" | tostring | test("cannot log to the journal"))'
check "... warning: WATCHDOG_USEC=\"garbage\"" \
  eventually journal_has 'select(.MESSAGE // "" | tostring | test("WATCHDOG_USEC=\"garbage\""))'
unset UNIT
check "... stops cleanly" cx systemctl stop app-degraded.service

check "no failed units in the container" test -z "$(cx systemctl list-units --failed --plain --no-legend)"

# ------------------------------------------------------------ 15. teardown
finish_suite "$E2E_ROOTFS/etc/systemd/system/app.service"
