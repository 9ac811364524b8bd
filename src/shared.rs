//! Shared accept (`--policy none`): the workers accept, the manager only watches.
//!
//! Every worker inherits the listening sockets exactly as systemd would pass
//! them to a service: at fd 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and
//! `LISTEN_PID` set, the last to the *worker's* pid, as `sd_listen_fds(3)`
//! checks. Each worker gets a `NOTIFY_SOCKET` of its own, an `AF_UNIX`
//! datagram socket the manager reads ([`Inbox`]): `READY=1`, `WATCHDOG=1`,
//! `STOPPING=1` and `STATUS=` from an unmodified `sd_notify` speaker become
//! its readiness, heartbeat and going-away, as on the native channel (the
//! format is the same, so [`crate::channel::parse_notice`] reads both). Any
//! socket-activation-aware server runs this way unmodified, and the manager is
//! out of the connection path: no accept loops run for these sockets.
//!
//! **`LISTEN_PID`.** The worker's pid is known only after `fork`, and
//! `std::process::Command` builds the child's environment before it forks, so
//! `setenv` in `pre_exec` would change a copy nobody uses. The worker is
//! therefore started through this very binary: `/proc/self/exe __exec-listen
//! -- PROGRAM ARGS…` ([`EXEC_LISTEN`], [`exec_listen`]) sets `LISTEN_PID` (and
//! `WATCHDOG_PID`, when heartbeats are checked) to its own pid and `exec`s the
//! program in place: the same process, so the pid is right, and the process
//! group, parent-death signal and inherited descriptors set up by
//! [`crate::spawn`] all survive. The alternatives were worse: building `envp`
//! and calling `execve` by hand inside `pre_exec` would duplicate (and
//! silently bypass) everything `Command` does with the environment.
//! `/proc/self/exe` still names our binary after a package upgrade replaced
//! the file on disk. The cost is one extra `exec` per worker start.
//!
//! **Stopping.** A shared-accept worker has no channel to be asked on: it gets
//! SIGTERM, as systemd would send it, and SIGKILL at the kill timeout.
//!
//! **Blocking sockets.** The listening sockets are put in blocking mode here.
//! `O_NONBLOCK` lives on the open file description that systemd, the manager
//! and every worker share; a manager that dispatched before may have set it,
//! and a worker that accepts in blocking mode (Python's `socket.accept()`)
//! would then get `EAGAIN` instead of a connection.

use std::cell::Cell;
use std::ffi::OsString;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::cmsg_space;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    bind, recvmsg, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use tokio::io::unix::AsyncFd;

use crate::channel::{parse_notice, Garbage, Notice, MAX_MESSAGE};
use crate::listener::Listener;
use crate::transport::Peer;

/// The hidden subcommand that sets `LISTEN_PID` and execs the worker.
pub const EXEC_LISTEN: &str = "__exec-listen";

/// The listening sockets every worker inherits, and where the workers'
/// notify sockets live. One per manager, shared by every worker it starts.
#[derive(Debug)]
pub struct Shared {
    /// The listening sockets, in the order workers get them (fd 3, 4, …).
    /// Kept open for workers yet to start; a socket file the manager bound
    /// itself is removed when they drop.
    listeners: Vec<Listener>,
    /// `LISTEN_FDNAMES` for the workers: the sockets' names, `:`-separated.
    names: OsString,
    /// A private directory (mode 0700) for the workers' notify sockets,
    /// removed when the manager is done.
    dir: PathBuf,
    /// Numbers notify sockets, so that a replacement never inherits the path
    /// of the worker it replaces.
    next: Cell<u64>,
}

/// What a new worker of a shared-accept app is given, and what the manager keeps.
pub struct Wiring {
    /// The manager's end of the worker's `NOTIFY_SOCKET`.
    pub inbox: Inbox,
    /// The listening sockets, for the worker's fd 3, 4, ….
    pub inherit: Vec<RawFd>,
    /// `LISTEN_FDS`, `LISTEN_FDNAMES` and `NOTIFY_SOCKET`.
    pub env: Vec<(&'static str, OsString)>,
}

impl Shared {
    /// Takes the listening sockets for workers to share: blocking mode (see
    /// the module docs), and a private directory for notify sockets under
    /// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
    /// `$XDG_RUNTIME_DIR`, else the temporary directory.
    pub fn new(listeners: Vec<Listener>) -> io::Result<Shared> {
        for listener in &listeners {
            let flags = fcntl(listener.fd.as_raw_fd(), FcntlArg::F_GETFL)?;
            let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
            fcntl(listener.fd.as_raw_fd(), FcntlArg::F_SETFL(blocking))?;
        }
        let names = listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(":")
            .into();
        let base = runtime_base();
        let dir = nix::unistd::mkdtemp(&base.join("sockherd.XXXXXX")).map_err(|e| {
            io::Error::other(format!(
                "cannot create a directory for notify sockets in {}: {}",
                base.display(),
                e.desc()
            ))
        })?;
        Ok(Shared {
            listeners,
            names,
            dir,
            next: Cell::new(0),
        })
    }

