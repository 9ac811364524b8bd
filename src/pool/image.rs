//! The pool across a re-exec of the manager ([`crate::reexec`]): how it
//! carries itself to the next image ([`super::carried`]), and how the next
//! image takes it up.
//!
//! The pool is carried only when it is steady — no reload, scale,
//! replacement or drain under way, every worker ready, every transport with
//! nothing in flight — so what crosses is a list of ready workers and the
//! slots they fill, not a state machine caught half-way. [`Pool::carry`]
//! says why not otherwise, and the caller reports the pool busy.
//!
//! Time crosses as ages, not instants: a backoff's remaining delay, a
//! crash's age, a worker's uptime and its last heartbeat's age.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backoff::{History, Limit};
use super::carried::{CarriedPool, CarriedSettings, CarriedSlot, CarriedWorker};
use super::launch::Launch;
use super::settings::{Reconfigure, Settings};
use super::spawn::Spec;
use super::state::Pool;
use super::worker::{Slot, SlotState, State, Worker};
use crate::conn::dispatch::Dispatcher;
use crate::conn::policy::Policy;

/// Why the pool cannot be carried now.
#[derive(Debug)]
pub(crate) enum Unready {
    /// An operation is under way (a reload, a scale, a worker starting or
    /// draining): it may take minutes, so the re-exec is refused as busy.
    Busy(String),
    /// A transport has something in flight, which settles in milliseconds
    /// once nothing new is dispatched: worth asking again at once.
    Settling(String),
}

impl Settings {
    fn carry(&self) -> CarriedSettings {
        CarriedSettings {
            workers: self.workers,
            max_workers: self.max_workers,
            ready_timeout: self.ready_timeout,
            kill_timeout: self.kill_timeout,
            kill_signal: self.kill_signal as i32,
            max_restarts: self.limit.max_restarts,
            restart_window: self.limit.window,
            reload_batch: self.reload_batch,
            policy: self.policy.name().to_owned(),
            heartbeat_timeout: self.heartbeat_timeout,
            max_memory: self.max_memory,
        }
    }

    /// The settings an earlier image carried.
    pub(crate) fn adopt(carried: &CarriedSettings) -> Result<Settings, String> {
        let policy = <Policy as clap::ValueEnum>::from_str(&carried.policy, false)
            .map_err(|_| format!("unknown policy {:?}", carried.policy))?;
        Ok(Settings {
            workers: carried.workers,
            max_workers: carried.max_workers,
            ready_timeout: carried.ready_timeout,
            kill_timeout: carried.kill_timeout,
            kill_signal: Signal::try_from(carried.kill_signal)
                .map_err(|_| format!("unknown signal {}", carried.kill_signal))?,
            limit: Limit {
                max_restarts: carried.max_restarts,
                window: carried.restart_window,
            },
            reload_batch: carried.reload_batch,
            policy,
            heartbeat_timeout: carried.heartbeat_timeout,
            max_memory: carried.max_memory,
        })
    }
}

impl Pool {
    /// What the next image needs to take the pool over, if it is steady;
    /// otherwise why not. Events already waiting are taken in first, so
    /// nothing a worker said is lost with this image.
    pub(super) fn carry(&mut self) -> Result<CarriedPool, Unready> {
        while let Ok(event) = self.worker_events.try_recv() {
            self.on_worker_event(event);
        }
        while let Ok(serial) = self.broken.try_recv() {
            self.on_broken(serial);
        }
        let busy = |why: &str| Err(Unready::Busy(why.to_owned()));
        if self.stopping {
            return busy("the manager is stopping");
        }
        if self.reload.is_some() {
            return busy("a reload is under way");
        }
        if !self.scale_waits.is_empty() {
            return busy("a scale is under way");
        }
        if !self.replacements.is_empty() {
            return busy("a worker is being replaced");
        }
        if let Some(w) = self.workers.values().find(|w| !w.serving()) {
            return Err(Unready::Busy(format!(
                "worker {} (pid {}) is {}",
                w.id,
                w.pid,
                if w.serving() { "ready" } else { w.state.name() }
            )));
        }
        let now = Instant::now();
        let mut workers = Vec::with_capacity(self.workers.len());
        for w in self.workers.values() {
            workers.push(CarriedWorker {
                id: w.id,
                serial: w.serial,
                pid: w.pid,
                generation: w.generation,
                uptime: w.uptime(),
                started_usec: w
                    .started_wall
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
                heartbeat_age: w.last_heartbeat.map(|t| now.duration_since(t)),
                dispatched: w.route.dispatched.get(),
                closed: w.route.closed.get(),
                transport: w.route.transport.carry().map_err(Unready::Settling)?,
                stdout: None,
                stderr: None,
            });
        }
        Ok(CarriedPool {
            spec: Some(self.spec.carry()),
            settings: self.settings.carry(),
            generation: self.generation,
            next_serial: self.next_serial,
            was_running: self.was_running.get(),
            slots: self
                .slots
                .iter()
                .map(|s| CarriedSlot {
                    id: s.id,
                    running: match s.state {
                        SlotState::Running(serial) => Some(serial),
                        _ => None,
                    },
                    backoff: match s.state {
                        SlotState::Backoff { until } => Some(until.saturating_duration_since(now)),
                        _ => None,
                    },
                    history: s.history.carry(now),
                    generation: s.generation,
                })
                .collect(),
            workers,
            connections: self.dispatcher.total(),
        })
    }

