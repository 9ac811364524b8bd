//! The pool: the manager's single owner of every worker and slot.
//!
//! The pool runs one event loop. Everything that happens to a worker arrives
//! here as an [`Event`] — a message on its channel, garbage, its channel
//! closing, its exit — and everything asked of the pool arrives as a
//! [`Request`] (shutdown now; scale and reload come from D-Bus and signals).
//! Timers (backoff, ready timeouts, kill timeouts) are derived from the state
//! each time round the loop rather than kept as separate tasks, so the state
//! in [`crate::worker`] is the whole truth.
//!
//! The accept loops never go through here: the pool only adds workers to and
//! removes them from the [`Dispatcher`]'s ring, and dispatch runs on its own.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};
use tokio::task::spawn_local;
use tokio::time::sleep_until;

use crate::backoff::{Limit, Verdict};
use crate::channel::{Channel, Garbage, Notice};
use crate::dispatch::{Dispatcher, Route};
use crate::journal::Stream;
use crate::output;
use crate::spawn::{self, Spec};
use crate::worker::{Slot, SlotState, State, Worker};

/// How long to wait for workers to be reaped after SIGKILL before giving up on them.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// The pool's settings, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workers wanted.
    pub workers: u32,
    /// A new worker that is not ready within this is killed (and counts as a crash).
    pub ready_timeout: Duration,
    /// How long a draining worker may take before SIGKILL.
    pub kill_timeout: Duration,
    /// The crash-loop limit.
    pub limit: Limit,
}

/// Something that happened to a worker, reported by the tasks watching it.
#[derive(Debug)]
pub enum Event {
    Notice(u64, Notice),
    Garbage(u64, Garbage),
    ChannelClosed(u64),
    Exited(u64, ExitStatus),
}

/// What can be asked of the pool.
#[derive(Debug)]
pub enum Request {
    /// Drain every worker and stop (SIGTERM, SIGINT).
    Shutdown,
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
    /// Index = worker id.
    slots: Vec<Slot>,
    /// Every live worker process, by serial: the one filling each slot, plus
    /// any draining ones.
    workers: BTreeMap<u64, Worker>,
    dispatcher: Rc<Dispatcher>,
    /// Handed to the tasks watching workers.
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Workers whose channel broke under dispatch.
    broken: mpsc::UnboundedReceiver<u64>,
    next_serial: u64,
    generation: u32,
    /// Whether every slot has reported ready at least once since start; logged once.
    announced_ready: Cell<bool>,
}

impl Pool {
    pub fn new(
        spec: Spec,
        settings: Settings,
        dispatcher: Rc<Dispatcher>,
        broken: mpsc::UnboundedReceiver<u64>,
    ) -> Pool {
        let (events_tx, events) = mpsc::unbounded_channel();
        let slots = (0..settings.workers)
            .map(|id| Slot {
                id,
                state: SlotState::Backoff {
                    until: Instant::now(),
                },
                history: Default::default(),
            })
            .collect();
        Pool {
            spec,
            settings,
            slots,
            workers: BTreeMap::new(),
            dispatcher,
            events_tx,
            events,
            broken,
            next_serial: 1,
            generation: 1,
            announced_ready: Cell::new(false),
        }
    }

