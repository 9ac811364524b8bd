//! Starting a worker process: its command, environment, channel and fate.
//!
//! Every worker is started the same way:
//! - its channel end is fd 3 (`SOCKHERD_CHANNEL_FD=3`, or `NODE_CHANNEL_FD=3`
//!   for a Node.js app: see [`Protocol`]); nothing else is
//!   inherited but stdin (`/dev/null`) and stdout/stderr (pipes to the manager);
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
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::libc;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::transport::Protocol;

/// The fd number of the channel in every worker.
pub const CHANNEL_FD: i32 = 3;

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
pub struct Spec {
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

/// A worker process just started.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// The manager's end of the worker's channel.
    pub channel: OwnedFd,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Finds the program the way `execvp` would, so a missing or non-executable
/// command is a clear start-up error rather than a worker crash loop.
pub fn resolve(program: &OsString) -> Result<PathBuf, String> {
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

/// Starts worker `id` of the app.
pub fn spawn(spec: &Spec, id: u32) -> io::Result<Spawned> {
    let (manager_end, worker_end) = spec.protocol.channel_pair()?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    for var in STRIPPED {
        cmd.env_remove(var);
    }
    cmd.env("SOCKHERD_WORKER_ID", id.to_string())
        .env("NODE_APP_INSTANCE", id.to_string())
        .env("SOCKHERD_APP", &spec.app);
    for (var, value) in spec.protocol.worker_env(id, CHANNEL_FD) {
        cmd.env(var, value);
    }
    match spec.heartbeat_interval {
        Some(every) => cmd.env("SOCKHERD_HEARTBEAT_USEC", every.as_micros().to_string()),
        None => cmd.env_remove("SOCKHERD_HEARTBEAT_USEC"),
    };

    let child_end = worker_end.as_raw_fd();
    let manager_pid = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (dup2, fcntl, setpgid, prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if child_end == CHANNEL_FD {
                if libc::fcntl(CHANNEL_FD, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(child_end, CHANNEL_FD) < 0 {
                return Err(io::Error::last_os_error());
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
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(worker_end);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("worker exited before it was seen"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("worker stdout missing"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("worker stderr missing"))?;
    Ok(Spawned {
        child,
        pid,
        channel: manager_end,
        stdout,
        stderr,
    })
}
