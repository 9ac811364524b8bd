//! Dispatch: choosing the worker that gets the next connection, and handing it over.
//!
//! The [`Dispatcher`] holds the *ready* workers only, in id order, and a
//! round-robin cursor over them. A worker enters when it reports `READY=1` and
//! leaves the moment it is chosen to go (drain, reload, scale-down), when its
//! channel breaks, or when it exits, so a connection is never offered to a
//! worker that is starting or draining.
//!
//! Handing over never waits: a worker whose channel would block is skipped for
//! this connection (it is slow, not gone), and a worker whose channel is broken
//! is dropped from the ring and the connection goes to the next one. Only when
//! no worker can take it does the connection come back to the accept loop,
//! which holds it and stops accepting until one can (see [`crate::accept`]).

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use tokio::sync::{mpsc, Notify};

use crate::channel::{Channel, SendError};
use crate::metrics::Stats;

/// A ready worker as dispatch sees it.
#[derive(Debug)]
pub struct Route {
    /// Which process this is (unique for the manager's lifetime), so reports
    /// about a broken channel reach the right worker even after a restart.
    pub serial: u64,
    /// The stable worker id, for ordering and logs.
    pub id: u32,
    /// Where its connections go.
    pub channel: Rc<Channel>,
    /// Connections handed to this process, for status and D-Bus.
    pub dispatched: Cell<u64>,
}

/// Why a connection came back undelivered.
#[derive(Debug, PartialEq, Eq)]
pub enum Stall {
    /// No worker is ready at all.
    NoneReady,
    /// Every ready worker's channel is full.
    AllBusy,
}

/// The ring of ready workers.
pub struct Dispatcher {
    /// Ready workers sorted by (id, serial): round-robin goes 0, 1, 2, …
    ring: RefCell<Vec<Rc<Route>>>,
    /// Index into `ring` of the worker that gets the next connection.
    next: Cell<usize>,
    /// Woken whenever a worker joins the ring, so a stalled accept loop resumes.
    joined: Notify,
    /// Tells the pool about workers whose channel broke under dispatch, so it
    /// can treat them as dying without waiting for their exit to be reaped.
    broken: mpsc::UnboundedSender<u64>,
    /// Connections handed over since the start, for status lines.
    total: Cell<u64>,
    /// Latency and error counters of the connection path, for metrics.
    pub stats: Stats,
}

impl Dispatcher {
    pub fn new(broken: mpsc::UnboundedSender<u64>) -> Dispatcher {
        Dispatcher {
            ring: RefCell::new(Vec::new()),
            next: Cell::new(0),
            joined: Notify::new(),
            broken,
            total: Cell::new(0),
            stats: Stats::default(),
        }
    }

    /// A worker became ready: it starts receiving connections now.
    pub fn join(&self, route: Rc<Route>) {
        let mut ring = self.ring.borrow_mut();
        let at = ring.partition_point(|r| (r.id, r.serial) < (route.id, route.serial));
        if at < self.next.get() {
            self.next.set(self.next.get() + 1);
        }
        ring.insert(at, route);
        drop(ring);
        self.joined.notify_waiters();
    }

    /// A worker stops receiving connections, from this moment on.
    pub fn leave(&self, serial: u64) {
        let mut ring = self.ring.borrow_mut();
        if let Some(at) = ring.iter().position(|r| r.serial == serial) {
            ring.remove(at);
            if at < self.next.get() {
                self.next.set(self.next.get() - 1);
            }
        }
    }

    pub fn ready_count(&self) -> usize {
        self.ring.borrow().len()
    }

    pub fn total(&self) -> u64 {
        self.total.get()
    }

    /// Resolves the next time a worker joins the ring.
    pub async fn joined(&self) {
        self.joined.notified().await;
    }

    /// Hands `conn` to the next ready worker in round-robin order. On success
    /// our copy of the fd is closed (dropped); otherwise it comes back intact.
    pub fn dispatch(&self, conn: OwnedFd, message: &[u8]) -> Result<(), (OwnedFd, Stall)> {
        let mut tries = self.ring.borrow().len();
        while tries > 0 {
            let (at, route) = {
                let ring = self.ring.borrow();
                if ring.is_empty() {
                    break;
                }
                let at = self.next.get() % ring.len();
                (at, Rc::clone(&ring[at]))
            };
            match route.channel.try_send_conn(conn.as_fd(), message) {
                Ok(()) => {
                    self.next.set(at + 1);
                    route.dispatched.set(route.dispatched.get() + 1);
                    self.total.set(self.total.get() + 1);
                    return Ok(());
                }
                Err(SendError::WouldBlock) => {
                    self.next.set(at + 1);
                    tries -= 1;
                }
                Err(SendError::Gone(_)) => {
                    // The worker died between two connections. Drop it from the
                    // ring (the cursor now points at its successor) and retry.
                    self.leave(route.serial);
                    let _ = self.broken.send(route.serial);
                    tries -= 1;
                }
            }
        }
        let stall = if self.ring.borrow().is_empty() {
            Stall::NoneReady
        } else {
            Stall::AllBusy
        };
        Err((conn, stall))
    }

    /// The ready workers in dispatch order, for status reports.
    pub fn routes(&self) -> Vec<Rc<Route>> {
        self.ring.borrow().clone()
    }
}
