//! The pool's loop: one turn per event, request or timer, until it is told to
//! stop; then the ordered drain.
//!
//! Timers (backoff, ready timeouts, kill timeouts, heartbeats) are derived
//! from the state each time round the loop rather than kept as tasks, so the
//! state ([`super::worker`]) is the whole truth. After every turn the pool
//! publishes a [`super::report::Snapshot`].

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::spawn_local;
use tokio::time::{sleep_until, Instant};

use super::image::Unready;
use super::launch::WorkerEvent;
use super::report::{Request, RequestError};
use super::state::Pool;
use super::usage;
use super::worker::{SlotState, State};
use crate::shutdown::Token;

/// How long to wait for workers to be reaped after SIGKILL before giving up on them.
pub(crate) const REAP_GRACE: Duration = Duration::from_secs(2);

/// After SIGABRT (so a hung worker leaves a core), how long before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(3);

/// How long a worker whose channel closed may take to exit by itself before
/// it is killed: an exiting worker closes its channel a moment before it is reaped.
const CHANNEL_GRACE: Duration = Duration::from_secs(1);

/// How often worker memory is sampled for `--max-memory`.
const MEMORY_SAMPLE: Duration = Duration::from_secs(1);

/// How the pool's run ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Shut down on request.
    Stopped,
    /// Every slot gave up: the app cannot run.
    AllGaveUp,
}

impl Pool {
    /// Runs the pool until `stop` is requested or every slot gives up, then
    /// drains every worker; `stop` is held until they are gone.
    pub(crate) async fn run(mut self, mut stop: Token) -> Outcome {
        let mut sample = tokio::time::interval(MEMORY_SAMPLE);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A child of ours exited: one the workers left behind, to be reaped.
        let mut orphaned = signal(SignalKind::child())
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot watch SIGCHLD ({e}): orphans are reaped only when a worker exits"
                )
            })
            .ok();
        let outcome = loop {
            self.on_timers();
            self.publish();
            if !self.slots.is_empty() && self.slots.iter().all(|s| s.state == SlotState::GaveUp) {
                break Outcome::AllGaveUp;
            }
            let wake = self.next_deadline();
            tokio::select! {
                _ = stop.requested() => break Outcome::Stopped,
                Some(event) = self.worker_events.recv() => self.on_worker_event(event),
                Some(serial) = self.broken.recv() => self.on_broken(serial),
                Some(configured) = self.reread.recv() => self.on_reread(configured),
                Some(request) = self.requests.recv() => self.on_request(request),
                _ = sample.tick(), if self.settings.max_memory.is_some() => self.sample_memory(),
                Some(()) = async { orphaned.as_mut()?.recv().await } => self.tidy(),
                _ = sleep_until(wake) => {}
            }
        };
        self.stopping = true;
        self.publish();
        self.shutdown().await;
        drop(stop);
        outcome
    }

    /// Answers the requests that only read, in any state; hands back the others.
    pub(super) fn answer_query(&self, request: Request) -> Option<Request> {
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
            Request::Ping(_) | Request::Status(_) | Request::Connections(_) => {}
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
            Request::Steady(reply) => {
                let _ = reply.send(match self.carry() {
                    Ok(_) => Ok(true),
                    Err(Unready::Settling(_)) => Ok(false),
                    Err(Unready::Busy(why)) => Err(RequestError::Busy(why)),
                });
            }
            Request::Reexec(exec, reply) => {
                let carried = match self.carry() {
                    Ok(carried) => carried,
                    Err(Unready::Busy(why) | Unready::Settling(why)) => {
                        let _ = reply.send(Err(RequestError::Busy(why)));
                        return;
                    }
                };
                // Returns only if the process was not replaced.
                let why = (exec.0)(carried);
                let _ = reply.send(Err(RequestError::Failed(why)));
            }
        }
    }

    /// The earliest moment a timer needs attention.
    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let slots = self.slots.iter().filter_map(|s| match s.state {
            SlotState::Backoff { until } => Some(until),
            _ => None,
        });
        let heartbeat = self.settings.heartbeat_timeout;
        let workers = self.workers.values().filter_map(|w| match w.state {
            State::Starting { deadline } => Some(deadline),
            State::Draining { kill_at } => Some(kill_at),
            State::Ready => Some(w.last_heartbeat? + heartbeat?),
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
            let generation = self.slots[id as usize].generation;
            if let Some(serial) = self.start(id, generation) {
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
                        "worker {} (pid {}) did not report ready within {:?} (--ready-timeout); \
                         killing it: {}",
                        worker.id,
                        worker.pid,
                        self.settings.ready_timeout,
                        worker.route.transport.ready_hint()
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
                        "worker {} (pid {}) closed or broke its channel but keeps running; \
                         replacing it",
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
                        if silent >= timeout {
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

    /// Reads every worker's memory off the event loop; the readings come
    /// back as a [`WorkerEvent::Usage`]. One sample at a time: a tick that
    /// finds the last one still under way is skipped.
    fn sample_memory(&mut self) {
        if self.sampling.replace(true) {
            return;
        }
        let workers: Vec<(u64, u32)> = self.workers.values().map(|w| (w.serial, w.pid)).collect();
        let events = self.worker_events_tx.clone();
        spawn_local(async move {
            let pids = workers.iter().map(|(_, pid)| *pid).collect();
            let readings = usage::sample(pids).await;
            let readings = workers
                .into_iter()
                .zip(readings)
                .filter_map(|((serial, _), usage)| Some((serial, usage?)))
                .collect();
            let _ = events.send(WorkerEvent::Usage(readings)).await;
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
                _ = sleep_until(wake) => {
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
        // Whatever the workers left behind goes with them.
        self.tidy();
        tracing::info!(event = "shutdown-finished", "all workers stopped");
    }

    /// Kills what the workers left behind and no live worker owns, and reaps
    /// what exited ([`super::orphans`]).
    pub(super) fn tidy(&self) {
        let live = self.workers.values().map(|w| w.pid).collect();
        self.launcher.tidy(&live);
    }

    fn refuse_while_stopping(&self, request: Request) {
        let no = || RequestError::Failed("the manager is shutting down".into());
        let Some(request) = self.answer_query(request) else {
            return;
        };
        match request {
            Request::Ping(_) | Request::Status(_) | Request::Connections(_) => {}
            Request::Reload(reply) | Request::Scale(_, reply) | Request::ScaleBy(_, reply) => {
                let _ = reply.send(Err(no()));
            }
            Request::RestartWorker(_, reply) | Request::Reexec(_, reply) => {
                let _ = reply.send(Err(no()));
            }
            Request::Steady(reply) => {
                let _ = reply.send(Err(no()));
            }
        }
    }
}
