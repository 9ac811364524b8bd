//! A worker: one process in one slot, and the state machine both go through.
//!
//! A *slot* is a stable worker id (`SOCKHERD_WORKER_ID`, 0..N-1). It outlives the
//! processes that fill it: a crashed worker is replaced under the same id. A
//! *worker* is one such process. Every feature of the pool — start, restart,
//! drain, reload, scale, shutdown — is a path through this one machine:
//!
//! ```text
//!  slot:   ┌──────────── backoff ◄─────────── crash (unexpected exit, garbage,
//!          │  (delay ×1.5,  │                  ready timeout, hung, …)
//!          │   ≤ 15 s)      │ too many crashes in the window
//!          ▼                ▼                           ▲
//!  spawn ──► starting ──READY=1──► ready ───────────────┤
//!              │                     │ chosen to go     │
//!              │                     │ (reload, scale,  │
//!              │                     │  STOPPING=1,     │
//!              │                     ▼  shutdown)       │
//!              └──────────────────► draining ──exit──► exited (not a crash)
//!                                     │ kill timeout: SIGKILL
//!                                     ▼
//!                                   exited           gave-up (slot stays empty)
//! ```
//!
//! A worker receives connections only while `ready`: it joins the dispatch ring
//! on `READY=1` and leaves it the moment it starts draining, before it is told to
//! shut down, so nothing new reaches a worker that is going away.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::History;
use crate::conn::dispatch::Route;

/// Where one process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Spawned, not yet ready; killed if still here at `deadline`.
    Starting { deadline: Instant },
    /// In the dispatch ring.
    Ready,
    /// Out of the ring, finishing what it has; SIGKILLed at `kill_at`.
    Draining { kill_at: Instant },
}

impl State {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Starting { .. } => "starting",
            State::Ready => "ready",
            State::Draining { .. } => "draining",
        }
    }
}

/// A worker process as the manager holds it: its pid, a way to signal it, and
/// the tasks that watch it.
pub(crate) struct Process {
    pub pid: u32,
    /// The task that owns the child process: signals go through it, so a
    /// signal can never reach a recycled pid after the child was reaped.
    pub signals: mpsc::UnboundedSender<Signal>,
    /// Tasks reaping it and reading its channel and output; stopped when the
    /// worker is dropped.
    pub tasks: Vec<JoinHandle<()>>,
}

/// One worker process in its slot.
pub(crate) struct Worker {
    /// The slot it fills.
    pub id: u32,
    /// Unique per process for the manager's lifetime; events name workers by it.
    pub serial: u64,
    pub pid: u32,
    /// The generation whose command it runs.
    pub generation: u32,
    pub state: State,
    /// Its entry in the dispatch ring (joined only while ready).
    pub route: Rc<Route>,
    /// For uptime, which decides whether a crash is part of a streak.
    pub started: Instant,
    /// For `ListWorkers`: start time as wall-clock.
    pub started_wall: SystemTime,
    /// Last `WATCHDOG=1`; a worker that has sent one is expected to keep sending.
    pub last_heartbeat: Option<Instant>,
    /// Why we decided to kill it, if we did; its exit then counts as a crash.
    pub condemned: Option<String>,
    /// When its channel closed; a worker that stays alive without one is killed.
    pub channel_closed: Option<Instant>,
    /// The process itself.
    process: Process,
}

impl Worker {
    /// Worker `id` (process `serial`, running `generation`'s command),
    /// starting: it is killed if not ready by `ready_deadline`.
    pub(crate) fn new(
        id: u32,
        serial: u64,
        generation: u32,
        process: Process,
        route: Rc<Route>,
        ready_deadline: Instant,
    ) -> Worker {
        Worker {
            id,
            serial,
            pid: process.pid,
            generation,
            state: State::Starting {
                deadline: ready_deadline,
            },
            route,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            last_heartbeat: None,
            condemned: None,
            channel_closed: None,
            process,
        }
    }

    /// Sends a signal to the worker's process group (the worker and its children).
    pub(crate) fn signal(&self, signal: Signal) {
        let _ = self.process.signals.send(signal);
    }

    /// Kills it now; its exit will count as a crash for `reason`.
    pub(crate) fn condemn(&mut self, reason: String) {
        self.condemned.get_or_insert(reason);
        self.signal(Signal::SIGKILL);
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether it takes connections: ready, and not on its way out because
    /// it was killed or its channel closed.
    pub(crate) fn serving(&self) -> bool {
        self.state == State::Ready && self.condemned.is_none() && self.channel_closed.is_none()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for task in &self.process.tasks {
            task.abort();
        }
    }
}

/// What a slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Filled by this worker (which may be starting, ready or draining).
    Running(u64),
    /// Empty until `until`, after a crash.
    Backoff { until: Instant },
    /// Empty for good: it crashed too often.
    GaveUp,
}

/// A stable worker id and its crash history.
pub(crate) struct Slot {
    pub id: u32,
    pub state: SlotState,
    pub history: History,
    /// The generation its workers run: the serving one, or the one a reload
    /// under way moved it to.
    pub generation: u32,
}

impl Slot {
    /// A new slot of `generation`, due to be filled at `now`.
    pub(crate) fn new(id: u32, generation: u32, now: Instant) -> Slot {
        Slot {
            id,
            state: SlotState::Backoff { until: now },
            history: History::default(),
            generation,
        }
    }
}
