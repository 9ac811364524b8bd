//! Replacements: a new worker stands in for an old one, which leaves only
//! once the new one is ready. A rolling reload is a sequence of them, in
//! batches of `--reload-batch`; `RestartWorker` and `--max-memory` are single
//! ones. A stand-in that fails before it is ready is killed and the old worker
//! keeps serving, so a reload to broken code never removes the last serving
//! generation.
//!
//! A reload leaves no trace unless it succeeds. What it rolls out (the
//! command and settings re-read from the config file, off the event loop)
//! stays with the reload until every slot runs it; only then does it become
//! the pool's own. If it fails, slots it had already moved are moved back,
//! new before old, and crashed workers keep coming back as the generation
//! that served.

use super::report::{Event, Reply, RequestError};
use super::settings::Configured;
use super::state::{Pool, Purpose, Reload, Replacement};
use super::worker::SlotState;

impl Pool {
    pub(super) fn begin_reload(&mut self, reply: Reply<u32>) {
        if self.reload.is_some() {
            let _ = reply.send(Err(RequestError::Busy(
                "a reload is already under way".into(),
            )));
            return;
        }
        let next = match &self.reconfigure {
            Some(reconfigure) => {
                let reading = reconfigure();
                let reread = self.reread_tx.clone();
                tokio::task::spawn_local(async move {
                    let _ = reread.send(reading.await);
                });
                None
            }
            None => Some((self.spec.clone(), self.settings.clone())),
        };
        self.reload = Some(Reload {
            queue: Default::default(),
            generation: self.generation + 1,
            next: None,
            reply: Some(reply),
        });
        if let Some(next) = next {
            self.roll_out(next);
        }
    }

    /// The config file was read for the reload under way.
    pub(super) fn on_reread(&mut self, configured: Configured) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        match configured {
            Ok(next) => self.roll_out(next),
            Err(e) => {
                let generation = reload.generation;
                let reply = reload.reply.take();
                self.reload = None;
                tracing::error!(event = "reload-finished", ok = false, "reload refused: {e}");
                let _ = self.events.send(Event::Reloaded {
                    generation,
                    ok: false,
                });
                if let Some(reply) = reply {
                    let _ = reply.send(Err(RequestError::Failed(e)));
                }
            }
        }
    }

    /// Starts replacing every slot with workers of `next`.
    fn roll_out(&mut self, next: (crate::pool::spawn::Spec, crate::pool::Settings)) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        tracing::info!(
            event = "reload-started",
            generation = reload.generation,
            "rolling reload to generation {}, {} at a time",
            reload.generation,
            next.1.reload_batch
        );
        reload.queue = self.slots.iter().map(|s| s.id).collect();
        reload.next = Some(next);
        self.advance_reload();
    }

    /// Starts the next batch of the reload once the current one is done, or
    /// finishes it.
    pub(super) fn advance_reload(&mut self) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        let Some((_, next)) = &reload.next else {
            return;
        };
        if self
            .replacements
            .iter()
            .any(|r| matches!(r.purpose, Purpose::Reload))
        {
            return;
        }
        let generation = reload.generation;
        let batch: Vec<u32> = (0..next.reload_batch.max(1))
            .map_while(|_| reload.queue.pop_front())
            .filter(|id| (*id as usize) < self.slots.len())
            .collect();
        if batch.is_empty() {
            self.finish_reload();
            return;
        }
        for id in batch {
            // A slot that gave up gets a fresh history with the new code.
            if self.slots[id as usize].state == SlotState::GaveUp {
                self.slots[id as usize].history = Default::default();
            }
            match self.start(id, generation) {
                Some(new) => self.replacements.push(Replacement {
                    id,
                    new,
                    purpose: Purpose::Reload,
                }),
                None => {
                    self.fail_reload(format!("cannot start new worker {id}"));
                    return;
                }
            }
        }
    }

    /// Every slot runs the new generation: it becomes the pool's own.
    fn finish_reload(&mut self) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        let generation = reload.generation;
        if let Some((spec, settings)) = reload.next {
            if settings.policy != self.settings.policy {
                tracing::info!(
                    event = "policy-changed",
                    "dispatch policy {} from now on (was {})",
                    settings.policy,
                    self.settings.policy
                );
                self.dispatcher.set_policy(settings.policy);
            }
            self.spec = spec;
            self.settings = settings;
        }
        self.generation = generation;
        tracing::info!(
            event = "reload-finished",
            generation,
            ok = true,
            "reload to generation {generation} finished"
        );
        let _ = self.events.send(Event::Reloaded {
            generation,
            ok: true,
        });
        if let Some(reply) = reload.reply {
            let _ = reply.send(Ok(generation));
        }
        if self.settings.workers != self.slots.len() as u32 && self.reconfigure.is_some() {
            // The config file asks for another worker count: reach it now.
            let (reply, _) = tokio::sync::oneshot::channel();
            self.scale(self.settings.workers, reply);
        }
    }

    /// A new worker of the reload failed: stop the reload. The old workers of
    /// slots not yet replaced keep serving; slots already replaced are moved
    /// back to the serving generation, new before old.
    pub(super) fn fail_reload(&mut self, why: String) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        let stand_ins: Vec<u64> = self
            .replacements
            .iter()
            .filter(|r| matches!(r.purpose, Purpose::Reload))
            .map(|r| r.new)
            .collect();
        self.replacements
            .retain(|r| !matches!(r.purpose, Purpose::Reload));
        for serial in stand_ins {
            if let Some(worker) = self.workers.get_mut(&serial) {
                worker.condemn("reload failed".into());
            }
        }
        tracing::error!(
            event = "reload-finished",
            generation = reload.generation,
            ok = false,
            "reload to generation {} failed: {why}; the previous workers keep serving",
            reload.generation
        );
        let _ = self.events.send(Event::Reloaded {
            generation: reload.generation,
            ok: false,
        });
        if let Some(reply) = reload.reply {
            let _ = reply.send(Err(RequestError::Failed(format!("reload failed: {why}"))));
        }
        let serving = self.generation;
        let moved: Vec<u32> = self
            .slots
            .iter()
            .filter(|s| s.generation == reload.generation)
            .map(|s| s.id)
            .collect();
        for id in moved {
            self.slots[id as usize].generation = serving;
            if !matches!(self.slots[id as usize].state, SlotState::Running(_)) {
                continue;
            }
            tracing::info!(
                event = "worker-rollback",
                worker_id = id,
                "moving worker {id} back to generation {serving}"
            );
            if let Some(new) = self.start(id, serving) {
                self.replacements.push(Replacement {
                    id,
                    new,
                    purpose: Purpose::Rollback,
                });
            }
        }
    }

    pub(super) fn restart_worker(&mut self, id: u32, reply: Reply<()>) {
        let Some(slot) = self.slots.get(id as usize) else {
            let _ = reply.send(Err(RequestError::InvalidArgs(format!(
                "no worker {id}: workers are 0..{}",
                self.slots.len()
            ))));
            return;
        };
        if self.replacements.iter().any(|r| r.id == id) {
            let _ = reply.send(Err(RequestError::Busy(format!(
                "worker {id} is already being replaced"
            ))));
            return;
        }
        let generation = slot.generation;
        if slot.state == SlotState::GaveUp {
            self.slots[id as usize].history = Default::default();
        }
        match self.start(id, generation) {
            Some(new) => self.replacements.push(Replacement {
                id,
                new,
                purpose: Purpose::Restart(reply),
            }),
            None => {
                let _ = reply.send(Err(RequestError::Failed(format!(
                    "cannot start a new worker {id}"
                ))));
            }
        }
    }
}
