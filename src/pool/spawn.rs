//! Starting a worker process: its command, environment, channel and fate.
//!
//! Every worker is started the same way:
//! - its channel end is fd 3 (`SOCKHERD_CHANNEL_FD=3`, or `NODE_CHANNEL_FD=3`
//!   for a Node.js app: see [`Protocol`]) — or, under `--policy none`, the
//!   listening sockets are fds 3, 4, … as systemd passes them, and it is
//!   started through `sockherd __exec-listen` so that `LISTEN_PID` names it
//!   ([`crate::conn::shared`]); nothing else is inherited but stdin (`/dev/null`)
//!   and stdout/stderr: pipes to the manager, which the worker replaces with
//!   journal streams of its own between fork and exec when the manager logs
//!   to the journal ([`crate::log::stream`]);
//! - the socket-activation and notify variables meant for the manager are
//!   stripped, and `SOCKHERD_WORKER_ID`, `NODE_APP_INSTANCE`, `SOCKHERD_APP`,
//!   the protocol's variables (`SOCKHERD_PROTOCOL`, …) and
//!   `SOCKHERD_HEARTBEAT_USEC` (when heartbeats are checked) are set;
//! - it leads its own process group, so a terminal's Ctrl-C reaches only the
//!   manager (which then drains the workers in order) and a kill reaches the
//!   worker's own children too;
//! - it dies with the manager, even a SIGKILLed one: `PR_SET_PDEATHSIG` is set
//!   between fork and exec, and a worker whose manager already died before that
//!   exits at once.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;

use nix::libc;

use super::child::Child;

use crate::conn::carried::CarriedProtocol;
use crate::conn::node::{self, Shim};
use crate::conn::protocol::{
    CHANNEL_FD, NODE_APP_INSTANCE, SOCKHERD_APP, SOCKHERD_HEARTBEAT_USEC, SOCKHERD_WORKER_ID,
};
use crate::conn::shared::{Shared, EXEC_LISTEN};
use crate::conn::transport::{End, Protocol};
use crate::log::stream::Streams;

/// The program that starts a shared-accept worker: this binary, whichever
/// file it was started from (see [`crate::conn::shared`]).
const SELF: &str = "/proc/self/exe";

/// Variables of the manager's own environment that must not reach workers.
const STRIPPED: [&str; 7] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// What to run for every worker of this app.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The app's name, for `SOCKHERD_APP` and logs.
    pub app: String,
    /// The program, resolved against `PATH` once at start-up.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// How often workers should send `WATCHDOG=1` (`--heartbeat-timeout` / 2),
    /// passed as `SOCKHERD_HEARTBEAT_USEC`; the worker crate does it by itself.
    pub heartbeat_interval: Option<std::time::Duration>,
    /// What the workers speak on their channel.
    pub protocol: Protocol,
}

/// What to run, as a re-exec carries it: the app's protocol without what
/// the next image makes again ([`Spec::adopt`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct CarriedSpec {
    pub app: String,
    pub program: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub heartbeat_interval: Option<std::time::Duration>,
    pub protocol: CarriedProtocol,
}

impl Spec {
    pub(crate) fn carry(&self) -> CarriedSpec {
        CarriedSpec {
            app: self.app.clone(),
            program: self.program.as_os_str().as_bytes().to_vec(),
            args: self.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            heartbeat_interval: self.heartbeat_interval,
            protocol: self.protocol.carry(),
        }
    }

    /// The spec an earlier image carried, with this image's Node.js `shim`
    /// and, under `--policy none`, its `shared` sockets.
    pub(crate) fn adopt(
        carried: CarriedSpec,
        shim: &Rc<Shim>,
        shared: Option<&Rc<Shared>>,
    ) -> Result<Spec, String> {
        let protocol = match (carried.protocol, shared) {
            (CarriedProtocol::Native, None) => Protocol::Native,
            (CarriedProtocol::Shared, Some(shared)) => Protocol::Shared(Rc::clone(shared)),
            (
                CarriedProtocol::Node {
                    cluster,
                    wait_ready,
                    shutdown_message,
                    server_data,
                    sharing,
                },
                shared,
            ) if sharing == shared.is_some() => Protocol::Node(Rc::new(node::App::adopt(
                cluster,
                wait_ready,
                shutdown_message,
                server_data,
                Rc::clone(shim),
                shared.cloned(),
            ))),
            _ => return Err("the carried protocol does not match the carried sockets".into()),
        };
        Ok(Spec {
            app: carried.app,
            program: PathBuf::from(OsString::from_vec(carried.program)),
            args: carried.args.into_iter().map(OsString::from_vec).collect(),
            heartbeat_interval: carried.heartbeat_interval,
            protocol,
        })
    }
}

/// A worker process just started.
pub(crate) struct Spawned {
    pub child: Child,
    /// The manager's end of the worker's channel or notify socket.
    pub channel: End,
    /// The read ends of its stdout and stderr pipes.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Finds the program the way `execvp` would, so a missing or non-executable
/// command is a clear start-up error rather than a worker crash loop.
pub(crate) fn resolve(program: &OsString) -> Result<PathBuf, String> {
    let name = Path::new(program);
    let candidates: Vec<PathBuf> = if name.components().count() > 1 {
        vec![name.to_path_buf()]
    } else {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .collect()
    };
    let mut not_executable = None;
    for candidate in candidates {
        match nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if candidate.is_file() => return Ok(candidate),
            Ok(()) | Err(nix::errno::Errno::EACCES) if candidate.exists() => {
                not_executable = Some(candidate)
            }
            _ => {}
        }
    }
    match not_executable {
        Some(path) => Err(format!(
            "worker command {} is not executable",
            path.display()
        )),
        None => Err(format!("worker command {:?} not found", program)),
    }
}

