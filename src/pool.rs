//! The pool: the manager's single owner of every worker and slot.
//!
//! The pool runs one event loop. Everything that happens to a worker arrives
//! here as a [`WorkerEvent`] — a message on its channel, garbage, its channel
//! closing, its exit — and everything asked of the pool arrives as a
//! [`Request`] (stop, reload, scale, restart one, status). Timers (backoff,
//! ready timeouts, kill timeouts) are derived from the state each time round
//! the loop rather than kept as tasks, so the state in [`crate::worker`] is the
//! whole truth. After every turn the pool publishes a [`Snapshot`].
//!
//! Reload, restart and scale-up are all *replacements*: start a new worker,
//! wait for `READY=1`, only then take the old one out of the ring and drain it.
//! If the new one fails to become ready, it is killed and the old one keeps
//! serving. Scale-down and shutdown drain: out of the ring first, then asked
//! to stop (`SHUTDOWN=1`; see [`Transport::ask_to_stop`]), then SIGKILL at the
//! kill timeout.
//!
//! The accept loops never go through here: the pool only adds workers to and
//! removes them from the [`Dispatcher`]'s ring, and dispatch runs on its own.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::spawn_local;
use tokio::time::sleep_until;

use crate::backoff::{Limit, Verdict};
use crate::channel::{Garbage, Notice};
use crate::dispatch::{Dispatcher, Route};
use crate::journal::Stream;
use crate::policy::Policy;
use crate::report::{
    Event, Handle, PoolState, Request, RequestError, Snapshot, Status, WorkerInfo,
};
use crate::spawn::{self, Spec};
use crate::transport::{Peer, Transport};
use crate::worker::{Slot, SlotState, State, Worker};
use crate::{output, usage};

mod reload;
mod scale;

use reload::{Purpose, Reload, Replacement};
use scale::ScaleWait;

/// How long to wait for workers to be reaped after SIGKILL before giving up on them.
pub const REAP_GRACE: Duration = Duration::from_secs(2);

/// After SIGABRT (so a hung worker leaves a core), how long before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(3);

/// How long a worker whose channel closed may take to exit by itself before
/// it is killed: an exiting worker closes its channel a moment before it is reaped.
const CHANNEL_GRACE: Duration = Duration::from_secs(1);

/// How often worker memory is sampled for `--max-memory`.
const MEMORY_SAMPLE: Duration = Duration::from_secs(1);

/// The pool's settings, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workers wanted at start.
    pub workers: u32,
    /// `Scale` refuses more than this.
    pub max_workers: u32,
    /// A new worker that is not ready within this is killed (and counts as a crash).
    pub ready_timeout: Duration,
    /// How long a draining worker may take before SIGKILL.
    pub kill_timeout: Duration,
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

/// Re-reads the config file for a reload: the new command and settings.
pub type Reconfigure = Box<dyn Fn() -> Result<(Spec, Settings), String>>;

/// Something that happened to a worker, reported by the tasks watching it.
#[derive(Debug)]
enum WorkerEvent {
    Notice(u64, Notice),
    Garbage(u64, Garbage),
    ChannelClosed(u64),
    Exited(u64, ExitStatus),
}

/// How the pool's run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shut down on request.
    Stopped,
    /// Every slot gave up: the app cannot run.
    AllGaveUp,
}

pub struct Pool {
    spec: Spec,
    settings: Settings,
    /// Present when a config file is used: a reload re-reads it first.
    reconfigure: Option<Reconfigure>,
    /// Index = worker id; its length is the target worker count.
    slots: Vec<Slot>,
    /// Every live worker process by serial: those filling slots, new ones
    /// standing in for them, and draining ones.
    workers: BTreeMap<u64, Worker>,
    dispatcher: Rc<Dispatcher>,
    /// Handed to the tasks watching workers.
    worker_events_tx: mpsc::UnboundedSender<WorkerEvent>,
    worker_events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// Workers whose channel broke under dispatch.
    broken: mpsc::UnboundedReceiver<u64>,
    requests: mpsc::UnboundedReceiver<Request>,
    snapshot: watch::Sender<Snapshot>,
    events: broadcast::Sender<Event>,
    next_serial: u64,
    generation: u32,
    replacements: Vec<Replacement>,
    reload: Option<Reload>,
    scale_waits: Vec<ScaleWait>,
    /// Set once every slot has been ready; from then on fewer is "degraded".
    was_running: Cell<bool>,
    stopping: bool,
}

