//! Transports: how the manager talks to a worker, whatever the worker speaks.
//!
//! The pool and dispatch deal with every worker the same way; what differs is
//! the wire. A [`Transport`] is the manager's end of one worker's channel and
//! does the four things they need: offer a connection ([`Transport::offer`]),
//! report what the worker says as [`Notice`]s ([`Transport::recv`]), ask it to
//! stop ([`Transport::ask_to_stop`]), and nothing else. There are two:
//!
//! - [`Transport::Native`]: sockherd's own protocol ([`crate::channel`]); a
//!   connection is handed over in one datagram and the manager's copy is
//!   closed at once.
//! - [`Transport::Node`]: an unmodified Node.js app as a cluster worker or a
//!   plain `child_process` IPC child ([`crate::node`]). It holds the connection
//!   until the app took it, takes one at a time, and hands connections back
//!   to dispatch when the app refuses them or dies holding one.
//!
//! Which one a worker gets is the app's [`Protocol`], decided once at start-up.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use nix::sys::signal::Signal;
use nix::sys::socket::SockType;
use tokio::sync::mpsc;

use crate::channel::{self, Channel, Garbage, Notice, SendError, PROTOCOL_VERSION};
use crate::dispatch::{Dispatcher, Socket};
use crate::node;

/// What the workers of this app speak.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// sockherd's own channel (`docs/protocol.md`).
    Native,
    /// Node.js IPC, as a cluster primary or as a `child_process` parent.
    Node(Rc<node::App>),
}

impl Protocol {
    /// Creates a worker's channel: the manager's end (non-blocking) and the
    /// worker's end, both close-on-exec.
    pub fn channel_pair(&self) -> io::Result<(OwnedFd, OwnedFd)> {
        match self {
            Protocol::Native => channel::pair(SockType::SeqPacket),
            // Node's IPC channel is a stream: libuv creates and expects one.
            Protocol::Node(_) => channel::pair(SockType::Stream),
        }
    }

    /// The variables that tell worker `id` where its channel is and how to use
    /// it, the channel being fd `fd`.
    pub fn worker_env(&self, id: u32, fd: i32) -> Vec<(&'static str, String)> {
        match self {
            Protocol::Native => vec![
                ("SOCKHERD_CHANNEL_FD", fd.to_string()),
                ("SOCKHERD_PROTOCOL", PROTOCOL_VERSION.to_string()),
            ],
            Protocol::Node(app) => app.worker_env(id, fd),
        }
    }

    /// The name shown in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Node(app) => app.mode_name(),
        }
    }
}

/// The worker process a transport belongs to.
pub struct Peer {
    /// Its slot, for logs.
    pub id: u32,
    /// Its pid, for logs.
    pub pid: u32,
    /// Signals to its process group, through the task that reaps it (never a
    /// recycled pid): the Node transport follows a stop request with SIGTERM.
    pub signals: mpsc::UnboundedSender<Signal>,
}

/// Why a worker did not take a connection; the connection comes back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It is slow or still busy with the previous one: try another worker.
    Busy,
    /// It does not listen on the socket the connection came from.
    NotListening,
    /// Its channel is broken: it died or is dying.
    Gone,
}

/// The manager's end of one worker's channel.
#[derive(Debug, Clone)]
pub enum Transport {
    Native(Rc<Channel>),
    Node(Rc<node::Link>),
}

impl Transport {
    /// Wraps a freshly spawned worker's channel end for `protocol`.
    pub fn open(
        protocol: &Protocol,
        fd: OwnedFd,
        peer: Peer,
        dispatcher: &Dispatcher,
    ) -> io::Result<Transport> {
        match protocol {
            Protocol::Native => Ok(Transport::Native(Rc::new(Channel::new(fd)?))),
            Protocol::Node(app) => Ok(Transport::Node(Rc::new(node::Link::new(
                Rc::clone(app),
                fd,
                peer,
                dispatcher.sockets(),
                dispatcher.capacity(),
            )?))),
        }
    }

    /// Offers `conn`, accepted on `socket`, without waiting. On success the
    /// transport owns it (and closes the manager's copy when the worker has its
    /// own); otherwise it comes back with the reason.
    pub fn offer(&self, conn: OwnedFd, socket: &Socket) -> Result<(), (OwnedFd, Refused)> {
        match self {
            Transport::Native(channel) => {
                match channel.try_send_conn(conn.as_fd(), &socket.message) {
                    Ok(()) => Ok(()),
                    Err(SendError::WouldBlock) => Err((conn, Refused::Busy)),
                    Err(SendError::Gone(_)) => Err((conn, Refused::Gone)),
                }
            }
            Transport::Node(link) => link.offer(conn, socket),
        }
    }

    /// Asks the worker to finish what it has and exit; the pool kills it at
    /// the kill timeout if it does not.
    pub fn ask_to_stop(&self) {
        match self {
            // A full channel means the worker is not reading: it gets the kill timeout.
            Transport::Native(channel) => {
                let _ = channel.try_send(b"SHUTDOWN=1");
            }
            Transport::Node(link) => node::Link::ask_to_stop(link),
        }
    }

    /// The next thing the worker said that the pool cares about. `Ok(None)`
    /// when the worker closed its end (it exited).
    pub async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        match self {
            Transport::Native(channel) => channel.recv().await,
            Transport::Node(link) => link.recv().await,
        }
    }
}
