//! What the pool tells the rest of the manager, and what can be asked of it.
//!
//! The pool is the only owner of worker state. Everything else — `sd_notify`
//! ([`crate::systemd`]), D-Bus ([`crate::bus`]), metrics, signals —
//! learns about it through two channels and acts on it through one:
//! - a [`Snapshot`] on a `watch` channel, replaced whenever something a user
//!   would see changed (ready count, state, restarts, generation, give-ups);
//! - [`Event`]s on a `broadcast` channel, one per thing that happened (a
//!   worker started or exited, a reload finished);
//! - [`Request`]s on an `mpsc` channel, each with a `oneshot` for its answer.
//!
//! All of these types are `Send`, so the D-Bus service may live on any thread.

use std::fmt;

use tokio::sync::oneshot;

/// The pool as a user sees it, kept current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The app's name.
    pub app: String,
    /// Workers wanted (`Scale` changes it).
    pub target: u32,
    /// Workers in the dispatch ring now.
    pub ready: u32,
    pub state: PoolState,
    /// Restarts after crashes, summed over slots, since the manager started.
    pub restarts: u32,
    /// Bumped by every successful reload; workers of generation 1 came first.
    pub generation: u32,
    /// Slots that gave up after too many crashes.
    pub gave_up: Vec<u32>,
    /// The dispatch policy's name.
    pub policy: String,
}

/// The pool's overall state (`State` on D-Bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolState {
    /// Not every worker has been ready yet.
    Starting,
    /// Every slot has a ready worker.
    Running,
    /// A rolling reload is under way.
    Reloading,
    /// Fewer ready workers than wanted (crashes, give-ups) after having run.
    Degraded,
    /// Draining for shutdown.
    Stopping,
}

impl PoolState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PoolState::Starting => "starting",
            PoolState::Running => "running",
            PoolState::Reloading => "reloading",
            PoolState::Degraded => "degraded",
            PoolState::Stopping => "stopping",
        }
    }
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened, as D-Bus signals and the status line report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    WorkerStarted {
        id: u32,
        pid: u32,
    },
    /// `status`: the exit code, or the negated signal number.
    WorkerExited {
        id: u32,
        pid: u32,
        status: i32,
        reason: String,
    },
    Reloaded {
        generation: u32,
        ok: bool,
    },
}

/// One worker, as `ListWorkers` and `sockherd status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerInfo {
    pub id: u32,
    pub pid: u32,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// Restarts of this slot.
    pub restarts: u32,
    /// Start time, µs since the Unix epoch.
    pub started_usec: u64,
    /// Connections handed to this process.
    pub connections: u64,
    /// Of those, the ones it has not reported closed yet (least-conn's count).
    pub open: u64,
}

/// The answers to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub workers: Vec<WorkerInfo>,
    /// Connections dispatched since the start.
    pub connections: u64,
}

/// Why a request was refused or failed; maps to `io.sockherd.Error.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestError {
    InvalidArgs(String),
    /// Another reload (or scale) is under way.
    Busy(String),
    Failed(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::InvalidArgs(m) | RequestError::Busy(m) | RequestError::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for RequestError {}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// What can be asked of the pool.
#[derive(Debug)]
pub(crate) enum Request {
    /// Rolling reload; answers with the new generation once it finished.
    Reload(Reply<u32>),
    /// Set the worker count; answers once new workers are ready or removed ones drained.
    Scale(u32, Reply<u32>),
    /// Change the worker count by a delta; answers with the new count.
    ScaleBy(i32, Reply<u32>),
    /// Replace one worker, new before old.
    RestartWorker(u32, Reply<()>),
    /// The workers and counters now (nothing from `/proc`: see
    /// [`super::usage::sample`]).
    Status(Reply<Status>),
    /// Connections dispatched since the start: cheap, for frequent readers.
    Connections(Reply<u64>),
    /// Answered at once: proves the pool's loop is turning (for the watchdog).
    Ping(oneshot::Sender<()>),
    /// Whether the pool could be carried across a re-exec now: `Busy` with
    /// the reason if an operation is under way; `false` while something is
    /// in flight that settles in a moment ([`super::image`]).
    Steady(Reply<bool>),
    /// Carry the pool and hand it to the re-exec; answered only if the
    /// re-exec did not happen (`Busy`, or `Failed` with why).
    Reexec(Exec, Reply<()>),
}

/// The re-exec itself ([`crate::reexec`]): given the carried pool, it
/// replaces the process, or returns why it could not.
pub(crate) struct Exec(pub Box<dyn FnOnce(super::carried::CarriedPool) -> String + Send>);

impl fmt::Debug for Exec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exec")
    }
}

/// Requests waiting for the pool; more wait to be sent.
pub(crate) const REQUESTS_IN_FLIGHT: usize = 256;

/// Everything another part of the manager needs to watch and steer the pool.
/// Cheap to clone; `Send`.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    /// Bounded ([`REQUESTS_IN_FLIGHT`]): a flood of D-Bus calls waits for the
    /// pool, it does not pile up in the manager's memory.
    pub requests: tokio::sync::mpsc::Sender<Request>,
    pub snapshot: tokio::sync::watch::Receiver<Snapshot>,
    pub events: tokio::sync::broadcast::Sender<Event>,
}

impl Handle {
    /// Sends a request and waits for its answer.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| RequestError::Failed("the manager is shutting down".into()))?;
        rx.await
            .map_err(|_| RequestError::Failed("the manager is shutting down".into()))?
    }
}
