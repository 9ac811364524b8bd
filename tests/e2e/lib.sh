# lib.sh: helpers for run.sh. Boots a real systemd (PID 1) in a
# systemd-nspawn container on a host whose PID 1 need not be systemd, runs
# commands in it, and tears it down leaving nothing behind.
#
# The recipe (cgroup scope made by hand, --register=no --keep-unit,
# --volatile=overlay, nsenter into the leader) is the one proven in
# /work/shared/systemd-container; see docs/systemd.md.
# shellcheck shell=bash

E2E_ROOTFS=${E2E_ROOTFS:-/var/lib/machines/sockherd-e2e-bookworm}
# What the rootfs holds besides minbase: systemd itself, the bus, and the
# tools the checks use inside (curl, kill, jq).
E2E_INCLUDE=systemd,systemd-sysv,dbus,curl,procps,jq
E2E_MACHINE=sockherd-e2e-$$
# Hybrid host (name=systemd v1 + cgroup2 at unified/) or pure cgroup2 host.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  CG_DIRS="/sys/fs/cgroup/$E2E_MACHINE.scope"
else
  CG_DIRS="/sys/fs/cgroup/systemd/$E2E_MACHINE.scope /sys/fs/cgroup/unified/$E2E_MACHINE.scope"
fi
NSPAWN_PID=
LEADER=
npass=0
nfail=0

ts() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(ts)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "--- $*"; }
pass() { echo "PASS: $*"; npass=$((npass + 1)); }
fail() { echo "FAIL: $*"; nfail=$((nfail + 1)); }
# check DESCRIPTION CMD...: one PASS/FAIL line from a command's exit status.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
# eventually CMD...: retry for up to $E2E_POLL seconds (default 15), 0.1 s apart.
eventually() {
  local deadline
  deadline=$(awk -v n="${E2E_POLL:-15}" -v t="$(ts)" 'BEGIN { printf "%.1f", t + n }')
  until "$@"; do
    awk -v d="$deadline" -v t="$(ts)" 'BEGIN { exit !(t > d) }' && return 1
    sleep 0.1
  done
}

skip_suite() {
  echo
  echo "################################################################"
  echo "SKIPPED: sockherd e2e suite: $*"
  echo "################################################################"
  [ -n "${E2E_REQUIRE:-}" ] && exit 1
  exit 0
}

