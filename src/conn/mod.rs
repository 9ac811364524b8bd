//! The connection path: from a listening socket to a worker.
//!
//! One task per listening socket accepts ([`accept`]) and hands every
//! connection to the [`dispatch::Dispatcher`], which offers it to the ready
//! workers in the order the [`policy`] gives until one takes it. How it
//! reaches a worker is that worker's [`transport`]: the native [`channel`]
//! (one `SOCK_SEQPACKET` datagram with the fd attached), a Node.js link
//! ([`node`]), or nothing at all under `--policy none`, where the workers
//! inherit the sockets and accept by themselves ([`shared`]). What a
//! worker says back is a [`notice`]; the counters kept on the way are
//! [`stats`]; the manager's copies of what it handed over are closed
//! together ([`close`]).
//!
//! For a re-exec of the manager the accept loops park ([`pause`]) and each
//! transport says what it carries to the next image ([`carried`]).
//!
//! Nothing here owns a worker: the pool ([`crate::pool`]) adds workers to the
//! dispatch ring when they are ready and removes them when they go.

pub(crate) mod accept;
pub(crate) mod carried;
pub(crate) mod channel;
pub(crate) mod close;
pub(crate) mod dispatch;
pub(crate) mod node;
pub(crate) mod notice;
pub(crate) mod pause;
pub(crate) mod peer;
pub(crate) mod policy;
pub(crate) mod protocol;
pub(crate) mod rundir;
pub(crate) mod shared;
pub(crate) mod socket;
pub(crate) mod stats;
pub(crate) mod transport;