impl Pool {
    /// A pool for `spec`, and the handle through which the rest of the manager
    /// watches and steers it.
    pub fn new(
        spec: Spec,
        settings: Settings,
        reconfigure: Option<Reconfigure>,
        dispatcher: Rc<Dispatcher>,
        broken: mpsc::UnboundedReceiver<u64>,
    ) -> (Pool, Handle) {
        let (worker_events_tx, worker_events) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(256);
        let now = Instant::now();
        let slots = (0..settings.workers).map(|id| Slot::new(id, now)).collect();
        let (snapshot, snapshot_rx) = watch::channel(Snapshot {
            app: spec.app.clone(),
            target: settings.workers,
            ready: 0,
            state: PoolState::Starting,
            restarts: 0,
            generation: 1,
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
            slots,
            workers: BTreeMap::new(),
            dispatcher,
            worker_events_tx,
            worker_events,
            broken,
            requests,
            snapshot,
            events,
            next_serial: 1,
            generation: 1,
            replacements: Vec::new(),
            reload: None,
            scale_waits: Vec::new(),
            was_running: Cell::new(false),
            stopping: false,
        };
        (pool, handle)
    }

    /// Runs the pool until shutdown is requested (then drains) or every slot
    /// gives up. Accept loops stop when `stop_accepting` turns true, first
    /// thing in a shutdown.
    pub async fn run(mut self, stop_accepting: watch::Sender<bool>) -> Outcome {
        let mut sample = tokio::time::interval(MEMORY_SAMPLE);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            self.on_timers();
            self.publish();
            if !self.slots.is_empty() && self.slots.iter().all(|s| s.state == SlotState::GaveUp) {
                break Outcome::AllGaveUp;
            }
            let wake = self.next_deadline();
            tokio::select! {
                Some(event) = self.worker_events.recv() => self.on_worker_event(event),
                Some(serial) = self.broken.recv() => self.dispatcher.leave(serial),
                request = self.requests.recv() => match request {
                    Some(Request::Shutdown) | None => break Outcome::Stopped,
                    Some(request) => self.on_request(request),
                },
                _ = sample.tick(), if self.settings.max_memory.is_some() => self.check_memory(),
                _ = sleep_until(wake.into()) => {}
            }
        };
        let _ = stop_accepting.send(true);
        self.stopping = true;
        self.publish();
        self.shutdown().await;
        outcome
    }

    /// Answers the requests that only read, in any state; hands back the others.
    fn answer_query(&self, request: Request) -> Option<Request> {
        match request {
            Request::Ping(reply) => {
                let _ = reply.send(());
            }
            Request::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Request::Connections(reply) => {
                let _ = reply.send(Ok(self.dispatcher.total()));
            }
            other => return Some(other),
        }
        None
    }

    fn on_request(&mut self, request: Request) {
        let Some(request) = self.answer_query(request) else {
            return;
        };
        match request {
            Request::Shutdown | Request::Ping(_) | Request::Status(_) | Request::Connections(_) => {
            }
            Request::Reload(reply) => self.begin_reload(reply),
            Request::Scale(count, reply) => self.scale(count, reply),
            Request::ScaleBy(delta, reply) => {
                let target = self.slots.len() as i64 + i64::from(delta);
                if target < 1 {
                    let _ = reply.send(Err(RequestError::InvalidArgs(format!(
                        "cannot scale by {delta}: {} workers would be left",
                        target
                    ))));
                    return;
                }
                self.scale(u32::try_from(target).unwrap_or(u32::MAX), reply);
            }
            Request::RestartWorker(id, reply) => self.restart_worker(id, reply),
        }
    }

