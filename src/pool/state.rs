//! Everything the pool knows: its slots, its worker processes and the
//! operations under way, and the two things it does to workers, start and
//! drain. The rest of the pool — its loop ([`super::run`]), what happens to
//! workers ([`super::events`]), reloads and scaling — acts on this state
//! through these.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::launch::{Launch, WorkerEvent, EVENTS_IN_FLIGHT};
use super::report::{
    Event, Handle, PoolState, Reply, Request, Snapshot, Status, WorkerInfo, REQUESTS_IN_FLIGHT,
};
use super::settings::{Configured, Reconfigure, Settings};
use super::spawn::Spec;
use super::worker::{Slot, SlotState, State, Worker};
use crate::conn::dispatch::Dispatcher;

/// Why a new worker is being started next to an old one.
pub(crate) enum Purpose {
    Reload,
    /// A failed reload takes back a slot it had already moved.
    Rollback,
    Restart(Reply<()>),
    /// The old worker grew past `--max-memory`.
    Memory,
}

/// The generation the workers started first run.
const FIRST_GENERATION: u32 = 1;

/// A new worker standing in for slot `id`'s current one once it is ready.
pub(crate) struct Replacement {
    pub id: u32,
    pub new: u64,
    pub purpose: Purpose,
}

/// A rolling reload under way. What it rolls out is kept here, not in the
/// pool's own spec and settings, until every slot runs it: a reload that
/// fails leaves no trace.
pub(crate) struct Reload {
    /// Slots still to be replaced, in order.
    pub queue: VecDeque<u32>,
    /// The generation being rolled out.
    pub generation: u32,
    /// Its command and settings; `None` while the config file is being read.
    pub next: Option<(Spec, Settings)>,
    pub reply: Option<Reply<u32>>,
}

/// A `Scale` call waiting for its outcome.
pub(crate) struct ScaleWait {
    /// Scale up: these slots must become ready. Scale down: these workers must exit.
    pub slots: Vec<u32>,
    pub draining: Vec<u64>,
    pub target: u32,
    pub reply: Reply<u32>,
}

/// The manager's single owner of every worker and slot.
pub(crate) struct Pool {
    pub(super) spec: Spec,
    pub(super) settings: Settings,
    /// Present when a config file is used: a reload re-reads it first.
    pub(super) reconfigure: Option<Reconfigure>,
    /// Starts the worker processes, and tidies up after them.
    pub(super) launcher: Box<dyn Launch>,
    /// Index = worker id; its length is the target worker count.
    pub(super) slots: Vec<Slot>,
    /// Every live worker process by serial: those filling slots, new ones
    /// standing in for them, and draining ones.
    pub(super) workers: BTreeMap<u64, Worker>,
    pub(super) dispatcher: Rc<Dispatcher>,
    /// Handed to the tasks watching workers.
    pub(super) worker_events_tx: mpsc::Sender<WorkerEvent>,
    pub(super) worker_events: mpsc::Receiver<WorkerEvent>,
    /// Workers whose channel broke under dispatch.
    pub(super) broken: mpsc::UnboundedReceiver<u64>,
    /// The config file re-read for a reload, when it has been.
    pub(super) reread_tx: mpsc::UnboundedSender<Configured>,
    pub(super) reread: mpsc::UnboundedReceiver<Configured>,
    pub(super) requests: mpsc::Receiver<Request>,
    snapshot: watch::Sender<Snapshot>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) next_serial: u64,
    pub(super) generation: u32,
    pub(super) replacements: Vec<Replacement>,
    pub(super) reload: Option<Reload>,
    pub(super) scale_waits: Vec<ScaleWait>,
    /// Set once every slot has been ready; from then on fewer is "degraded".
    pub(super) was_running: Cell<bool>,
    /// A memory sample is under way.
    pub(super) sampling: Cell<bool>,
    pub(super) stopping: bool,
}

impl Pool {
    /// A pool for `spec`, and the handle through which the rest of the manager
    /// watches and steers it.
    pub(crate) fn new(
        spec: Spec,
        settings: Settings,
        reconfigure: Option<Reconfigure>,
        dispatcher: Rc<Dispatcher>,
        broken: mpsc::UnboundedReceiver<u64>,
        launcher: Box<dyn Launch>,
    ) -> (Pool, Handle) {
        let (worker_events_tx, worker_events) = mpsc::channel(EVENTS_IN_FLIGHT);
        let (requests_tx, requests) = mpsc::channel(REQUESTS_IN_FLIGHT);
        let (reread_tx, reread) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(256);
        let now = Instant::now();
        let slots = (0..settings.workers)
            .map(|id| Slot::new(id, FIRST_GENERATION, now))
            .collect();
        let (snapshot, snapshot_rx) = watch::channel(Snapshot {
            app: spec.app.clone(),
            target: settings.workers,
            ready: 0,
            state: PoolState::Starting,
            restarts: 0,
            generation: FIRST_GENERATION,
            gave_up: Vec::new(),
            policy: settings.policy.name().to_owned(),
        });
        let handle = Handle {
            requests: requests_tx,
            snapshot: snapshot_rx,
            events: events.clone(),
        };
        let pool = Pool {
            spec,
            settings,
            reconfigure,
            launcher,
            slots,
            workers: BTreeMap::new(),
            dispatcher,
            worker_events_tx,
            worker_events,
            broken,
            reread_tx,
            reread,
            requests,
            snapshot,
            events,
            next_serial: 1,
            generation: FIRST_GENERATION,
            replacements: Vec::new(),
            reload: None,
            scale_waits: Vec::new(),
            was_running: Cell::new(false),
            sampling: Cell::new(false),
            stopping: false,
        };
        (pool, handle)
    }

