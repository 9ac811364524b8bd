//! The pool's settings: how many workers, how long each step may take, and
//! when a crashing slot gives up. From flags and the config file at start;
//! a reload may bring new ones.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::backoff::Limit;
use super::spawn::Spec;
use crate::conn::policy::Policy;

/// The pool's settings, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Workers wanted at start.
    pub workers: u32,
    /// `Scale` refuses more than this.
    pub max_workers: u32,
    /// A new worker that is not ready within this is killed (and counts as a crash).
    pub ready_timeout: Duration,
    /// How long a draining worker may take before SIGKILL.
    pub kill_timeout: Duration,
    /// What a Node.js or shared-accept worker is asked to stop with.
    pub kill_signal: Signal,
    /// The crash-loop limit.
    pub limit: Limit,
    /// Workers replaced at once in a rolling reload.
    pub reload_batch: u32,
    /// Who gets the next connection; also shown in status.
    pub policy: Policy,
    /// A worker that sent a heartbeat and then none for this long is hung.
    pub heartbeat_timeout: Option<Duration>,
    /// RSS above which a worker is replaced (new before old); past twice
    /// this it is killed outright.
    pub max_memory: Option<u64>,
}

/// Re-reads the config file for a reload: the new command and settings, or
/// why there are none. A future, so that the file is read off the event loop.
pub(crate) type Reconfigure = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Configured>>>>;

/// What a reload would run: the command and settings, or why they cannot be had.
pub(crate) type Configured = Result<(Spec, Settings), String>;
