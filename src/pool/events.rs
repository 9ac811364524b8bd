//! What happens to workers: what they say, and how they end.
//!
//! A notice can make a worker ready (it joins the ring, and the worker it
//! stands in for is drained) or announce that it is leaving on its own (its
//! replacement starts at once). An exit is either expected (a drained worker)
//! or a crash, which puts its slot in backoff or makes it give up.

use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::backoff::{Verdict, STABLE_UPTIME};
use super::launch::WorkerEvent;
use super::report::{Event, RequestError};
use super::state::{Pool, Purpose, Replacement};
use super::usage::Usage;
use super::worker::{SlotState, State, Worker};
use crate::conn::notice::{Garbage, Notice};

impl Pool {
    pub(super) fn on_worker_event(&mut self, event: WorkerEvent) {
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
            WorkerEvent::Usage(readings) => self.on_usage(readings),
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
            self.on_ready(serial);
        }
        if notice.stopping {
            self.on_stopping(serial);
        }
    }

    /// A worker joined the ring. If it stands in for another, the other goes
    /// now, and the slot runs the new one's generation from now on.
    fn on_ready(&mut self, serial: u64) {
        if let Some(at) = self.replacements.iter().position(|r| r.new == serial) {
            let replacement = self.replacements.remove(at);
            let id = replacement.id;
            let generation = self.workers.get(&serial).map(|w| w.generation);
            if let Some(slot) = self.slots.get_mut(id as usize) {
                let previous = slot.state;
                slot.state = SlotState::Running(serial);
                if let Some(generation) = generation {
                    slot.generation = generation;
                }
                if let SlotState::Running(old) = previous {
                    self.drain(old, "replaced");
                }
            } else {
                // The slot was scaled away meanwhile; the new worker is surplus.
                self.drain(serial, "scaled down");
            }
            match replacement.purpose {
                Purpose::Restart(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Purpose::Reload => self.advance_reload(),
                Purpose::Rollback | Purpose::Memory => {}
            }
        }
        self.settle_scale_waits();
    }

    /// A worker announced it is going down on its own: it leaves the ring now,
    /// and its replacement starts now rather than after it is gone. A worker
    /// that stops before it ran for [`STABLE_UPTIME`] is counted like a crash:
    /// its replacement waits the same growing delay, and a slot whose workers
    /// keep doing it gives up like a crash loop.
    fn on_stopping(&mut self, serial: u64) {
        let Some(worker) = self.workers.get(&serial) else {
            return;
        };
        if matches!(worker.state, State::Draining { .. }) || self.stopping {
            return;
        }
        let (id, uptime) = (worker.id, worker.uptime());
        tracing::info!(
            event = "worker-stopping",
            worker_id = id,
            worker_pid = worker.pid,
            "worker {id} (pid {}) announced it is stopping; replacing it",
            worker.pid
        );
        self.drain(serial, "announced stopping");
        if !self.slot_is(id, serial) {
            return;
        }
        if uptime < STABLE_UPTIME {
            self.crashed(id, uptime);
            return;
        }
        let generation = self.slots[id as usize].generation;
        if let Some(new) = self.start(id, generation) {
            self.slots[id as usize].state = SlotState::Running(new);
        }
    }

    /// A worker's channel broke under dispatch (`EPIPE`): it is dying, or shut
    /// its end. It takes no more connections; like a closed channel, a worker
    /// still running a moment later is killed and replaced (see the timers).
    pub(super) fn on_broken(&mut self, serial: u64) {
        self.dispatcher.leave(serial);
        if let Some(worker) = self.workers.get_mut(&serial) {
            worker.channel_closed.get_or_insert(Instant::now());
        }
    }

    pub(super) fn on_exit(&mut self, serial: u64, status: ExitStatus) {
        self.dispatcher.leave(serial);
        let Some(worker) = self.workers.remove(&serial) else {
            return;
        };
        let (code, signal) = exit_parts(status);
        let expected = matches!(worker.state, State::Draining { .. }) && worker.condemned.is_none();
        // A worker condemned and then killed died of what it was condemned
        // for; one that exited by itself first tells its own story.
        let ours =
            signal.is_some_and(|s| s == Signal::SIGKILL as i32 || s == Signal::SIGABRT as i32);
        let (reason, routine) = match (&worker.condemned, expected) {
            (Some(why), _) if ours => (why.clone(), false),
            (Some(_), _) | (None, false) => (describe(status), false),
            (None, true) => self.drain_outcome(&worker, status),
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
        if routine {
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
                Purpose::Rollback | Purpose::Memory => {
                    tracing::warn!("{why}; the old worker keeps serving")
                }
            }
        } else if !expected && self.slot_is(worker.id, serial) && !self.stopping {
            self.crashed(worker.id, worker.uptime());
        }
        self.settle_scale_waits();
        // What it started and moved out of its group is the manager's now.
        self.tidy();
    }

    /// How a worker asked to stop ended, and whether that is routine: it
    /// exited 0 ("drained"), or died of the stop signal it was sent (what an
    /// app without a handler does, and what terminus does after its
    /// cleanup; systemd counts it clean too). Killed at the kill timeout or
    /// exiting otherwise is not routine, and says how many connections it
    /// still held, when that is known.
    fn drain_outcome(&self, worker: &Worker, status: ExitStatus) -> (String, bool) {
        let (code, signal) = exit_parts(status);
        if code == Some(0) {
            return ("drained".to_owned(), true);
        }
        if signal == Some(self.settings.kill_signal as i32)
            && worker.route.transport.stops_by_signal()
        {
            return (
                format!(
                    "stopped by {}, as asked",
                    self.settings.kill_signal.as_str()
                ),
                true,
            );
        }
        let held = match worker.route.transport.holding(worker.route.open()) {
            Some(0) | None => String::new(),
            Some(1) => ", still holding 1 connection".to_owned(),
            Some(n) => format!(", still holding {n} connections"),
        };
        if signal == Some(Signal::SIGKILL as i32) {
            let timeout = self.settings.kill_timeout;
            (
                format!("killed at the kill timeout ({timeout:?}){held}"),
                false,
            )
        } else {
            (format!("{} while draining{held}", describe(status)), false)
        }
    }

    /// Slot `id` lost its worker unexpectedly: schedule a restart or give up.
    pub(super) fn crashed(&mut self, id: u32, uptime: Duration) {
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

    /// Replaces workers over `--max-memory`, new before old; kills those past
    /// twice it. `readings` are the workers' usage by serial.
    fn on_usage(&mut self, readings: Vec<(u64, Usage)>) {
        self.sampling.set(false);
        let Some(limit) = self.settings.max_memory else {
            return;
        };
        let mut over = Vec::new();
        for (serial, usage) in readings {
            let Some(worker) = self.workers.get_mut(&serial) else {
                continue;
            };
            let rss = usage.rss_bytes;
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
            let generation = self.slots[id as usize].generation;
            if let Some(new) = self.start(id, generation) {
                self.replacements.push(Replacement {
                    id,
                    new,
                    purpose: Purpose::Memory,
                });
            }
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
