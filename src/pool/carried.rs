//! What the pool hands to the next image of the manager in a re-exec: plain
//! data, written to the image as JSON ([`crate::reexec`]). How the pool
//! makes it and takes it up again is [`super::image`].

use std::os::fd::RawFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backoff::CarriedHistory;
use super::spawn::CarriedSpec;
use crate::conn::carried::Carried;

/// Everything the pool hands to the next image.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CarriedPool {
    /// What the workers run: taken out first by the next image, which
    /// rebuilds it ([`Spec::adopt`]).
    pub spec: Option<CarriedSpec>,
    pub settings: CarriedSettings,
    pub generation: u32,
    pub next_serial: u64,
    pub was_running: bool,
    pub slots: Vec<CarriedSlot>,
    pub workers: Vec<CarriedWorker>,
    /// Connections dispatched since the manager started.
    pub connections: u64,
}

/// The pool's settings, as plain values.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CarriedSettings {
    pub workers: u32,
    pub max_workers: u32,
    pub ready_timeout: Duration,
    pub kill_timeout: Duration,
    pub kill_signal: i32,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub reload_batch: u32,
    pub policy: String,
    pub heartbeat_timeout: Option<Duration>,
    pub max_memory: Option<u64>,
}

/// One slot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CarriedSlot {
    pub id: u32,
    /// Filled by the worker of this serial.
    pub running: Option<u64>,
    /// Empty, restarting in this long.
    pub backoff: Option<Duration>,
    pub history: CarriedHistory,
    pub generation: u32,
}

/// One worker process.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CarriedWorker {
    pub id: u32,
    pub serial: u64,
    pub pid: u32,
    pub generation: u32,
    pub uptime: Duration,
    /// Start time, µs since the Unix epoch.
    pub started_usec: u64,
    /// How long ago its last heartbeat came, if one did.
    pub heartbeat_age: Option<Duration>,
    pub dispatched: u64,
    pub closed: u64,
    pub transport: Carried,
    /// The read ends of its stdout and stderr pipes, if the log thread still
    /// read them (filled in by whoever carries the log: [`crate::reexec`]).
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
}