    /// Starts a process for slot `id` running `generation`'s command (the
    /// serving one, or that of the reload under way) and returns its serial;
    /// the caller decides what it stands for. A failure to start counts as a
    /// crash of the slot.
    pub(super) fn start(&mut self, id: u32, generation: u32) -> Option<u64> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let (spec, settings) = match &self.reload {
            Some(Reload {
                generation: rolled_out,
                next: Some((spec, settings)),
                ..
            }) if *rolled_out == generation => (spec, settings),
            _ => (&self.spec, &self.settings),
        };
        let deadline = Instant::now() + settings.ready_timeout;
        let launched =
            self.launcher
                .launch(spec, id, serial, &self.worker_events_tx, &self.dispatcher);
        let launched = match launched {
            Ok(launched) => launched,
            Err(e) => {
                tracing::error!(
                    event = "worker-spawn-failed",
                    worker_id = id,
                    "cannot start worker {id}: {e}"
                );
                self.crashed(id, Duration::ZERO);
                return None;
            }
        };
        let pid = launched.process.pid;
        let worker = Worker::new(
            id,
            serial,
            generation,
            launched.process,
            launched.route,
            deadline,
        );
        tracing::info!(
            event = "worker-started",
            worker_id = id,
            worker_pid = pid,
            "worker {id} started (pid {pid})"
        );
        let _ = self.events.send(Event::WorkerStarted { id, pid });
        self.workers.insert(serial, worker);
        Some(serial)
    }

    /// Takes a worker out of the ring and asks it to finish; it is killed at
    /// the kill timeout. Its exit is not a crash.
    pub(super) fn drain(&mut self, serial: u64, why: &str) {
        let kill_at = Instant::now() + self.settings.kill_timeout;
        self.dispatcher.leave(serial);
        let Some(worker) = self.workers.get_mut(&serial) else {
            return;
        };
        if matches!(worker.state, State::Draining { .. }) {
            return;
        }
        tracing::info!(
            event = "worker-draining",
            worker_id = worker.id,
            worker_pid = worker.pid,
            "draining worker {} (pid {}): {why}",
            worker.id,
            worker.pid
        );
        worker
            .route
            .transport
            .ask_to_stop(self.settings.kill_signal);
        worker.state = State::Draining { kill_at };
    }

    pub(super) fn slot_is(&self, id: u32, serial: u64) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|s| s.state == SlotState::Running(serial))
    }

    /// Every worker process as it stands. Nothing is read from `/proc`
    /// here: who wants memory and CPU figures reads them off the event loop
    /// ([`super::usage::sample`]).
    pub(super) fn status(&self) -> Status {
        let workers = self
            .workers
            .values()
            .map(|w| WorkerInfo {
                id: w.id,
                pid: w.pid,
                state: w.state.name().to_owned(),
                restarts: self
                    .slots
                    .get(w.id as usize)
                    .map_or(0, |s| s.history.restarts),
                started_usec: w
                    .started_wall
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
                connections: w.route.dispatched.get(),
                open: w.route.open(),
            })
            .collect();
        Status {
            workers,
            connections: self.dispatcher.total(),
        }
    }

    /// Publishes the snapshot if anything in it changed.
    pub(super) fn publish(&self) {
        let ready = self
            .slots
            .iter()
            .filter(|s| match s.state {
                SlotState::Running(serial) => {
                    self.workers.get(&serial).is_some_and(Worker::serving)
                }
                _ => false,
            })
            .count() as u32;
        let target = self.slots.len() as u32;
        if ready >= target {
            self.was_running.set(true);
        }
        let state = if self.stopping {
            PoolState::Stopping
        } else if self.reload.is_some() {
            PoolState::Reloading
        } else if ready >= target {
            PoolState::Running
        } else if self.was_running.get() {
            PoolState::Degraded
        } else {
            PoolState::Starting
        };
        let snapshot = Snapshot {
            app: self.spec.app.clone(),
            target,
            ready,
            state,
            restarts: self.slots.iter().map(|s| s.history.restarts).sum(),
            generation: self.generation,
            gave_up: self
                .slots
                .iter()
                .filter(|s| s.state == SlotState::GaveUp)
                .map(|s| s.id)
                .collect(),
            policy: self.settings.policy.name().to_owned(),
        };
        self.snapshot.send_if_modified(|current| {
            if *current == snapshot {
                false
            } else {
                *current = snapshot;
                true
            }
        });
    }
}
