//! The listening sockets every shared-accept worker inherits, and where the
//! workers' notify sockets live.

use std::cell::Cell;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::inbox::Inbox;
use crate::sockets::listener::Listener;

/// The listening sockets every worker inherits, and where the workers'
/// notify sockets live. One per manager, shared by every worker it starts.
#[derive(Debug)]
pub(crate) struct Shared {
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
pub(crate) struct Wiring {
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
    pub(crate) fn new(listeners: Vec<Listener>) -> io::Result<Shared> {
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
        sweep(&base);
        let dir = base.join(format!("{DIR_PREFIX}{}", std::process::id()));
        // One of ours by pid: a manager that had this pid before is gone.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                io::Error::other(format!(
                    "cannot create a directory for notify sockets in {}: {e}",
                    base.display()
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
    pub(crate) fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Creates worker `id`'s notify socket and says what the worker inherits.
    pub(crate) fn wire(&self, id: u32) -> io::Result<Wiring> {
        let n = self.next.get();
        self.next.set(n + 1);
        let inbox = Inbox::bind(self.dir.join(format!("{id}.{n}")))?;
        let env = vec![
            ("LISTEN_FDS", self.listeners.len().to_string().into()),
            ("LISTEN_FDNAMES", self.names.clone()),
            ("NOTIFY_SOCKET", inbox.path().as_os_str().to_owned()),
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

/// The notify sockets' directory is this and the manager's pid, so that the
/// next manager can tell whose it is.
const DIR_PREFIX: &str = "sockherd-notify.";

/// Removes the notify-socket directories of managers that are gone (a SIGKILL
/// leaves one behind): those of this user whose pid no longer runs.
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if ours && gone && pid > 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
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