    /// The sockets workers share, for logs.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Creates worker `id`'s notify socket and says what the worker inherits.
    pub fn wire(&self, id: u32) -> io::Result<Wiring> {
        let n = self.next.get();
        self.next.set(n + 1);
        let inbox = Inbox::bind(self.dir.join(format!("{id}.{n}")))?;
        let env = vec![
            ("LISTEN_FDS", self.listeners.len().to_string().into()),
            ("LISTEN_FDNAMES", self.names.clone()),
            ("NOTIFY_SOCKET", inbox.path.clone().into_os_string()),
        ];
        Ok(Wiring {
            inherit: self.listeners.iter().map(|l| l.fd.as_raw_fd()).collect(),
            inbox,
            env,
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every inbox removed its own socket; anything left is ours too.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the directory for notify sockets goes.
fn runtime_base() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .map(|v| {
                // systemd lists several directories separated by `:`; the first will do.
                let first = v.to_string_lossy().split(':').next().map(PathBuf::from);
                first.unwrap_or_default()
            })
            .filter(|p| p.is_absolute() && p.is_dir())
    };
    from("RUNTIME_DIRECTORY")
        .or_else(|| from("XDG_RUNTIME_DIR"))
        .unwrap_or_else(std::env::temp_dir)
}

/// The manager's end of one worker's `NOTIFY_SOCKET`: a datagram socket bound
/// to a path, removed when the worker is gone.
#[derive(Debug)]
pub struct Inbox {
    /// The bound socket, non-blocking, watched by the runtime.
    fd: AsyncFd<OwnedFd>,
    /// Its path, the worker's `NOTIFY_SOCKET`; removed on drop.
    path: PathBuf,
}

impl Inbox {
    fn bind(path: PathBuf) -> io::Result<Inbox> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new(&path).map_err(|e| {
            io::Error::other(format!("notify socket {}: {}", path.display(), e.desc()))
        })?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| {
            io::Error::other(format!(
                "cannot bind notify socket {}: {}",
                path.display(),
                e.desc()
            ))
        })?;
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let fd = match unsafe { AsyncFd::register(fd) } {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(io::Error::from(e));
            }
        };
        Ok(Inbox { fd, path })
    }

    /// The path the worker sends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next message a process of the worker sent. Descriptors sent along
    /// (`FDSTORE=1`) are closed: the manager keeps no fd store.
    async fn recv(&self) -> io::Result<Result<Notice, Garbage>> {
        let mut buf = [0u8; MAX_MESSAGE + 1];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| receive(fd.get_ref().as_raw_fd(), &mut buf)) {
                Ok(Ok(Some(len))) => return Ok(parse_notice(&buf[..len])),
                Ok(Ok(None)) => {
                    return Ok(Err(Garbage(format!(
                        "message of more than {MAX_MESSAGE} bytes"
                    ))))
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one datagram: its length, or `None` if it was cut short.
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = cmsg_space!([RawFd; 16]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg =
        recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), flags).map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed these fds for us; we own
                // them and close them at once.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Ok(None);
    }
    Ok(Some(msg.bytes))
}

/// One shared-accept worker as the pool sees it: its notify socket and its
/// process.
pub struct Watch {
    /// Where its `sd_notify` messages arrive.
    inbox: Inbox,
    /// Its process, for the SIGTERM that asks it to stop, and for logs.
    peer: Peer,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("id", &self.peer.id)
            .field("pid", &self.peer.pid)
            .field("notify_socket", &self.inbox.path)
            .finish()
    }
}

impl Watch {
    pub fn new(inbox: Inbox, peer: Peer) -> Watch {
        Watch { inbox, peer }
    }

    /// The next message the pool acts on. A malformed message is logged and
    /// skipped, as systemd does: a server speaking `sd_notify` is not ours to
    /// kill for it. The socket never closes; the task reading it is stopped
    /// when the worker is gone.
    pub async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        loop {
            match self.inbox.recv().await? {
                Ok(notice) => return Ok(Some(Ok(notice))),
                Err(Garbage(why)) => tracing::warn!(
                    worker_id = self.peer.id,
                    worker_pid = self.peer.pid,
                    "worker {} (pid {}) sent a malformed notification ({why}); ignored",
                    self.peer.id,
                    self.peer.pid
                ),
            }
        }
    }

    /// Asks the worker to stop the way systemd would: SIGTERM.
    pub fn ask_to_stop(&self) {
        let _ = self.peer.signals.send(Signal::SIGTERM);
    }
}

/// `sockherd __exec-listen -- PROGRAM ARGS…`: sets `LISTEN_PID` (and
/// `WATCHDOG_PID` when `WATCHDOG_USEC` is set) to this process's pid and
/// execs PROGRAM in its place. Returns only if that fails.
pub fn exec_listen(command: Vec<OsString>) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("sockherd {EXEC_LISTEN}: no command");
        return ExitCode::from(2);
    };
    let pid = std::process::id().to_string();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env("LISTEN_PID", &pid);
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        cmd.env("WATCHDOG_PID", &pid);
    }
    let error = cmd.exec();
    eprintln!(
        "sockherd {EXEC_LISTEN}: cannot run {}: {error}",
        Path::new(program).display()
    );
    ExitCode::from(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notifications_arrive_and_the_path_goes_with_the_inbox() {
        let dir = std::env::temp_dir().join(format!("sockherd-inbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inbox = Inbox::bind(dir.join("0.0")).unwrap();
        let path = inbox.path().to_owned();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        sender.send_to(b"not a notification", &path).unwrap();
        let notice = inbox.recv().await.unwrap().unwrap();
        assert!(notice.ready);
        assert_eq!(notice.status.as_deref(), Some("up"));
        assert!(inbox.recv().await.unwrap().is_err());
        drop(inbox);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
