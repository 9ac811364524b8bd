//! The transport of a shared-accept worker: it accepts by itself, so it is
//! never offered a connection; the manager reads its notifications and asks it
//! to stop with SIGTERM, as systemd would.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::inbox::Inbox;
use crate::conn::carried::Carried;
use crate::conn::notice::{Garbage, Notice};
use crate::conn::peer::Peer;

/// One shared-accept worker as the pool sees it: its notify socket and its
/// process.
pub(crate) struct Watch {
    /// Where its `sd_notify` messages arrive.
    inbox: Inbox,
    /// Its process, for the SIGTERM that asks it to stop, and for logs.
    peer: Peer,
    /// Malformed notifications not logged yet, and when one last was: a
    /// stream of them costs one log line a second.
    malformed: Cell<(u64, Option<Instant>)>,
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
        Watch {
            inbox,
            peer,
            malformed: Cell::new((0, None)),
        }
    }

    /// Its notify socket, for the next image ([`crate::conn::carried`]).
    pub(crate) fn carry(&self) -> Carried {
        Carried::Notify {
            fd: self.inbox.raw_fd(),
            path: self.inbox.path().to_owned(),
        }
    }

    /// The next message the pool acts on. A malformed message is logged and
    /// skipped, as systemd does: a server speaking `sd_notify` is not ours to
    /// kill for it. It counts as a message that says nothing, so a flood of
    /// them is read no faster than any other. The socket never closes; the
    /// task reading it is stopped when the worker is gone.
    pub(crate) async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        match self.inbox.recv().await? {
            Ok(notice) => Ok(Some(Ok(notice))),
            Err(Garbage(why)) => {
                self.malformed(&why);
                Ok(Some(Ok(Notice::default())))
            }
        }
    }

    /// Logs a malformed notification: the first at once, then at most one
    /// line a second saying how many more came.
    fn malformed(&self, why: &str) {
        let (unlogged, last) = self.malformed.get();
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            self.malformed.set((unlogged + 1, last));
            return;
        }
        let more = if unlogged > 0 {
            format!(" ({unlogged} more since the last one logged)")
        } else {
            String::new()
        };
        tracing::warn!(
            worker_id = self.peer.id,
            worker_pid = self.peer.pid,
            "worker {} (pid {}) sent a malformed notification ({why}); ignored{more}",
            self.peer.id,
            self.peer.pid
        );
        self.malformed.set((0, Some(now)));
    }

    /// Asks the worker to stop the way systemd would: with `signal`
    /// (`KillSignal=`, here `--kill-signal`).
    pub(crate) fn ask_to_stop(&self, signal: Signal) {
        let _ = self.peer.signals.send(signal);
    }
}