    /// Runs the pool until shutdown is requested (then drains) or every slot gives up.
    /// Accept loops stop when `stop_accepting` turns true, first thing in a shutdown.
    pub async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        stop_accepting: watch::Sender<bool>,
    ) -> Outcome {
        let outcome = loop {
            self.on_timers();
            if !self.slots.is_empty() && self.slots.iter().all(|s| s.state == SlotState::GaveUp) {
                break Outcome::AllGaveUp;
            }
            let wake = self.next_deadline();
            tokio::select! {
                Some(event) = self.events.recv() => self.on_event(event),
                Some(serial) = self.broken.recv() => self.on_channel_closed(serial),
                request = requests.recv() => match request {
                    Some(Request::Shutdown) | None => break Outcome::Stopped,
                },
                _ = sleep_until(wake.into()) => {}
            }
        };
        let _ = stop_accepting.send(true);
        self.shutdown().await;
        outcome
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
        slots.chain(workers).min().unwrap_or(far)
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
            self.start(id);
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
                    worker.condemn("it did not become ready in time".into());
                }
                State::Draining { kill_at } if kill_at <= now => {
                    tracing::warn!(
                        event = "worker-kill-timeout",
                        worker_id = worker.id,
                        worker_pid = worker.pid,
                        "worker {} (pid {}) still running after the {:?} kill timeout; sending SIGKILL",
                        worker.id, worker.pid, self.settings.kill_timeout
                    );
                    worker.signal(Signal::SIGKILL);
                    // It will be reaped; no further deadline for it.
                    worker.state = State::Draining {
                        kill_at: now + Duration::from_secs(3600),
                    };
                }
                _ => {}
            }
        }
    }

    /// Starts a process in slot `id`.
    fn start(&mut self, id: u32) {
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
                return;
            }
        };
        let channel = match Channel::new(spawned.channel) {
            Ok(channel) => Rc::new(channel),
            Err(e) => {
                tracing::error!(
                    worker_id = id,
                    "cannot watch the channel of worker {id}: {e}"
                );
                let _ = killpg(Pid::from_raw(spawned.pid as i32), Signal::SIGKILL);
                self.crashed(id, Duration::ZERO);
                return;
            }
        };
        let pid = spawned.pid;
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            spawn_local(watch_process(
                serial,
                spawned.child,
                signal_rx,
                self.events_tx.clone(),
            )),
            spawn_local(read_channel(
                serial,
                Rc::clone(&channel),
                self.events_tx.clone(),
            )),
            spawn_local(output::forward(spawned.stdout, Stream::Stdout, id, pid)),
            spawn_local(output::forward(spawned.stderr, Stream::Stderr, id, pid)),
        ];
        let route = Rc::new(Route {
            serial,
            id,
            channel,
            dispatched: Cell::new(0),
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
        self.workers.insert(serial, worker);
        self.slots[id as usize].state = SlotState::Running(serial);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Notice(serial, notice) => self.on_notice(serial, notice),
            Event::Garbage(serial, Garbage(why)) => {
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
            Event::ChannelClosed(serial) => self.on_channel_closed(serial),
            Event::Exited(serial, status) => self.on_exit(serial, status),
        }
    }

    fn on_notice(&mut self, serial: u64, notice: Notice) {
        let Some(worker) = self.workers.get_mut(&serial) else {
            return;
        };
        if notice.heartbeat {
            worker.last_heartbeat = Some(Instant::now());
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
            self.maybe_announce_ready();
        }
        if notice.stopping {
            self.on_stopping(serial);
        }
    }

    /// A worker announced it is going down on its own: it leaves the ring now,
    /// and its replacement starts now rather than after it is gone.
    fn on_stopping(&mut self, serial: u64) {
        let Some(worker) = self.workers.get_mut(&serial) else {
            return;
        };
        if matches!(worker.state, State::Draining { .. }) {
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
        self.dispatcher.leave(serial);
        worker.state = State::Draining {
            kill_at: Instant::now() + self.settings.kill_timeout,
        };
        if self.slots[id as usize].state == SlotState::Running(serial) {
            self.start(id);
        }
    }

    fn on_channel_closed(&mut self, serial: u64) {
        // The exit follows; stop dispatching to it right away.
        self.dispatcher.leave(serial);
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
            (None, true) => "drained".to_owned(),
            (None, false) => describe(status),
        };
        tracing::info!(
            event = "worker-exited",
            worker_id = worker.id,
            worker_pid = worker.pid,
            exit_code = code,
            exit_signal = signal,
            "worker {} (pid {}) exited: {reason}",
            worker.id,
            worker.pid
        );
        if !expected && self.slots[worker.id as usize].state == SlotState::Running(serial) {
            self.crashed(worker.id, worker.uptime());
        }
    }

    /// Slot `id` lost its worker unexpectedly: schedule a restart or give up.
    fn crashed(&mut self, id: u32, uptime: Duration) {
        let now = Instant::now();
        let slot = &mut self.slots[id as usize];
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

    fn maybe_announce_ready(&self) {
        if self.announced_ready.get() {
            return;
        }
        let ready = self.dispatcher.ready_count();
        if ready >= self.slots.len() {
            self.announced_ready.set(true);
            tracing::info!(
                event = "ready",
                "{ready}/{} workers ready",
                self.slots.len()
            );
        }
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
        for slot in &mut self.slots {
            if matches!(slot.state, SlotState::Backoff { .. }) {
                slot.state = SlotState::GaveUp;
            }
        }
        for worker in self.workers.values_mut() {
            self.dispatcher.leave(worker.serial);
            let _ = worker.route.channel.try_send(b"SHUTDOWN=1");
            if !matches!(worker.state, State::Draining { .. }) {
                worker.state = State::Draining { kill_at: deadline };
            }
        }
        let mut killed_at = None;
        while !self.workers.is_empty() {
            let wake = self.next_deadline().min(deadline);
            tokio::select! {
                Some(event) = self.events.recv() => match event {
                    Event::Exited(serial, status) => self.on_exit(serial, status),
                    _ => {}
                },
                _ = sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= deadline {
                        match killed_at {
                            None => {
                                for worker in self.workers.values() {
                                    tracing::warn!(
                                        event = "worker-kill-timeout",
                                        worker_id = worker.id,
                                        worker_pid = worker.pid,
                                        "worker {} (pid {}) still running at the kill timeout; sending SIGKILL",
                                        worker.id, worker.pid
                                    );
                                    worker.signal(Signal::SIGKILL);
                                }
                                killed_at = Some(now);
                            }
                            Some(at) if now.duration_since(at) > REAP_GRACE => {
                                tracing::error!("{} workers could not be reaped; leaving", self.workers.len());
                                break;
                            }
                            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            }
        }
        tracing::info!(event = "shutdown-finished", "all workers stopped");
    }
}

/// Owns the child: reaps it, and delivers signals to its process group only
/// while it has not been reaped (so a recycled pid is never signalled).
async fn watch_process(
    serial: u64,
    mut child: tokio::process::Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    events: mpsc::UnboundedSender<Event>,
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
                let _ = events.send(Event::Exited(serial, status));
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
async fn read_channel(serial: u64, channel: Rc<Channel>, events: mpsc::UnboundedSender<Event>) {
    loop {
        let event = match channel.recv().await {
            Ok(Some(Ok(notice))) => Event::Notice(serial, notice),
            Ok(Some(Err(garbage))) => {
                let _ = events.send(Event::Garbage(serial, garbage));
                return;
            }
            Ok(None) | Err(_) => {
                let _ = events.send(Event::ChannelClosed(serial));
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
