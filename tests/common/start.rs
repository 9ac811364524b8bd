//! Starting the manager: `sockherd serve --log stderr ARGS -- WORKER`, bound
//! with `--listen`, handed listening sockets as systemd hands them, or run by
//! the real `systemd-socket-activate`; in the test's environment less what
//! systemd meant for a service of its own ([`SERVICE_VARS`]), changed as the
//! test asks ([`Start::env`], [`Start::env_clear`]).
//!
//! Every change to the environment is made in the child between fork and
//! exec, with `setenv`/`unsetenv`, never with [`Command::env`]: `LISTEN_PID`
//! must be the child's own pid, known only there, and a command with
//! environment changes of its own would exec with those instead.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::libc;

use super::{sockherd, wait_for, Addr, Manager};

/// Variables a test may have been given by systemd (or a desktop session)
/// that would change what the manager under test does: sockets, a
/// notification socket, a watchdog, a journal stream, a bus. No manager sees
/// them unless its test sets them.
pub const SERVICE_VARS: [&str; 10] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
];

/// How to start a manager; [`Start::spawn`] starts it.
pub struct Start {
    /// `systemd-socket-activate` options, when it runs the manager.
    activator: Option<Vec<OsString>>,
    /// A command the manager runs under (`setpriv … --`), if any.
    wrapper: Vec<OsString>,
    /// `--log`'s value.
    log: &'static str,
    args: Vec<OsString>,
    worker: Vec<OsString>,
    /// Whether the child starts from an empty environment.
    clear: bool,
    /// Changes in order: a value to set, or `None` to remove.
    env: Vec<(OsString, Option<OsString>)>,
    /// Sockets passed as systemd passes them: (name, fd in this process).
    sockets: Vec<(String, RawFd)>,
    /// Where its stderr goes when not to the harness's log.
    stderr: Option<Stdio>,
    /// The manager binary, when not the one built for the tests (a copy
    /// that a test replaces under it).
    binary: Option<PathBuf>,
}

impl Start {
    /// `sockherd serve --log stderr ARGS -- WORKER`.
    pub fn new(args: &[&str], worker: &[OsString]) -> Start {
        Start {
            activator: None,
            wrapper: Vec::new(),
            log: "stderr",
            args: args.iter().map(OsString::from).collect(),
            worker: worker.to_vec(),
            clear: false,
            env: Vec::new(),
            sockets: Vec::new(),
            stderr: None,
            binary: None,
        }
    }

    /// Sends the manager's stderr to `stderr` (a file, or a pipe the test
    /// reads with [`super::manager::Manager::take_stderr`]) instead of the
    /// harness's log: the log-reading helpers then see nothing.
    pub fn stderr(mut self, stderr: Stdio) -> Start {
        self.stderr = Some(stderr);
        self
    }

    /// One more option for `serve`, after those given to [`Start::new`].
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Start {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// `--log TARGET` instead of `--log stderr`: the harness then sees only
    /// what the manager writes to stderr anyway.
    pub fn log_to(mut self, target: &'static str) -> Start {
        self.log = target;
        self
    }

    /// Runs the manager under `command` (e.g. `setpriv --reuid=… --`), which
    /// execs it in place.
    pub fn under(mut self, command: &[&str]) -> Start {
        self.wrapper = command.iter().map(OsString::from).collect();
        self
    }

    /// Sets `key` in the manager's environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Start {
        let value = value.as_ref().to_owned();
        self.env.push((key.as_ref().to_owned(), Some(value)));
        self
    }

    /// Starts the manager with no variables but those set afterwards (and
    /// the `LISTEN_*` of [`Start::activated`]).
    pub fn env_clear(mut self) -> Start {
        self.clear = true;
        self.env.clear();
        self
    }

    /// Passes `sockets` (name, fd) as systemd does after socket activation:
    /// they become fds 3, 4, … of the child, and `LISTEN_FDS`,
    /// `LISTEN_FDNAMES` and `LISTEN_PID` (its own pid) are set. Variables set
    /// with [`Start::env`] override those.
    pub fn activated(mut self, sockets: &[(&str, RawFd)]) -> Start {
        self.sockets = sockets
            .iter()
            .map(|(name, fd)| ((*name).to_owned(), *fd))
            .collect();
        self
    }

    /// Runs the manager from `binary` rather than the binary built for the tests.
    pub fn binary(mut self, binary: &Path) -> Start {
        self.binary = Some(binary.to_owned());
        self
    }

