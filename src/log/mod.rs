//! Where lines go: the manager's own events and every line its workers
//! write. Nothing is dropped for being too many, and nothing is written from
//! the event loop that accepts and hands over connections.
//!
//! - **Under systemd** (the manager logs to the journal) each worker's
//!   stdout and stderr are journal streams the worker connects itself,
//!   between fork and exec ([`stream`]): the manager is out of the path of
//!   worker lines, journald sees the worker's own `_PID`, and
//!   `SYSLOG_IDENTIFIER=app/ID` names the worker (`journalctl -u app -t
//!   app/3`). When journald lags, the worker's writes wait.
//! - **Otherwise** (stderr, the embedded mode; or a worker whose stream
//!   could not be connected) stdout and stderr are pipes to the manager,
//!   read by a thread of its own, the log thread ([`pump`]), cut into lines
//!   ([`output`]: whole up to 8192 bytes, longer ones split and marked) and
//!   written to stderr as `app[ID]: line`, or to the journal with
//!   `SOCKHERD_WORKER_ID`, `SOCKHERD_WORKER_PID`, `SOCKHERD_STREAM` fields
//!   ([`sink`], [`native`]). When the sink is slow, the thread stops
//!   reading, the pipes fill, and the workers' writes wait.
//! - **The manager's events** are formatted where they happen and queued for
//!   the log thread without waiting ([`events`]); a full queue drops them
//!   with a count, logged once it drains.
//! - **A broken sink** (stderr's reader gone, journald gone) loses lines and
//!   counts them, and never stops serving.
//!
//! Why streams under systemd and not the log thread for everything: with the
//! manager forwarding, every worker line costs the manager a read, a copy
//! and a send, and journald files it under the manager's `_PID`; with
//! streams it costs the manager nothing and journald files each line under
//! its worker. The measurements behind the choice are in docs/systemd.md
//! ("Journal") and bench/RESULTS.md ("Logging").

pub(crate) mod events;
pub(crate) mod native;
pub(crate) mod output;
pub(crate) mod pump;
pub(crate) mod setup;
pub(crate) mod sink;
pub(crate) mod stream;

pub(crate) use pump::{flush, forward, surrender, Pipe};
pub(crate) use setup::{init, Target};

/// Which of a worker's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}
