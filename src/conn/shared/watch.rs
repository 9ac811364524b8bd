//! The transport of a shared-accept worker: it accepts by itself, so it is
//! never offered a connection; the manager reads its notifications and asks it
//! to stop with SIGTERM, as systemd would.

use std::io;

use nix::sys::signal::Signal;

use super::inbox::Inbox;
use crate::conn::notice::{Garbage, Notice};
use crate::conn::peer::Peer;

/// One shared-accept worker as the pool sees it: its notify socket and its
/// process.
pub(crate) struct Watch {
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
            .field("notify_socket", &self.inbox.path())
            .finish()
    }
}

impl Watch {
    pub(crate) fn new(inbox: Inbox, peer: Peer) -> Watch {
        Watch { inbox, peer }
    }

    /// The next message the pool acts on. A malformed message is logged and
    /// skipped, as systemd does: a server speaking `sd_notify` is not ours to
    /// kill for it. The socket never closes; the task reading it is stopped
    /// when the worker is gone.
    pub(crate) async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
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
    pub(crate) fn ask_to_stop(&self) {
        let _ = self.peer.signals.send(Signal::SIGTERM);
    }
}
