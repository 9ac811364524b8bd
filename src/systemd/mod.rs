//! Living inside systemd: what it is told ([`notify`], [`status`]), the
//! watchdog it keeps fed ([`watchdog`]), and the journal the manager and its
//! workers log to ([`journal`]).

pub(crate) mod journal;
pub(crate) mod notify;
pub(crate) mod status;
pub(crate) mod watchdog;
