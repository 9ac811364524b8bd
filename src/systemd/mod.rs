//! Living inside systemd: what it is told ([`notify`], [`status`]) and the
//! watchdog it keeps fed ([`watchdog`]).

pub(crate) mod notify;
pub(crate) mod status;
pub(crate) mod watchdog;