    /// Starts it, its stdout and stderr read by the harness.
    pub fn spawn(mut self) -> Manager {
        let binary = self.binary.clone().unwrap_or_else(|| sockherd().to_owned());
        let mut cmd = match (&self.activator, self.wrapper.split_first()) {
            (None, None) => Command::new(&binary),
            (None, Some((program, args))) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&binary);
                cmd
            }
            (Some(options), _) => {
                let mut cmd = Command::new("systemd-socket-activate");
                cmd.args(options).arg(&binary);
                cmd
            }
        };
        cmd.args(["serve", "--log", self.log])
            .args(&self.args)
            .arg("--")
            .args(&self.worker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let log = self.stderr.is_none();
        cmd.stderr(self.stderr.take().unwrap_or_else(Stdio::piped));
        let changes = self.changes();
        let clear = self.clear;
        let sources: Vec<RawFd> = self.sockets.iter().map(|(_, fd)| *fd).collect();
        let mut moved = vec![-1; sources.len()];
        // SAFETY: runs in the forked child before exec. It only duplicates
        // fds and changes variables (glibc's fork leaves malloc usable in the
        // child, and no test thread changes the environment); the command has
        // no environment changes of its own, so exec uses `environ` as
        // modified here.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, so that placing one at 3.. cannot
                // clobber another not yet placed.
                for (to, from) in moved.iter_mut().zip(&sources) {
                    *to = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 64);
                    if *to < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (offset, fd) in moved.iter().enumerate() {
                    // dup2 clears close-on-exec on the new descriptor.
                    if libc::dup2(*fd, 3 + offset as RawFd) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if clear && libc::clearenv() != 0 {
                    return Err(io::Error::last_os_error());
                }
                for change in &changes {
                    let done = match change {
                        Change::Set(key, value) => libc::setenv(key.as_ptr(), value.as_ptr(), 1),
                        Change::Remove(key) => libc::unsetenv(key.as_ptr()),
                        Change::OwnPid(key) => {
                            let mut digits = [0u8; 24];
                            decimal(libc::getpid() as u64, &mut digits);
                            libc::setenv(key.as_ptr(), digits.as_ptr().cast(), 1)
                        }
                    };
                    if done < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Manager::spawn(cmd, log)
    }

    /// What the child does to its environment, in order.
    fn changes(&self) -> Vec<Change> {
        let c = |s: &OsStr| CString::new(s.as_bytes()).expect("no NUL in a variable");
        let mut changes: Vec<Change> = SERVICE_VARS
            .iter()
            .map(|var| Change::Remove(c(OsStr::new(var))))
            .collect();
        if !self.sockets.is_empty() {
            let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
            let set = |k: &str, v: &str| Change::Set(c(OsStr::new(k)), c(OsStr::new(v)));
            changes.push(set("LISTEN_FDS", &self.sockets.len().to_string()));
            changes.push(set("LISTEN_FDNAMES", &names.join(":")));
            changes.push(Change::OwnPid(c(OsStr::new("LISTEN_PID"))));
        }
        changes.extend(self.env.iter().map(|(key, value)| match value {
            Some(value) => Change::Set(c(key), c(value)),
            None => Change::Remove(c(key)),
        }));
        changes
    }
}

/// One change to the child's environment.
enum Change {
    Set(CString, CString),
    Remove(CString),
    /// Set to the child's own pid.
    OwnPid(CString),
}

/// Writes `n` in decimal, NUL-terminated, without allocating.
fn decimal(mut n: u64, out: &mut [u8; 24]) {
    let mut reversed = [0u8; 20];
    let mut len = 0;
    loop {
        reversed[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = reversed[len - 1 - i];
    }
    out[len] = 0;
}

/// Starts the manager without socket activation (give it `--listen`).
pub fn serve(args: &[&str], worker: &[OsString]) -> Manager {
    Start::new(args, worker).spawn()
}

/// Starts the manager as systemd would after socket activation (see
/// [`Start::activated`]), with the variables `env` set as well.
pub fn serve_activated(
    sockets: &[(&str, RawFd)],
    env: &[(&str, &str)],
    args: &[&str],
    worker: &[OsString],
) -> Manager {
    env.iter()
        .fold(
            Start::new(args, worker).activated(sockets),
            |start, (k, v)| start.env(k, v),
        )
        .spawn()
}

/// Starts the manager under `systemd-socket-activate -l 127.0.0.1:PORT
/// --fdname=http` on a free port, and returns it with that address. It execs
/// the manager (same pid) on the first connection.
pub fn socket_activate(args: &[&str], worker: &[OsString]) -> (Manager, Addr) {
    for _ in 0..5 {
        let port = free_port();
        let mut start = Start::new(args, worker);
        start.activator = Some(vec![
            format!("--listen=127.0.0.1:{port}").into(),
            "--fdname=http".into(),
        ]);
        let mut manager = start.spawn();
        let listening = wait_for("systemd-socket-activate to listen or fail", || {
            if manager.has_line("Listening on") {
                Some(true)
            } else if manager.try_exit().is_some() {
                Some(false)
            } else {
                None
            }
        });
        if listening {
            return (
                manager,
                Addr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            );
        }
        // Someone took the port between our probe and its bind: try another.
    }
    panic!("systemd-socket-activate could not listen on a free port");
}

/// A port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
