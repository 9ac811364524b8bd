#!/usr/bin/env bash
# package.sh: the Debian package on a clean Debian 12, under a real systemd.
#
# Builds the .deb twice (revision 1, and revision 2 to upgrade to) with
# packaging/build-deb.sh, which labels each build with its Debian version
# (`sockherd 0.1.0 (0.1.0-2)`), boots a fresh container (systemd 252 as PID
# 1, the harness in lib.sh) and does what a user does: installs the package
# with apt-get, writes units with `sockherd unit --install` for the hello
# example and for a Node.js app, starts them, steers them over D-Bus,
# upgrades the package under load (postinst re-executes both managers in
# place: same PIDs, same workers, the new build's Version), reinstalls it
# with the opt-out in /etc/default/sockherd (nothing re-executed), restarts
# onto the new binary under load, and removes the package.
# docs/packaging.md lists every check.
#
# The container has no network, so apt-get must resolve the package's
# dependencies from what is installed: the .deb depends only on libc6 (found
# by dpkg-shlibdeps) and recommends systemd and dbus, all of which the rootfs
# has. The rootfs is the e2e suite's package set plus
# Debian's nodejs and man-db, built once into its own directory
# (/var/lib/machines/sockherd-pkg-bookworm), so the e2e suite's rootfs stays
# as it is; like it, it boots on a volatile overlay and stays pristine.
#
# Usage (root): tests/e2e/package.sh
#   E2E_NO_BUILD=1   use the .debs of the last run (target/package-test) and
#                    target/release/examples/hello as they are
#   E2E_REQUIRE=1    a host that cannot run the suite is a failure, not a skip
#   E2E_KEEP=1       leave the container running at the end and keep the logs
#   PKG_ROOTFS=DIR   where the rootfs is built once and kept
# Prints PASS:/FAIL: lines, then "N passed, N failed"; exits non-zero on any failure.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_ROOTFS=${PKG_ROOTFS:-/var/lib/machines/sockherd-pkg-bookworm}
E2E_INCLUDE=$E2E_INCLUDE,nodejs,man-db
T0=$(ts)

# ------------------------------------------------------------ 0. the host
[ "$(uname -s)" = Linux ] || skip_suite "not Linux"
[ "$(id -u)" = 0 ] || skip_suite "needs root (systemd-nspawn, cgroups)"
command -v nsenter >/dev/null || skip_suite "no nsenter (util-linux)"
ensure_packages || skip_suite "systemd-nspawn/mmdebstrap missing and cannot be installed"
STATE=$(mktemp -d /tmp/sockherd-pkg.XXXXXX)
SHARE=$STATE/share
mkdir -p "$SHARE"

version=$(awk -F'"' '/^version = / { print $2; exit }' "$ROOT/Cargo.toml")
arch=$(dpkg --print-architecture)
# cargo deb clears target/debian/ of the package's older .debs, so each one
# built is kept here.
DEBS=$ROOT/target/package-test
DEB1=$DEBS/sockherd_${version}-1_$arch.deb
DEB2=$DEBS/sockherd_${version}-2_$arch.deb
if [ -z "${E2E_NO_BUILD:-}" ]; then
  t=$(ts)
  log "packaging/build-deb.sh (revisions 1 and 2), cargo build --release --example hello"
  rm -rf "$DEBS"
  mkdir -p "$DEBS"
  (
    cd "$ROOT" &&
      packaging/build-deb.sh --deb-revision 1 && cp "target/debian/${DEB1##*/}" "$DEBS/" &&
      packaging/build-deb.sh --deb-revision 2 && cp "target/debian/${DEB2##*/}" "$DEBS/" &&
      cargo build --release --locked --example hello
  ) >"$STATE/build.log" 2>&1 || {
    tail -30 "$STATE/build.log"
    echo "FAIL: building the package"
    exit 1
  }
  log "built in $(elapsed "$t") s"
