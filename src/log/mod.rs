//! Where lines go: the manager's own events and every line its workers write,
//! to the journal with structured fields under systemd, to stderr otherwise
//! ([`journal`]); each worker's stdout and stderr are read and tagged with the
//! worker ([`output`]).

pub(crate) mod journal;
pub(crate) mod output;
