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
//!
//! How a connection reaches a worker is its route's [`Transport`]: the native
//! channel hands it over in one datagram; a Node.js worker
//! ([`crate::node`]) takes one at a time, only from the sockets its app
//! listens on, and may hand it back later (refused, or died holding it). A
//! connection handed back goes to its [`Socket`]'s accept loop, which
//! dispatches it again like a new one.

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::Rc;

use tokio::sync::{mpsc, Notify};

use crate::listener::Local;
use crate::metrics::Stats;
use crate::transport::{Refused, Transport};

/// A ready worker as dispatch sees it.
#[derive(Debug)]
pub struct Route {
    /// Which process this is (unique for the manager's lifetime), so reports
    /// about a broken channel reach the right worker even after a restart.
    pub serial: u64,
    /// The stable worker id, for ordering and logs.
    pub id: u32,
    /// Where its connections go, and how.
    pub transport: Transport,
    /// Connections handed to this process, for status and D-Bus.
    pub dispatched: Cell<u64>,
}

/// Why a connection came back undelivered.
#[derive(Debug, PartialEq, Eq)]
pub enum Stall {
    /// No ready worker serves this socket.
    NoneReady,
    /// Every ready worker that serves this socket is busy (its channel is
    /// full, or it has not answered for its last connection yet).
    AllBusy,
}

/// A listening socket as dispatch sees it.
#[derive(Debug)]
pub struct Socket {
    /// Its place among the manager's sockets (the order systemd passed them in).
    pub index: usize,
    /// Where it listens: a Node.js app asks for its sockets by port.
    pub local: Local,
    /// What a native worker is told with each of its connections: `CONN=<name>`.
    pub message: Vec<u8>,
    /// Connections a worker handed back, to be dispatched again by this
    /// socket's accept loop.
    returned: mpsc::UnboundedSender<OwnedFd>,
}

impl Socket {
    /// Puts a connection a worker did not take back in line for dispatch. If
    /// the accept loop is gone (the manager is stopping) it is closed.
    pub fn give_back(&self, conn: OwnedFd) {
        let _ = self.returned.send(conn);
    }
}

/// The ring of ready workers.
pub struct Dispatcher {
    /// Ready workers sorted by (id, serial): round-robin goes 0, 1, 2, …
    ring: RefCell<Vec<Rc<Route>>>,
    /// Index into `ring` of the worker that gets the next connection.
    next: Cell<usize>,
    /// Woken whenever a worker joins the ring or can take more than before, so
    /// a stalled accept loop resumes.
    joined: Rc<Notify>,
    /// Tells the pool about workers whose channel broke under dispatch, so it
    /// can treat them as dying without waiting for their exit to be reaped.
    broken: mpsc::UnboundedSender<u64>,
    /// Connections handed over since the start, for status lines.
    total: Cell<u64>,
    /// Latency and error counters of the connection path, for metrics.
    pub stats: Stats,
    /// Every listening socket, by index.
    sockets: RefCell<Vec<Rc<Socket>>>,
}

impl Dispatcher {
    pub fn new(broken: mpsc::UnboundedSender<u64>) -> Dispatcher {
        Dispatcher {
            ring: RefCell::new(Vec::new()),
            next: Cell::new(0),
            joined: Rc::new(Notify::new()),
            broken,
            total: Cell::new(0),
            stats: Stats::default(),
            sockets: RefCell::new(Vec::new()),
        }
    }

    /// Registers a listening socket named `name`; the receiver yields the
    /// connections workers hand back, for its accept loop.
    pub fn add_socket(
        &self,
        name: &str,
        local: Local,
    ) -> (Rc<Socket>, mpsc::UnboundedReceiver<OwnedFd>) {
        let (returned, returns) = mpsc::unbounded_channel();
        let mut sockets = self.sockets.borrow_mut();
        let socket = Rc::new(Socket {
            index: sockets.len(),
            local,
            message: format!("CONN={name}").into_bytes(),
            returned,
        });
        sockets.push(Rc::clone(&socket));
        (socket, returns)
    }

    /// Every listening socket, by index.
    pub fn sockets(&self) -> Vec<Rc<Socket>> {
        self.sockets.borrow().clone()
    }

    /// What a transport notifies when its worker can take a connection again.
    pub fn capacity(&self) -> Rc<Notify> {
        Rc::clone(&self.joined)
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

    /// Hands `conn`, accepted on `socket`, to the next ready worker in
    /// round-robin order that serves that socket. On success the connection
    /// belongs to the worker's transport; otherwise it comes back intact.
    pub fn dispatch(&self, conn: OwnedFd, socket: &Socket) -> Result<(), (OwnedFd, Stall)> {
        let mut conn = conn;
        let mut at = self.next.get();
        let mut tries = self.ring.borrow().len();
        let mut serving = false;
        while tries > 0 {
            tries -= 1;
            let route = {
                let ring = self.ring.borrow();
                if ring.is_empty() {
                    break;
                }
                at %= ring.len();
                Rc::clone(&ring[at])
            };
            match route.transport.offer(conn, socket) {
                Ok(()) => {
                    self.next.set(at + 1);
                    route.dispatched.set(route.dispatched.get() + 1);
                    self.total.set(self.total.get() + 1);
                    return Ok(());
                }
                Err((back, Refused::Busy)) => {
                    conn = back;
                    serving = true;
                    at += 1;
                }
                Err((back, Refused::NotListening)) => {
                    conn = back;
                    at += 1;
                }
                Err((back, Refused::Gone)) => {
                    // The worker died between two connections. Drop it from the
                    // ring (`at` now points at its successor) and retry.
                    conn = back;
                    self.leave(route.serial);
                    let _ = self.broken.send(route.serial);
                }
            }
        }
        let stall = if serving {
            Stall::AllBusy
        } else {
            Stall::NoneReady
        };
        Err((conn, stall))
    }

    /// The ready workers in dispatch order, for status reports.
    pub fn routes(&self) -> Vec<Rc<Route>> {
        self.ring.borrow().clone()
    }
}
