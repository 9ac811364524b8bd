//! Holding the accept loops still, for a re-exec of the manager.
//!
//! A re-exec ([`crate::reexec`]) must find no connection in the manager's
//! hands: each accept loop finishes handing over what it accepted, then
//! parks — it stops calling `accept()`, and what arrives meanwhile waits in
//! the kernel's queue, which crosses the exec with the listening socket. The
//! caller asks ([`Pause::hold`]), waits until every loop has parked
//! ([`Pause::all_parked`]), and lets them go again if the exec did not
//! happen ([`Pause::release`]). A loop parks only between wake-ups, with
//! nothing held; a connection a Node.js worker hands back while it is parked
//! goes out at once.

use std::cell::Cell;

use tokio::sync::{watch, Notify};

/// The switch every accept loop watches.
pub(crate) struct Pause {
    held: watch::Sender<bool>,
    /// Accept loops running.
    loops: Cell<usize>,
    /// Of those, parked now.
    parked: Cell<usize>,
    /// Woken when one more parks.
    settled: Notify,
}

impl Default for Pause {
    fn default() -> Pause {
        Pause {
            held: watch::Sender::new(false),
            loops: Cell::new(0),
            parked: Cell::new(0),
            settled: Notify::new(),
        }
    }
}

impl Pause {
    /// Asks every accept loop to park.
    pub(crate) fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets them go.
    pub(crate) fn release(&self) {
        self.held.send_replace(false);
    }

    /// Waits until every running accept loop has parked.
    pub(crate) async fn all_parked(&self) {
        loop {
            let settled = self.settled.notified();
            if self.parked.get() >= self.loops.get() {
                return;
            }
            settled.await;
        }
    }

    /// For an accept loop: counts it while it runs (the guard).
    pub(crate) fn enter(&self) -> Running<'_> {
        self.loops.set(self.loops.get() + 1);
        Running(self)
    }

    /// For an accept loop: a receiver that tells it to park.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// For an accept loop: it parked, until the guard is dropped.
    pub(crate) fn parked(&self) -> Parked<'_> {
        self.parked.set(self.parked.get() + 1);
        self.settled.notify_waiters();
        Parked(self)
    }
}

/// An accept loop that runs; it stops counting when dropped.
pub(crate) struct Running<'a>(&'a Pause);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.loops.set(self.0.loops.get() - 1);
        self.0.settled.notify_waiters();
    }
}

/// A parked accept loop; it counts as running again when dropped.
pub(crate) struct Parked<'a>(&'a Pause);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.set(self.0.parked.get() - 1);
    }
}
