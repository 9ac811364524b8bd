//! The listening sockets every shared-accept worker inherits, and where the
//! workers' notify sockets live.

use std::cell::Cell;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::inbox::Inbox;
use crate::conn::rundir::RunDir;
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
    /// The manager's private directory, where the notify sockets go.
    dir: Rc<RunDir>,
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
    /// Takes the listening sockets for workers to share, in blocking mode
    /// (see the module docs); the workers' notify sockets go in `dir`.
    pub(crate) fn new(listeners: Vec<Listener>, dir: Rc<RunDir>) -> io::Result<Shared> {
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
        Ok(Shared {
            listeners,
            names,
            dir,
            next: Cell::new(0),
        })
    }

    /// How many notify sockets were made: a re-exec carries it, so that the
    /// next image's names do not meet the workers' it took over.
    pub(crate) fn made(&self) -> u64 {
        self.next.get()
    }

    /// Goes on counting from `made`, in a re-exec's next image.
    pub(crate) fn made_before(&self, made: u64) {
        self.next.set(made);
    }

    /// The sockets workers share, for logs.
    pub(crate) fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Creates worker `id`'s notify socket and says what the worker inherits.
    pub(crate) fn wire(&self, id: u32) -> io::Result<Wiring> {
        let n = self.next.get();
        self.next.set(n + 1);
        let inbox = Inbox::bind(self.dir.path().join(format!("notify.{id}.{n}")))?;
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