    /// The earliest moment a timer needs attention.
    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let slots = self.slots.iter().filter_map(|s| match s.state {
            SlotState::Backoff { until } => Some(until),
            _ => None,
        });
        let workers = self.workers.values().filter_map(|w| match w.state {
            State::Starting { deadline } => Some(deadline),
            State::Draining { kill_at } => Some(kill_at),
            State::Ready => None,
        });
        let orphans = self
            .workers
            .values()
            .filter(|w| w.condemned.is_none())
            .filter_map(|w| w.channel_closed.map(|t| t + CHANNEL_GRACE));
        slots.chain(workers).chain(orphans).min().unwrap_or(far)
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Backoff { until } if until <= now))
            .map(|s| s.id)
            .collect();
        for id in due {
            if let Some(serial) = self.start(id) {
                self.slots[id as usize].state = SlotState::Running(serial);
            }
        }
        for worker in self.workers.values_mut() {
            match worker.state {
                State::Starting { deadline } if deadline <= now && worker.condemned.is_none() => {
                    tracing::warn!(
                        event = "worker-ready-timeout",
                        worker_id = worker.id,
                        worker_pid = worker.pid,
                        "worker {} (pid {}) did not report ready within {:?}; killing it",
                        worker.id,
                        worker.pid,
                        self.settings.ready_timeout
                    );
                    worker.condemn(format!(
                        "not ready within {:?}",
                        self.settings.ready_timeout
                    ));
                }
                State::Draining { kill_at } if kill_at <= now => {
                    tracing::warn!(
                        event = "worker-kill-timeout",
                        worker_id = worker.id,
                        worker_pid = worker.pid,
                        "worker {} (pid {}) still running after the {:?} kill timeout; sending SIGKILL",
                        worker.id,
                        worker.pid,
                        self.settings.kill_timeout
                    );
                    worker.signal(Signal::SIGKILL);
                    // It is reaped soon; no further deadline for it.
                    worker.state = State::Draining {
                        kill_at: now + Duration::from_secs(3600),
                    };
                }
                _ if worker
                    .channel_closed
                    .is_some_and(|t| now >= t + CHANNEL_GRACE)
                    && worker.condemned.is_none()
                    && !matches!(worker.state, State::Draining { .. }) =>
                {
                    tracing::warn!(
                        event = "worker-channel-closed",
                        worker_id = worker.id,
                        worker_pid = worker.pid,
                        "worker {} (pid {}) closed its channel but keeps running; replacing it",
                        worker.id,
                        worker.pid
                    );
                    worker.condemn("closed its channel".into());
                }
                State::Ready => {
                    let silent = worker
                        .last_heartbeat
                        .map(|t| now.saturating_duration_since(t));
                    if let (Some(silent), Some(timeout)) = (silent, self.settings.heartbeat_timeout)
                    {
                        if silent > timeout {
                            tracing::warn!(
                                event = "worker-hung",
                                worker_id = worker.id,
                                worker_pid = worker.pid,
                                "worker {} (pid {}) sent no heartbeat for {:?}; sending SIGABRT",
                                worker.id,
                                worker.pid,
                                silent
                            );
                            self.dispatcher.leave(worker.serial);
                            worker.condemned = Some(format!("hung: no heartbeat for {silent:?}"));
                            worker.signal(Signal::SIGABRT);
                            // A stopped process only acts on the abort once continued.
                            worker.signal(Signal::SIGCONT);
                            worker.state = State::Draining {
                                kill_at: now + ABORT_GRACE,
                            };
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Replaces workers over `--max-memory`, new before old; kills those past twice it.
    fn check_memory(&mut self) {
        let Some(limit) = self.settings.max_memory else {
            return;
        };
        let mut over = Vec::new();
        for worker in self.workers.values_mut() {
            let (rss, _) = proc_usage(worker.pid);
            if rss > limit.saturating_mul(2) && worker.condemned.is_none() {
                tracing::warn!(
                    event = "worker-memory-kill",
                    worker_id = worker.id,
                    worker_pid = worker.pid,
                    rss_bytes = rss,
                    "worker {} (pid {}) uses {} MiB, over twice --max-memory; killing it",
                    worker.id,
                    worker.pid,
                    rss >> 20
                );
                self.dispatcher.leave(worker.serial);
                worker.condemn(format!("memory: {} MiB", rss >> 20));
            } else if rss > limit && worker.state == State::Ready {
                over.push((worker.id, worker.serial, rss));
            }
        }
        for (id, serial, rss) in over {
            if !self.slot_is(id, serial) || self.replacements.iter().any(|r| r.id == id) {
                continue;
            }
            tracing::info!(
                event = "worker-memory-replace",
                worker_id = id,
                rss_bytes = rss,
                "worker {id} uses {} MiB, over --max-memory; replacing it",
                rss >> 20
            );
            if let Some(new) = self.start(id) {
                self.replacements.push(Replacement {
                    id,
                    new,
                    purpose: Purpose::Memory,
                });
            }
        }
    }

    /// Starts a process for slot `id` in the current generation and returns
    /// its serial; the caller decides what it stands for. A failure to start
    /// counts as a crash of the slot.
    fn start(&mut self, id: u32) -> Option<u64> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let spawned = match spawn::spawn(&self.spec, id) {
            Ok(spawned) => spawned,
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
        let pid = spawned.pid;
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let peer = Peer {
            id,
            pid,
            signals: signal_tx.clone(),
        };
        let transport =
            match Transport::open(&self.spec.protocol, spawned.channel, peer, &self.dispatcher) {
                Ok(transport) => transport,
                Err(e) => {
                    tracing::error!(
                        worker_id = id,
                        "cannot watch the channel of worker {id}: {e}"
                    );
                    let _ = killpg(Pid::from_raw(spawned.pid as i32), Signal::SIGKILL);
                    self.crashed(id, Duration::ZERO);
                    return None;
                }
            };
        let tasks = vec![
            spawn_local(watch_process(
                serial,
                spawned.child,
                signal_rx,
                self.worker_events_tx.clone(),
            )),
            spawn_local(read_channel(
                serial,
                transport.clone(),
                self.worker_events_tx.clone(),
            )),
            spawn_local(output::forward(spawned.stdout, Stream::Stdout, id, pid)),
            spawn_local(output::forward(spawned.stderr, Stream::Stderr, id, pid)),
        ];
        let route = Rc::new(Route {
            serial,
            id,
            transport,
            dispatched: Cell::new(0),
            closed: Cell::new(0),
        });
        let deadline = Instant::now() + self.settings.ready_timeout;
        let worker = Worker::new(
            id,
            serial,
            pid,
            self.generation,
            route,
            deadline,
            signal_tx,
            tasks,
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

    fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Notice(serial, notice) => self.on_notice(serial, notice),
            WorkerEvent::Garbage(serial, Garbage(why)) => {
                if let Some(worker) = self.workers.get_mut(&serial) {
                    tracing::warn!(
                        event = "worker-protocol-error",
                        worker_id = worker.id,
                        worker_pid = worker.pid,
                        "worker {} (pid {}) broke the protocol ({why}); replacing it",
                        worker.id,
                        worker.pid
                    );
                    self.dispatcher.leave(serial);
                    worker.condemn(format!("protocol error: {why}"));
                }
            }
            WorkerEvent::ChannelClosed(serial) => {
                // Its exit normally follows at once; stop dispatching to it now,
                // and kill it if it lingers without a channel (see on_timers).
                self.dispatcher.leave(serial);
                if let Some(worker) = self.workers.get_mut(&serial) {
                    worker.channel_closed.get_or_insert(Instant::now());
                }
            }
            WorkerEvent::Exited(serial, status) => self.on_exit(serial, status),
        }
    }

    fn on_notice(&mut self, serial: u64, notice: Notice) {
        let Some(worker) = self.workers.get_mut(&serial) else {
            return;
        };
        if notice.heartbeat {
            worker.last_heartbeat = Some(Instant::now());
        }
        if notice.closed > 0 {
            worker.route.report_closed(notice.closed);
        }
        if let Some(status) = &notice.status {
            tracing::debug!(
                worker_id = worker.id,
                "worker {} status: {status}",
                worker.id
            );
        }
        if notice.ready
            && matches!(worker.state, State::Starting { .. })
            && worker.condemned.is_none()
        {
            worker.state = State::Ready;
            self.dispatcher.join(Rc::clone(&worker.route));
            tracing::info!(
                event = "worker-ready",
                worker_id = worker.id,
                worker_pid = worker.pid,
                "worker {} (pid {}) is ready",
                worker.id,
                worker.pid
            );
            self.on_ready(serial);
        }
        if notice.stopping {
            self.on_stopping(serial);
        }
    }

    /// A worker joined the ring. If it stands in for another, the other goes now.
    fn on_ready(&mut self, serial: u64) {
        if let Some(at) = self.replacements.iter().position(|r| r.new == serial) {
            let replacement = self.replacements.remove(at);
            let id = replacement.id;
            if let Some(previous) = self.slots.get(id as usize).map(|s| s.state) {
                if let SlotState::Running(old) = previous {
                    self.drain(old, "replaced");
                }
                self.slots[id as usize].state = SlotState::Running(serial);
            } else {
                // The slot was scaled away meanwhile; the new worker is surplus.
                self.drain(serial, "scaled down");
            }
            match replacement.purpose {
                Purpose::Restart(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Purpose::Reload => self.advance_reload(),
                Purpose::Memory => {}
            }
        }
        self.settle_scale_waits();
    }

    /// A worker announced it is going down on its own: it leaves the ring now,
    /// and its replacement starts now rather than after it is gone.
    fn on_stopping(&mut self, serial: u64) {
        let Some(worker) = self.workers.get(&serial) else {
            return;
        };
        if matches!(worker.state, State::Draining { .. }) || self.stopping {
            return;
        }
        let id = worker.id;
        tracing::info!(
            event = "worker-stopping",
            worker_id = id,
            worker_pid = worker.pid,
            "worker {id} (pid {}) announced it is stopping; starting its replacement",
            worker.pid
        );
        self.drain(serial, "announced stopping");
        if self.slot_is(id, serial) {
            self.slots[id as usize].state = match self.start(id) {
                Some(new) => SlotState::Running(new),
                None => self.slots[id as usize].state,
            };
        }
    }

    /// Takes a worker out of the ring and asks it to finish; it is killed at
    /// the kill timeout. Its exit is not a crash.
    fn drain(&mut self, serial: u64, why: &str) {
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
        worker.route.transport.ask_to_stop();
        worker.state = State::Draining { kill_at };
    }

    fn slot_is(&self, id: u32, serial: u64) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|s| s.state == SlotState::Running(serial))
    }

    fn on_exit(&mut self, serial: u64, status: ExitStatus) {
        self.dispatcher.leave(serial);
        let Some(worker) = self.workers.remove(&serial) else {
            return;
        };
        let (code, signal) = exit_parts(status);
        let expected = matches!(worker.state, State::Draining { .. }) && worker.condemned.is_none();
        let reason = match (&worker.condemned, expected) {
            (Some(why), _) => why.clone(),
            (None, true) if signal == Some(Signal::SIGKILL as i32) => {
                "killed at the kill timeout".to_owned()
            }
            (None, true) => "drained".to_owned(),
            (None, false) => describe(status),
        };
        // A crash is a warning (journalctl -p warning shows it); a drain is routine.
        macro_rules! exited {
            ($level:ident) => {
                tracing::$level!(
                    event = "worker-exited",
                    worker_id = worker.id,
                    worker_pid = worker.pid,
                    exit_code = code,
                    exit_signal = signal,
                    "worker {} (pid {}) exited: {reason}",
                    worker.id,
                    worker.pid
                )
            };
        }
        if expected {
            exited!(info);
        } else {
            exited!(warn);
        }
        let _ = self.events.send(Event::WorkerExited {
            id: worker.id,
            pid: worker.pid,
            status: code.unwrap_or_else(|| -signal.unwrap_or(0)),
            reason: reason.clone(),
        });
        if let Some(at) = self.replacements.iter().position(|r| r.new == serial) {
            // A stand-in died before it was ready: the old worker keeps serving.
            let replacement = self.replacements.remove(at);
            let why = format!(
                "new worker {} (pid {}) failed before it was ready: {reason}",
                worker.id, worker.pid
            );
            match replacement.purpose {
                Purpose::Restart(reply) => {
                    let _ = reply.send(Err(RequestError::Failed(why)));
                }
                Purpose::Reload => self.fail_reload(why),
                Purpose::Memory => tracing::warn!("{why}; the old worker keeps serving"),
            }
        } else if !expected && self.slot_is(worker.id, serial) && !self.stopping {
            self.crashed(worker.id, worker.uptime());
        }
        self.settle_scale_waits();
    }

    /// Slot `id` lost its worker unexpectedly: schedule a restart or give up.
    fn crashed(&mut self, id: u32, uptime: Duration) {
        let now = Instant::now();
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        match slot.history.crashed(now, uptime, self.settings.limit) {
            Verdict::RestartAfter(delay) => {
                if !delay.is_zero() {
                    tracing::info!(
                        event = "worker-backoff",
                        worker_id = id,
                        "restarting worker {id} in {} ms",
                        delay.as_millis()
                    );
                }
                slot.state = SlotState::Backoff { until: now + delay };
            }
            Verdict::GiveUp => {
                slot.state = SlotState::GaveUp;
                tracing::error!(
                    event = "worker-gave-up",
                    worker_id = id,
                    "worker {id} gave up after {} crashes within {:?}",
                    slot.history.recent(),
                    self.settings.limit.window
                );
            }
        }
    }

    fn status(&self) -> Status {
        let workers = self
            .workers
            .values()
            .map(|w| {
                let (rss_bytes, cpu_usec) = proc_usage(w.pid);
                WorkerInfo {
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
                    rss_bytes,
                    connections: w.route.dispatched.get(),
                    open: w.route.open(),
                    cpu_usec,
                }
            })
            .collect();
        Status {
            workers,
            connections: self.dispatcher.total(),
        }
    }

    /// Publishes the snapshot if anything in it changed.
    fn publish(&self) {
        let ready = self
            .slots
            .iter()
            .filter(|s| match s.state {
                SlotState::Running(serial) => self
                    .workers
                    .get(&serial)
                    .is_some_and(|w| w.state == State::Ready),
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

    /// Ordered shutdown: every worker leaves the ring and is asked to finish,
    /// all in parallel; whatever is left at the kill timeout is killed.
    async fn shutdown(&mut self) {
        let deadline = Instant::now() + self.settings.kill_timeout;
        tracing::info!(
            event = "shutdown-started",
            "stopping {} workers (kill timeout {:?})",
            self.workers.len(),
            self.settings.kill_timeout
        );
        if let Some(reload) = self.reload.take() {
            if let Some(reply) = reload.reply {
                let _ = reply.send(Err(RequestError::Failed(
                    "the manager is shutting down".into(),
                )));
            }
        }
        self.replacements.clear();
        self.scale_waits.clear();
        for serial in self.workers.keys().copied().collect::<Vec<_>>() {
            self.drain(serial, "shutting down");
        }
        for worker in self.workers.values_mut() {
            if let State::Draining { kill_at } = &mut worker.state {
                *kill_at = (*kill_at).min(deadline);
            }
        }
        let mut killed_at = None;
        while !self.workers.is_empty() {
            let wake = match killed_at {
                None => deadline,
                Some(at) => at + REAP_GRACE,
            };
            tokio::select! {
                Some(event) = self.worker_events.recv() => {
                    if let WorkerEvent::Exited(serial, status) = event {
                        self.on_exit(serial, status);
                    }
                }
                Some(request) = self.requests.recv() => self.refuse_while_stopping(request),
                _ = sleep_until(wake.into()) => {
                    if killed_at.is_some() {
                        tracing::error!("{} workers could not be reaped; leaving", self.workers.len());
                        break;
                    }
                    for worker in self.workers.values() {
                        tracing::warn!(
                            event = "worker-kill-timeout",
                            worker_id = worker.id,
                            worker_pid = worker.pid,
                            "worker {} (pid {}) still running at the kill timeout; sending SIGKILL",
                            worker.id,
                            worker.pid
                        );
                        worker.signal(Signal::SIGKILL);
                    }
                    killed_at = Some(Instant::now());
                }
            }
            self.publish();
        }
        tracing::info!(event = "shutdown-finished", "all workers stopped");
    }

    fn refuse_while_stopping(&self, request: Request) {
        let no = || RequestError::Failed("the manager is shutting down".into());
        let Some(request) = self.answer_query(request) else {
            return;
        };
        match request {
            Request::Shutdown | Request::Ping(_) | Request::Status(_) | Request::Connections(_) => {
            }
            Request::Reload(reply) | Request::Scale(_, reply) | Request::ScaleBy(_, reply) => {
                let _ = reply.send(Err(no()));
            }
            Request::RestartWorker(_, reply) => {
                let _ = reply.send(Err(no()));
            }
        }
    }
}

/// RSS in bytes and CPU time in µs of a process; zeros if it is gone.
fn proc_usage(pid: u32) -> (u64, u64) {
    usage::of(pid).map_or((0, 0), |u| (u.rss_bytes, u.cpu_usec))
}

/// Owns the child: reaps it, and delivers signals to its process group only
/// while it has not been reaped (so a recycled pid is never signalled).
async fn watch_process(
    serial: u64,
    mut child: tokio::process::Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    events: mpsc::UnboundedSender<WorkerEvent>,
) {
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = match status {
                    Ok(status) => status,
                    Err(e) => {
                        tracing::error!("cannot wait for worker process: {e}");
                        return;
                    }
                };
                // The group may hold the worker's own children; they go with it.
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                let _ = events.send(WorkerEvent::Exited(serial, status));
                return;
            }
            Some(signal) = signals.recv() => {
                if let (Ok(None), Some(pgid)) = (child.try_wait(), pgid) {
                    let _ = killpg(pgid, signal);
                }
            }
        }
    }
}

/// Forwards what a worker says on its channel until it closes or misbehaves.
async fn read_channel(serial: u64, channel: Transport, events: mpsc::UnboundedSender<WorkerEvent>) {
    loop {
        let event = match channel.recv().await {
            Ok(Some(Ok(notice))) => WorkerEvent::Notice(serial, notice),
            Ok(Some(Err(garbage))) => {
                let _ = events.send(WorkerEvent::Garbage(serial, garbage));
                return;
            }
            Ok(None) | Err(_) => {
                let _ = events.send(WorkerEvent::ChannelClosed(serial));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

fn exit_parts(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "unknown status".to_owned(),
    }
}
