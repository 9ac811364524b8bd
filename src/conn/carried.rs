//! What the connection path hands to the next image of the manager in a
//! re-exec ([`crate::reexec`]): each worker's transport, by its descriptor
//! number and the little state its protocol had agreed on, and the app's
//! protocol. Plain data, written to the image as JSON.
//!
//! Only a transport with nothing in flight is carried ([`super::transport::Transport::carry`]
//! says why not otherwise): a connection the worker has not answered for,
//! output it has not read, half a message. Those settle in milliseconds; the
//! re-exec is refused as busy until they have.

use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A Node.js app's servers, as a link registered them: key, key as JSON,
/// the indexes of the manager's sockets each gets.
pub(crate) type CarriedServers = Vec<(String, String, Vec<usize>)>;

/// One worker's transport, as it stood at the exec.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Carried {
    /// A native channel.
    Native {
        fd: RawFd,
        /// The protocol version it speaks.
        version: u32,
        /// Whether it was told to report each close (`CLOSED_REPORTS=each`).
        told_each: bool,
        /// Whether the policy wants each close.
        wanted_each: bool,
    },
    /// A Node.js IPC channel.
    Node {
        fd: RawFd,
        servers: CarriedServers,
        /// The next cluster `seq`.
        seq: u64,
        /// Readiness was reported.
        ready: bool,
        /// Its shim said hello.
        shim: bool,
    },
    /// A shared-accept worker's notify socket.
    Notify { fd: RawFd, path: PathBuf },
}

impl Carried {
    /// The descriptor the next image must inherit.
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Carried::Native { fd, .. } | Carried::Node { fd, .. } | Carried::Notify { fd, .. } => {
                *fd
            }
        }
    }
}

/// The app's protocol, without what the next image makes again (the shim,
/// the shared sockets).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CarriedProtocol {
    Native,
    Node {
        /// Cluster (`true`) or plain IPC.
        cluster: bool,
        wait_ready: bool,
        shutdown_message: bool,
        /// The `data` the first worker sent with each server key.
        server_data: Vec<(String, serde_json::Value)>,
        /// Answered with the shared sockets (`--policy none`).
        sharing: bool,
    },
    Shared,
}