fi
for f in "$DEB1" "$DEB2" "$ROOT/target/release/examples/hello"; do
  [ -e "$f" ] || { echo "FAIL: $f is missing"; exit 1; }
done
cp "$DEB1" "$DEB2" "$ROOT/target/release/examples/hello" "$ROOT/tests/fixtures/node/graceful.js" "$SHARE/"
DEB1=/opt/sockherd/${DEB1##*/}
DEB2=/opt/sockherd/${DEB2##*/}

t=$(ts)
ensure_rootfs || { echo "FAIL: building the rootfs (log: $STATE/bootstrap.log)"; exit 1; }
log "rootfs $E2E_ROOTFS ready in $(elapsed "$t") s"
reap_stale

if [ -z "${E2E_KEEP:-}" ]; then trap teardown EXIT; fi
trap 'exit 130' INT TERM HUP
boot_or_exit "$SHARE"

# ------------------------------------------------------------ helpers
prop() { cx systemctl show -P "$1" "$2"; }
apt_get() { cx env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 "$@"; }
# The body of GET / on PORT.
get() { cx curl -sS --max-time 10 "http://127.0.0.1:$1/"; }
# The distinct pids that answered N requests on PORT (hello: "(pid N)", node: "pid=N").
pids_of() {
  for _ in $(seq 1 "$2"); do get "$1"; done | sed -nE 's/.*pid[= ]([0-9]+).*/\1/p' | sort -u
}
count_is() { test "$(wc -l <<<"$1")" = "$2"; }
not() { ! "$@"; }
# A command's output goes to the log, not between the PASS lines.
quietly() { "$@" >>"$STATE/commands.log" 2>&1; }
n_pids_is() { count_is "$(pids_of "$1" "$2")" "$3"; }
bus() { cx busctl call "io.sockherd.$1" /io/sockherd/Manager io.sockherd.Manager1 "${@:2}"; }
active() { test "$(cx systemctl is-active "$@" | sort -u)" = active; }
# No process of the container runs the sockherd binary or node.
none_running() { ! cx ps -eo comm= | grep -Eq '^(sockherd|node|nodejs|hello)$'; }
exe_of() { cx readlink "/proc/$1/exe"; }
# APP's workers' pids (ListWorkers), sorted; and a property of its manager.
worker_pids() {
  cx busctl --json=short call "io.sockherd.$1" /io/sockherd/Manager io.sockherd.Manager1 ListWorkers |
    jq -r '.data[0][] | .[1]' | sort -n | paste -sd' '
}
mgr_prop() {
  cx busctl get-property "io.sockherd.$1" /io/sockherd/Manager io.sockherd.Manager1 "$2" |
    cut -d' ' -f2- | sed -E 's/^"(.*)"$/\1/'
}
# A client loop inside the container: one new connection per request to PORT,
# one line per request (its HTTP status, 000 when it failed; curl's errors go
# to a file of their own), until /run/load-stop exists.
start_load() {
  cx rm -f /run/load-stop "/run/load-$1.txt" "/run/load-$1.err"
  cx sh -c 'while [ ! -e /run/load-stop ]; do
      curl -sS --max-time 20 -o /dev/null -w "%{http_code}\n" "http://127.0.0.1:$1/" \
        >>"/run/load-$1.txt" 2>>"/run/load-$1.err"
    done' sh "$1" &
  LOAD=$!
  E2E_POLL=10 eventually cx test -s "/run/load-$1.txt"
}
# Stops the loop; sets total and failed to its number of requests and of failures.
stop_load() {
  cx touch /run/load-stop
  wait "$LOAD"
  cx cat "/run/load-$1.txt" >"$STATE/load-$2.txt"
  cx sh -c 'cat "$1" 2>/dev/null' sh "/run/load-$1.err" >"$STATE/load-$2.err"
  read -r total failed < <(awk '{ n++ } $0 != "200" { bad++ } END { print n + 0, bad + 0 }' "$STATE/load-$2.txt")
}

# ------------------------------------------------------------ 1. install
check "a fresh container: no sockherd" not cx test -e /usr/bin/sockherd
apt_get install "$DEB1" >"$STATE/install.log" 2>&1
check "apt-get install ./${DEB1##*/} (offline: the dependencies are in the rootfs)" \
  test "$(cx dpkg-query -W -f='${Status} ${Version}' sockherd)" = "install ok installed $version-1"
check "the package's files are in place" cx test -x /usr/bin/sockherd \
  -a -f /usr/share/dbus-1/system.d/io.sockherd.conf -a -f /usr/lib/sysusers.d/sockherd.conf \
  -a -f /usr/share/man/man1/sockherd.1.gz -a -f /usr/share/man/man1/sockherd-unit.1.gz \
  -a -f /usr/share/bash-completion/completions/sockherd -a -f /usr/share/zsh/vendor-completions/_sockherd \
  -a -f /usr/share/fish/vendor_completions.d/sockherd.fish \
  -a -f /usr/share/doc/sockherd/examples/example.service -a -f /usr/share/doc/sockherd/copyright \
  -a -f /usr/share/doc/sockherd/LICENSE-MIT -a -f /usr/share/doc/sockherd/LICENSE-APACHE
accounts() { cx getent passwd sockherd | grep -q '^sockherd:x:[0-9]*:[0-9]*:sockherd apps:' && cx getent group sockherd >/dev/null; }
check "sysusers.d made the system user and group sockherd" accounts
check "installing started nothing" none_running
cx sh -c 'MANWIDTH=80 man sockherd 2>&1' >"$STATE/man.txt"
check "man sockherd renders (NAME, the commands, EXAMPLES)" \
  sh -c 'grep -q "^NAME" "$1" && grep -q "sockherd-unit(1)" "$1" && grep -q "^EXAMPLES" "$1"' sh "$STATE/man.txt"
unit_page() { cx sh -c 'MANWIDTH=80 man sockherd-unit 2>&1' | grep -q -- '--run-as'; }
check "man sockherd-unit documents --run-as" unit_page
completion() { cx bash -c '. /usr/share/bash-completion/completions/sockherd && complete -p sockherd' | grep -q _sockherd; }
check "bash completion loads and completes sockherd's commands" completion

# ------------------------------------------------------------ 2. units for two apps
cx install -D -m 755 /opt/sockherd/hello /usr/local/lib/sockherd/hello
check "sockherd unit hello --install" \
  quietly cx sockherd unit hello --listen 8080 --workers 2 --install -- /usr/local/lib/sockherd/hello
cx install -D -m 644 /opt/sockherd/graceful.js /srv/nodeapp/app.js
check "sockherd unit nodeapp --install (a Node.js app: -- node app.js)" \
  quietly cx sockherd unit nodeapp --listen 8081 --workers 2 --working-directory /srv/nodeapp \
  --environment PORT=8081 --environment NODE_ENV=production --install -- node app.js
cx sh -c 'cd /etc/systemd/system && cat hello.socket hello.service nodeapp.socket nodeapp.service' >"$STATE/units.txt"
check "the Node.js unit runs /usr/bin/node with MemoryDenyWriteExecute=no" \
  sh -c 'grep -q "^ExecStart=/usr/bin/sockherd serve .* -- /usr/bin/node app.js$" "$1" && grep -q "^MemoryDenyWriteExecute=no$" "$1"' \
  sh "$STATE/units.txt"
refuses_mdwe() { ! cx sockherd unit x --listen 1 --deny-write-execute -- node app.js >/dev/null 2>&1; }
check "sockherd unit refuses --deny-write-execute for node" refuses_mdwe
cx systemd-analyze verify hello.socket hello.service nodeapp.socket nodeapp.service >"$STATE/verify.txt" 2>&1
check "systemd-analyze verify: the generated units are clean" test ! -s "$STATE/verify.txt"
for app in hello nodeapp; do
  cx systemd-analyze security --no-pager "$app.service" >"$STATE/security-$app.txt" 2>&1
  exposure=$(sed -nE "s/.*Overall exposure level for $app.service: ([0-9.]+) (.*)/\1 \2/p" "$STATE/security-$app.txt")
  check "systemd-analyze security $app.service: ${exposure:-?} (OK: below 3.0)" \
    awk -v e="${exposure%% *}" 'BEGIN { exit !(e != "" && e < 3.0) }'
done

# ------------------------------------------------------------ 3. run them
check "systemctl start hello.socket nodeapp.socket" cx systemctl start hello.socket nodeapp.socket
answers() { get "$1" | grep -q "$2"; }
check "the first connection starts hello and is answered" answers 8080 '^hello from worker [01] '
check "hello runs as the package's user sockherd" \
  test "$(cx ps -o user= -p "$(prop MainPID hello.service)")" = sockherd
on_bus() { cx busctl status "io.sockherd.$1" 2>/dev/null | grep -q "^Unit=$1.service"; }
check "hello's manager serves io.sockherd.hello on the system bus" on_bus hello
check "busctl call io.sockherd.hello ... Scale u 3" bus hello Scale u 3
check "requests reach 3 workers" n_pids_is 8080 6 3
cx useradd --create-home --groups sockherd alice
cx useradd --create-home bob
check "alice, in group sockherd, may scale: sockherd scale hello 2" \
  quietly cx runuser -u alice -- sockherd scale hello 2
cx runuser -u bob -- sockherd scale hello 4 >"$STATE/bob.txt" 2>&1
check "bob, not in it, may not: $(head -1 "$STATE/bob.txt")" grep -q "may not call" "$STATE/bob.txt"
status_json() { cx sockherd status hello --json | jq -r '.[0].state, .[0].ready_workers' | tr '\n' ' '; }
check "sockherd status hello shows 2 workers, 'running'" test "$(status_json)" = "running 2 "
before=$(pids_of 8080 4)
check "systemctl reload hello (ExecReload= over D-Bus) succeeds" cx systemctl reload hello.service
after=$(pids_of 8080 4)
all_new() { count_is "$after" 2 && test -z "$(comm -12 <(echo "$before") <(echo "$after"))"; }
check "after the reload both workers are new" all_new
cx journalctl -u hello.service -o cat --no-pager >"$STATE/journal-hello.txt"
journal_says() { grep -qF "$1" "$STATE/journal-hello.txt"; }
check "journalctl -u hello: the manager serves io.sockherd.hello on the system bus" \
  journal_says "D-Bus: serving io.sockherd.hello on the system bus"
check "journalctl -u hello: the D-Bus calls, with who made them" \
  journal_says "D-Bus: Scale(2) from uid $(cx id -u alice) (group sockherd)"
check "journalctl -u hello: worker lines and events" grep -q "worker 2 .* ready" "$STATE/journal-hello.txt"

check "the first connection starts nodeapp and a Node.js worker answers" answers 8081 '^done pid=[0-9]* ms=0$'
check "nodeapp: 2 Node.js workers answer" n_pids_is 8081 4 2
check "sockherd scale nodeapp 3" quietly cx sockherd scale nodeapp 3
check "3 Node.js workers answer" n_pids_is 8081 6 3
check "systemctl reload nodeapp succeeds" cx systemctl reload nodeapp.service
node_ready() { cx journalctl -u nodeapp.service -o json --no-pager | jq -r 'select(.SOCKHERD_EVENT == "worker-ready") | .SOCKHERD_APP' | grep -qx nodeapp; }
check "nodeapp's journal has its workers' ready events" node_ready
# The app (tests/fixtures/node/graceful.js) closes its server in its SIGTERM
# handler and exits 0 once it has: under systemd too, the handler runs with
# the server open, and the drain is reported as one.
node_says() { test "$(cx journalctl -u nodeapp.service -o cat --no-pager | grep -cE "$1")" -ge "$2"; }
check "the 3 old Node.js workers ran their SIGTERM handlers with their servers open" \
  eventually node_says 'SIGTERM handler ran pid=[0-9]+ listening=true$' 3
check "... closed their servers without an error" eventually node_says '^server closed pid=' 3
node_drained() {
  test "$(cx journalctl -u nodeapp.service -o json --no-pager |
    jq -r 'select(.SOCKHERD_EVENT == "worker-exited" and .SOCKHERD_EXIT_CODE == "0" and .PRIORITY == "6") | .SOCKHERD_WORKER_ID' |
    wc -l)" -ge 3
}
check "... and exited 0: worker-exited, priority 6 (drained)" eventually node_drained
check "no Node.js worker's server.close() failed" not node_says 'server.close failed' 1
# Why the Node.js unit leaves MemoryDenyWriteExecute= off: node under it.
node_under() {
  cx systemd-run --quiet --wait --pipe --collect -p "MemoryDenyWriteExecute=$1" \
    /usr/bin/node "${@:2}" -e 'console.log("node ok")' >>"$STATE/mdwe.txt" 2>&1
}
node_under yes
mdwe=$?
check "node does not start under MemoryDenyWriteExecute=yes (exit $mdwe): the unit must leave it off" \
  test "$mdwe" != 0
check "... and starts without it" node_under no
check "... node --jitless does start under it (what --deny-write-execute allows)" node_under yes --jitless

# ------------------------------------------------------------ 4. upgrade under load
# postinst re-executes every running manager (`sockherd upgrade`): each one
# keeps its PID and its workers and goes on as the new build.
v1="$version ($version-1)"
v2="$version ($version-2)"
check "hello's manager is revision 1's build (Version '$(mgr_prop hello Version)')" \
  test "$(mgr_prop hello Version)" = "$v1"
declare -A mains wpids nrs
for app in hello nodeapp; do
  mains[$app]=$(prop MainPID "$app.service")
  wpids[$app]=$(worker_pids "$app")
  nrs[$app]=$(prop NRestarts "$app.service")
done
start_load 8080
log "load on :8080 (pid $LOAD); apt-get install ${DEB2##*/}"
apt_get install "$DEB2" >"$STATE/upgrade.log" 2>&1
check "apt-get install ./${DEB2##*/}: upgraded while hello serves" \
  test "$(cx dpkg-query -W -f='${Version}' sockherd)" = "$version-2"
sleep 1
stop_load 8080 upgrade
check "no request failed during the upgrade ($total requests, $failed failed)" \
  test "$failed" = 0 -a "$total" -gt 0
for app in hello nodeapp; do
  said=$(grep -E "^$app: " "$STATE/upgrade.log" | head -1)
  check "postinst re-executed $app's manager ($said)" \
    grep -qE "^$app: $version \($version-1\) → $version \($version-2\) in [0-9]+ ms$" "$STATE/upgrade.log"
  check "... $app: the same manager (MainPID ${mains[$app]}), now running the new /usr/bin/sockherd ($(exe_of "${mains[$app]}"))" \
    test "$(prop MainPID "$app.service") $(exe_of "${mains[$app]}")" = "${mains[$app]} /usr/bin/sockherd"
  check "... $app: Version '$v2'" test "$(mgr_prop "$app" Version)" = "$v2"
  check "... $app: the same workers (${wpids[$app]})" test "$(worker_pids "$app")" = "${wpids[$app]}"
  check "... $app: active, no restart counted (NRestarts=${nrs[$app]})" \
    test "$(prop ActiveState "$app.service") $(prop NRestarts "$app.service")" = "active ${nrs[$app]}"
done
check "... and hello answers from those workers" \
  test "$(pids_of 8080 4 | paste -sd' ')" = "$(tr ' ' '\n' <<<"${wpids[hello]}" | sort | paste -sd' ')"
check "postinst warned about nothing" not grep -q "sockherd: warning" "$STATE/upgrade.log"
cx journalctl -u hello.service -o cat --no-pager >"$STATE/journal-hello.txt"
check "journalctl -u hello: 're-executed: $v1 → $v2 in N ms, 2 workers kept'" \
  grep -qE "^re-executed: $version \($version-1\) → $version \($version-2\) in [0-9]+ ms, 2 workers kept$" \
  "$STATE/journal-hello.txt"

# The opt-out: a reinstall runs postinst as an upgrade does (configure, with
# the version it replaces), and with SOCKHERD_REEXEC_ON_UPGRADE=no it says so
# and re-executes nothing.
image=$(mgr_prop hello ImageStartedUsec)
cx sh -c 'printf "# written by the package test\nSOCKHERD_REEXEC_ON_UPGRADE=no\n" >/etc/default/sockherd'
apt_get install --reinstall "$DEB2" >"$STATE/optout.log" 2>&1
optout_said() { grep -q "SOCKHERD_REEXEC_ON_UPGRADE=no in /etc/default/sockherd" "$1" && ! grep -qE "^(hello|nodeapp): " "$1"; }
check "reinstalled with SOCKHERD_REEXEC_ON_UPGRADE=no in /etc/default/sockherd: postinst says so and re-executes nothing" \
  optout_said "$STATE/optout.log"
check "... hello's image is the same (ImageStartedUsec $image), same MainPID" \
  test "$(mgr_prop hello ImageStartedUsec) $(prop MainPID hello.service)" = "$image ${mains[hello]}"
cx rm -f /etc/default/sockherd
start_load 8080
log "systemctl restart hello.service under load"
check "systemctl restart hello.service" cx systemctl restart hello.service
main2=$(prop MainPID hello.service)
sleep 1
stop_load 8080 restart
check "no request failed during the restart: they waited in the socket ($total requests, $failed failed)" \
  test "$failed" = 0 -a "$total" -gt 0
check "the new manager (pid $main2) runs the new binary" \
  test "$main2" != "${mains[hello]}" -a "$(exe_of "$main2")" = /usr/bin/sockherd
check "... and owns its D-Bus name again" bus hello Scale u 2

# ------------------------------------------------------------ 5. remove
apt_get remove sockherd >"$STATE/remove.log" 2>&1
check "apt-get remove sockherd" test "$(cx dpkg-query -W -f='${Status}' sockherd 2>/dev/null)" != "install ok installed"
check "removal stopped the apps that run the binary (said so)" \
  grep -q "stopping the apps that run /usr/bin/sockherd" "$STATE/remove.log"
check "both apps and their sockets are inactive" \
  test "$(cx systemctl is-active hello.socket hello.service nodeapp.socket nodeapp.service | sort -u)" = inactive
check "nothing runs: no manager, no worker" none_running
closed() { ! get 8080 2>/dev/null && ! get 8081 2>/dev/null; }
check "the ports are closed" closed
check "the administrator's units stay in /etc/systemd/system" \
  cx test -f /etc/systemd/system/hello.service -a -f /etc/systemd/system/nodeapp.socket
check "the binary, bus policy and man pages are gone" \
  cx test ! -e /usr/bin/sockherd -a ! -e /usr/share/dbus-1/system.d/io.sockherd.conf \
  -a ! -e /usr/share/man/man1/sockherd.1.gz
apt_get install "$DEB2" >"$STATE/reinstall.log" 2>&1
check "reinstalled: systemctl start hello.socket" cx systemctl start hello.socket
check "... and it serves again, as it was" answers 8080 '^hello from worker'
check "no unit in the container has failed" test -z "$(cx systemctl list-units --failed --plain --no-legend)"

# ------------------------------------------------------------ 6. teardown
finish_suite "$E2E_ROOTFS/usr/bin/sockherd"
