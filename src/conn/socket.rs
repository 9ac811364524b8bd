//! A listening socket as the connection path sees it.
//!
//! Dispatch needs to know, for every listening socket, where it listens (a
//! Node.js app asks for its sockets by port), what to tell a native worker with
//! each of its connections (`CONN=<name>`) and how many of them one message
//! holds, and where a connection goes when a worker hands it back
//! undelivered: to the accept loop of the socket it came from, which
//! dispatches it again like a new one.

use std::os::fd::OwnedFd;

use tokio::sync::mpsc;

use super::protocol::{MAX_CONNS_PER_MESSAGE, MAX_MESSAGE};
use crate::sockets::listener::Local;

/// A listening socket as dispatch sees it.
#[derive(Debug)]
pub(crate) struct Socket {
    /// Its place among the manager's sockets (the order systemd passed them in).
    pub index: usize,
    /// Where it listens: a Node.js app asks for its sockets by port.
    pub local: Local,
    /// What a native worker is told with each of its connections: `CONN=<name>`.
    pub message: Vec<u8>,
    /// How many of its connections one message of protocol version 2
    /// holds: a line each, `\n`-separated, within the message size and the
    /// kernel's limit of descriptors per message.
    pub batch: usize,
    /// Connections a worker handed back, to be dispatched again by this
    /// socket's accept loop.
    returned: mpsc::UnboundedSender<OwnedFd>,
}

impl Socket {
    /// Puts a connection a worker did not take back in line for dispatch. If
    /// the accept loop is gone (the manager is stopping) it is closed.
    pub(crate) fn give_back(&self, conn: OwnedFd) {
        let _ = self.returned.send(conn);
    }
}

impl Socket {
    /// A socket at `index` among the manager's, named `name`, and the
    /// receiver of the connections workers hand back, for its accept loop.
    pub(crate) fn new(
        index: usize,
        name: &str,
        local: Local,
    ) -> (Socket, mpsc::UnboundedReceiver<OwnedFd>) {
        let (returned, returns) = mpsc::unbounded_channel();
        let message = format!("CONN={name}").into_bytes();
        let batch = ((MAX_MESSAGE + 1) / (message.len() + 1)).clamp(1, MAX_CONNS_PER_MESSAGE);
        let socket = Socket {
            index,
            local,
            message,
            batch,
            returned,
        };
        (socket, returns)
    }
}
