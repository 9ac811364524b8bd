//! The pool: the manager's single owner of every worker and slot.
//!
//! Everything that happens to a worker arrives as a
//! [`launch::WorkerEvent`] — a message on its channel, garbage, its channel
//! closing, its exit — and everything asked of the pool arrives as a
//! [`report::Request`] (reload, scale, restart one, status). The pool answers
//! in one event loop ([`run`]); [`worker`] draws the state machine every
//! worker goes through, and [`state`] holds what the pool knows.
//!
//! Reload, restart and scale-up are all *replacements* ([`reload`],
//! [`scale`]): start a new worker, wait for `READY=1`, only then take the old
//! one out of the ring and drain it. If the new one fails to become ready, it
//! is killed and the old one keeps serving. Scale-down and shutdown drain: out
//! of the ring first, then asked to stop (`SHUTDOWN=1`; see
//! [`crate::conn::transport::Transport::ask_to_stop`]), then SIGKILL at the
//! kill timeout. A crash costs the slot a growing delay and, past the limit,
//! gives it up ([`backoff`]).
//!
//! Workers are started by a [`launch::Launch`]: real processes ([`spawn`],
//! held by pidfds, [`child`], their output forwarded to the log), or nothing
//! at all in the pool's own unit tests. A steady pool can carry itself
//! across a re-exec of the manager ([`image`], [`carried`]): the next image
//! takes up the same processes through the same launcher. The accept loops never go through here: the pool only adds
//! workers to and removes them from the dispatch ring.

pub(crate) mod backoff;
pub(crate) mod carried;
mod child;
mod events;
mod image;
pub(crate) mod launch;
pub(crate) mod orphans;
mod reload;
pub(crate) mod report;
mod run;
mod scale;
pub(crate) mod settings;
pub(crate) mod spawn;
pub(crate) mod state;
pub(crate) mod usage;
pub(crate) mod worker;

#[cfg(test)]
mod tests;

pub(crate) use run::{Outcome, REAP_GRACE};
pub(crate) use settings::{Reconfigure, Settings};
pub(crate) use state::Pool;