# Run a command inside all of the container's namespaces, clean environment.
cx() {
  nsenter -t "$LEADER" -a -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TERM=dumb LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

# Installs systemd-nspawn and mmdebstrap if missing. The systemd-container
# version is pinned to the installed systemd, so the host's systemd and
# libsystemd are never upgraded as a side effect.
ensure_packages() {
  command -v systemd-nspawn >/dev/null && command -v mmdebstrap >/dev/null && return 0
  command -v apt-get >/dev/null || return 1
  log "installing systemd-container and mmdebstrap"
  apt-get update -qq >/dev/null || return 1
  local v
  v=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "systemd-container=$v" mmdebstrap >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      systemd-container mmdebstrap >/dev/null
}

# Builds the bookworm rootfs once and keeps it; the container boots it with
# --volatile=overlay, so it stays pristine. Concurrent runs wait on a lock.
ensure_rootfs() {
  mkdir -p "$(dirname "$E2E_ROOTFS")"
  (
    flock 9
    [ -e "$E2E_ROOTFS/.sockherd-e2e-ready" ] && exit 0
    local mirror
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
    log "mmdebstrap bookworm -> $E2E_ROOTFS (once)"
    rm -rf "$E2E_ROOTFS.tmp" "$E2E_ROOTFS"
    mmdebstrap --quiet --mode=root --variant=minbase --include="$E2E_INCLUDE" \
      bookworm "$E2E_ROOTFS.tmp" ${mirror:+"$mirror"} >"$STATE/bootstrap.log" 2>&1 || {
      tail -20 "$STATE/bootstrap.log"
      exit 1
    }
    local r=$E2E_ROOTFS.tmp u
    echo sockherd-e2e >"$r/etc/hostname"
    # An empty machine-id means "first boot": systemd-firstboot would prompt.
    [ -s "$r/etc/machine-id" ] || systemd-id128 new >"$r/etc/machine-id"
    rm -f "$r"/var/cache/apt/archives/*.deb
    # Nothing in the container should wake up on its own (or prompt) during tests.
    for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
      fstrim.timer e2scrub_reap.service systemd-pstore.service getty@tty1.service \
      systemd-firstboot.service; do
      ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    touch "$r/.sockherd-e2e-ready"
    mv "$r" "$E2E_ROOTFS"
  ) 9>"$(dirname "$E2E_ROOTFS")/.sockherd-e2e.lock"
}

# Stops containers left by earlier runs that were killed before their
# teardown: their scope is named after the run's PID, which is gone; the
# nspawn PID is the one in the scope's supervisor cgroup.
reap_stale() {
  local d run pid
  for d in /sys/fs/cgroup/unified/sockherd-e2e-*.scope /sys/fs/cgroup/sockherd-e2e-*.scope; do
    [ -d "$d" ] || continue
    run=${d##*/sockherd-e2e-}
    run=${run%.scope}
    kill -0 "$run" 2>/dev/null && continue
    pid=$(head -1 "$d/supervisor/cgroup.procs" 2>/dev/null)
    log "stopping a stale container of run $run (nspawn pid ${pid:-none})"
    stop_container "$pid"
    remove_scopes "/sys/fs/cgroup/systemd/sockherd-e2e-$run.scope" "$d"
  done
}

stop_container() {
  local pid=$1 _
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" # nspawn asks the container's PID 1 to halt
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -TERM "$pid" # a second SIGTERM: nspawn kills the container
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
}

remove_scopes() {
  local d
  for d in "$@"; do
    [ -d "$d" ] || continue
    if find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | grep -q .; then
      echo "WARN: processes left in $d"
    fi
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}

# boot_container SHARE: boots the rootfs with SHARE bind-mounted read-only
# at /opt/sockherd; sets NSPAWN_PID and LEADER (the container's PID 1).
boot_container() {
  local share=$1 d c _ st=
  # nspawn --keep-unit uses the cgroup it runs in, so give it one of its own;
  # never run it from the root cgroup.
  for d in $CG_DIRS; do mkdir -p "$d"; done
  CGS=$CG_DIRS setsid sh -c 'for d in $CGS; do echo $$ >"$d/cgroup.procs"; done; exec "$@"' boot \
    systemd-nspawn --quiet -D "$E2E_ROOTFS" -M "$E2E_MACHINE" \
    --register=no --keep-unit --private-network --volatile=overlay \
    --link-journal=no --resolv-conf=off --timezone=off \
    --bind-ro="$share:/opt/sockherd" --console=read-only -b \
    </dev/null >"$STATE/console.log" 2>&1 &
  NSPAWN_PID=$!
  # The leader is nspawn's child that became the container's systemd; a
  # short-lived helper child may come first, so look for it by what it runs.
  for _ in $(seq 1 300); do
    LEADER=
    for c in $(ps --ppid "$NSPAWN_PID" -o pid= 2>/dev/null); do
      [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && LEADER=$c
    done
    if [ -n "$LEADER" ]; then
      st=$(cx systemctl is-system-running 2>/dev/null)
      case "$st" in running | degraded) return 0 ;; esac
    fi
    kill -0 "$NSPAWN_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

teardown() {
  local t
  t=$(ts)
  stop_container "$NSPAWN_PID"
  # shellcheck disable=SC2086 # CG_DIRS is a list
  remove_scopes $CG_DIRS
  log "teardown in $(elapsed "$t") s"
}

# Ends a suite: tears the container down (or, with E2E_KEEP, says how to
# enter and stop it), checks that nothing is left, keeps the logs only if a
# check failed, prints the closing `N passed, N failed` line and returns
# non-zero on any failure. $1: a file the suite wrote inside the container,
# which the volatile overlay must have kept out of the rootfs.
finish_suite() {
  local written=$1
  if [ -n "${E2E_KEEP:-}" ]; then
    echo "container left running: leader pid $LEADER, nspawn pid $NSPAWN_PID"
    echo "  enter: nsenter -t $LEADER -a"
    echo "  stop:  kill -TERM $NSPAWN_PID, then rmdir the scope dirs: $CG_DIRS"
  else
    trap - EXIT
    teardown
    check "nspawn exited" sh -c '! kill -0 "$1" 2>/dev/null' sh "$NSPAWN_PID"
    # shellcheck disable=SC2086 # a list of directories
    check "the container's cgroups are removed" sh -c '! ls -d "$@" 2>/dev/null | grep -q .' sh $CG_DIRS
    check "the rootfs is untouched (volatile overlay)" test ! -e "$written"
  fi
  if [ "$nfail" = 0 ] && [ -z "${E2E_KEEP:-}" ]; then
    rm -rf "$STATE"
  else
    log "logs: $STATE"
  fi
  log "took $(elapsed "$T0") s"
  echo "$npass passed, $nfail failed"
  [ "$nfail" = 0 ]
}

# Boots the container with directory $1 bind-mounted, as boot_container does,
# and logs how long it took; if it does not boot, shows the end of its
# console and ends the suite with a failure.
boot_or_exit() {
  local t
  t=$(ts)
  if ! boot_container "$1"; then
    tail -20 "$STATE/console.log"
    echo "FAIL: the container did not boot"
    exit 1
  fi
  log "booted in $(elapsed "$t") s (machine $E2E_MACHINE, nspawn pid $NSPAWN_PID, leader pid $LEADER)"
}