/// Why workers of `program` would outlive a SIGKILLed manager, if they would:
/// the kernel clears the parent-death signal when an exec gains privileges (a
/// setuid or setgid program, or one with file capabilities, run by a manager
/// that is not root), and an unprivileged manager cannot signal them either.
pub(crate) fn outliving(program: &Path) -> Option<String> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let meta = std::fs::metadata(program).ok()?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    let gains = if mode & 0o4000 != 0 {
        "is setuid"
    } else if mode & 0o2000 != 0 {
        "is setgid"
    } else if has_capabilities(program) {
        "has file capabilities"
    } else {
        return None;
    };
    Some(format!(
        "worker program {} {gains}: the kernel clears the parent-death signal of a \
         process whose exec gains privileges, so its workers would outlive a SIGKILLed \
         manager, and a manager without those privileges may not be allowed to signal \
         them; run the manager under systemd (its cgroup is killed with the unit) or \
         give the workers their privileges another way (AmbientCapabilities=)",
        program.display()
    ))
}

/// Whether `program` carries file capabilities (`security.capability`).
fn has_capabilities(program: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(program.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and live for the call; a null
    // buffer of size 0 asks only for the attribute's size.
    let size = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size > 0
}

/// Starts worker `id` of the app.
pub(crate) fn spawn(spec: &Spec, id: u32) -> io::Result<Spawned> {
    let wiring = spec.protocol.wire(id)?;
    let mut cmd = if wiring.own_pid {
        let mut cmd = Command::new(SELF);
        cmd.arg(EXEC_LISTEN).arg("--").arg(&spec.program);
        cmd
    } else {
        Command::new(&spec.program)
    };
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in STRIPPED {
        cmd.env_remove(var);
    }
    cmd.env(SOCKHERD_WORKER_ID, id.to_string())
        .env(NODE_APP_INSTANCE, id.to_string())
        .env(SOCKHERD_APP, &spec.app);
    for (var, value) in &wiring.env {
        cmd.env(var, value);
    }
    match spec.heartbeat_interval {
        Some(every) => cmd.env(SOCKHERD_HEARTBEAT_USEC, every.as_micros().to_string()),
        None => cmd.env_remove(SOCKHERD_HEARTBEAT_USEC),
    };
    if let (true, Some(every)) = (wiring.own_pid, spec.heartbeat_interval) {
        // systemd's meaning: the timeout itself; sd_watchdog_enabled() users
        // ping at half of it, which is what SOCKHERD_HEARTBEAT_USEC says.
        cmd.env("WATCHDOG_USEC", (every * 2).as_micros().to_string());
    }

    let inherit = wiring.inherit;
    let inherit_count = inherit.len();
    // Where each inherited fd is parked before it is put in place; filled in
    // the child, allocated here because the child must not allocate.
    let mut parked: Vec<RawFd> = vec![-1; inherit.len()];
    let manager_pid = nix::unistd::getpid();
    let streams = Streams::prepare(&spec.app, id);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (fcntl, dup2, close_range, getrlimit, setpgid,
    // prctl, getppid, _exit; socket, connect, write, ioctl, nanosleep for the
    // journal streams).
    unsafe {
        cmd.pre_exec(move || {
            // Park every fd above the targets first, so that putting one at
            // 3 + i cannot clobber another not yet placed (systemd's sockets
            // sit at 3, 4, … in the manager too).
            let above = CHANNEL_FD + inherit.len() as RawFd;
            for (to, from) in parked.iter_mut().zip(&inherit) {
                *to = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, above);
                if *to < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (offset, fd) in parked.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor; the parked
                // copy is close-on-exec and goes with the exec.
                if libc::dup2(*fd, CHANNEL_FD + offset as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Nothing else the manager has open reaches the worker, not even
            // what whoever started the manager left open without
            // close-on-exec: marked close-on-exec here, closed by the exec.
            // (Closing them now would close the pipe through which the
            // spawner learns that the exec failed.)
            let first_other = (CHANNEL_FD + inherit_count as RawFd) as libc::c_uint;
            if libc::syscall(
                libc::SYS_close_range,
                first_other,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                // Before Linux 5.11: one descriptor at a time, up to the limit.
                let mut limit = std::mem::zeroed::<libc::rlimit>();
                let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                    limit.rlim_cur.min(1 << 20) as RawFd
                } else {
                    1 << 16
                };
                for fd in first_other as RawFd..top {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The manager may have died before prctl took effect.
            if libc::getppid() != manager_pid.as_raw() {
                libc::_exit(1);
            }
            if let Some(streams) = &streams {
                streams.connect_in_child();
            }
            Ok(())
        });
    }
    let mut spawned = cmd.spawn()?;
    // The worker has its own copies now.
    drop(wiring.handed);
    let stdout = spawned.stdout.take().map(OwnedFd::from);
    let stderr = spawned.stderr.take().map(OwnedFd::from);
    // Held by a pidfd from here on; the std handle neither waits nor kills
    // when dropped.
    let child = Child::adopt(spawned.id()).inspect_err(|_| {
        let _ = spawned.kill();
        let _ = spawned.wait();
    })?;
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err(io::Error::other("worker output pipes missing"));
    };
    Ok(Spawned {
        child,
        channel: wiring.end,
        stdout,
        stderr,
    })
}