    /// The pool an earlier image carried: its workers taken up through
    /// `launcher` (their transports, their reaping), in the ring at once.
    /// A worker that cannot be taken up is reported gone and its slot
    /// restarts it, as after a crash.
    pub(crate) fn adopt(
        carried: CarriedPool,
        spec: Spec,
        reconfigure: Option<Reconfigure>,
        dispatcher: Rc<Dispatcher>,
        broken: mpsc::UnboundedReceiver<u64>,
        launcher: Box<dyn Launch>,
    ) -> Result<(Pool, super::report::Handle), String> {
        let settings = Settings::adopt(&carried.settings)?;
        let (mut pool, handle) = Pool::new(
            spec,
            settings,
            reconfigure,
            Rc::clone(&dispatcher),
            broken,
            launcher,
        );
        let now = Instant::now();
        dispatcher.add_dispatched(carried.connections);
        pool.generation = carried.generation;
        pool.next_serial = carried.next_serial;
        pool.was_running.set(carried.was_running);
        pool.slots = carried
            .slots
            .into_iter()
            .map(|s| Slot {
                id: s.id,
                state: match (s.running, s.backoff) {
                    (Some(serial), _) => SlotState::Running(serial),
                    (None, Some(delay)) => SlotState::Backoff { until: now + delay },
                    (None, None) => SlotState::GaveUp,
                },
                history: History::adopt(s.history, now),
                generation: s.generation,
            })
            .collect();
        let mut lost = Vec::new();
        let ids: HashSet<u32> = pool.slots.iter().map(|s| s.id).collect();
        for w in carried.workers {
            let (id, serial, pid) = (w.id, w.serial, w.pid);
            if !ids.contains(&id) {
                return Err(format!("worker {id} has no slot"));
            }
            match pool.take_up(w, now) {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(
                        event = "worker-lost",
                        worker_id = id,
                        worker_pid = pid,
                        "worker {id} (pid {pid}) could not be taken over: {e}"
                    );
                    lost.push((id, serial));
                }
            }
        }
        for (id, serial) in lost {
            if pool.slot_is(id, serial) {
                pool.crashed(id, Duration::ZERO);
            }
        }
        Ok((pool, handle))
    }

    /// Takes up one carried worker: ready, in the ring.
    fn take_up(&mut self, carried: CarriedWorker, now: Instant) -> std::io::Result<()> {
        let (id, serial, generation) = (carried.id, carried.serial, carried.generation);
        let (dispatched, closed) = (carried.dispatched, carried.closed);
        let started = now.checked_sub(carried.uptime).unwrap_or(now);
        let started_wall = UNIX_EPOCH + Duration::from_micros(carried.started_usec);
        let heartbeat = carried
            .heartbeat_age
            .map(|age| now.checked_sub(age).unwrap_or(now));
        let launched = self.launcher.adopt(
            &self.spec,
            carried,
            &self.worker_events_tx,
            &self.dispatcher,
        )?;
        launched.route.dispatched.set(dispatched);
        launched.route.closed.set(closed);
        let mut worker = Worker::new(
            id,
            serial,
            generation,
            launched.process,
            Rc::clone(&launched.route),
            now,
        );
        worker.state = State::Ready;
        worker.started = started;
        worker.started_wall = started_wall;
        worker.last_heartbeat = heartbeat;
        self.dispatcher.join(launched.route);
        self.workers.insert(serial, worker);
        Ok(())
    }
}
