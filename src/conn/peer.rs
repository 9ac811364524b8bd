//! The worker at the other end of a transport, and its answer to an offer.
//!
//! Every transport ([`super::transport`]) knows which process it talks to —
//! its slot and pid for logs, and a way to signal it that can never reach a
//! recycled pid ([`Peer`]) — and answers an offered connection the same way:
//! taken, or handed back with the reason ([`Refused`]), which tells dispatch
//! whether to try the next worker or to wait.

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

/// The worker process a transport belongs to.
pub(crate) struct Peer {
    /// Its slot, for logs.
    pub id: u32,
    /// Its pid, for logs.
    pub pid: u32,
    /// Signals to its process group, through the task that reaps it (never a
    /// recycled pid): a shared-accept worker is asked to stop with a signal.
    pub signals: mpsc::UnboundedSender<Signal>,
}

/// Why a worker did not take a connection; the connection comes back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It is slow or still busy with the previous one: try another worker.
    Busy,
    /// It does not listen on the socket the connection came from.
    NotListening,
    /// Its channel is broken: it died or is dying.
    Gone,
}
