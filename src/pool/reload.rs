//! Replacements: a new worker stands in for an old one, which leaves only
//! once the new one is ready. A rolling reload is a sequence of them, in
//! batches of `--reload-batch`; `RestartWorker` and `--max-memory` are single
//! ones. A stand-in that fails before it is ready is killed and the old worker
//! keeps serving, so a reload to broken code never removes the last serving
//! generation.

use super::report::{Event, Reply, RequestError};
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
        if let Some(reconfigure) = &self.reconfigure {
            match reconfigure() {
                Ok((spec, settings)) => {
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
                Err(e) => {
                    tracing::error!(event = "reload-finished", ok = false, "reload refused: {e}");
                    let _ = self.events.send(Event::Reloaded {
                        generation: self.generation + 1,
                        ok: false,
                    });
                    let _ = reply.send(Err(RequestError::Failed(e)));
                    return;
                }
            }
        }
        let generation = self.generation + 1;
        tracing::info!(
            event = "reload-started",
            generation,
            "rolling reload to generation {generation}, {} at a time",
            self.settings.reload_batch
        );
        self.reload = Some(Reload {
            queue: self.slots.iter().map(|s| s.id).collect(),
            generation,
            reply: Some(reply),
        });
        self.advance_reload();
    }

    /// Starts the next batch of the reload once the current one is done, or
    /// finishes it.
    pub(super) fn advance_reload(&mut self) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        if self
            .replacements
            .iter()
            .any(|r| matches!(r.purpose, Purpose::Reload))
        {
            return;
        }
        let batch: Vec<u32> = (0..self.settings.reload_batch.max(1))
            .map_while(|_| reload.queue.pop_front())
            .filter(|id| (*id as usize) < self.slots.len())
            .collect();
        if batch.is_empty() {
            let reload = self.reload.take();
            let generation = reload.as_ref().map_or(self.generation, |r| r.generation);
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
            if let Some(reply) = reload.and_then(|r| r.reply) {
                let _ = reply.send(Ok(generation));
            }
            if self.settings.workers != self.slots.len() as u32 && self.reconfigure.is_some() {
                // The config file asks for another worker count: reach it now.
                let (reply, _) = tokio::sync::oneshot::channel();
                self.scale(self.settings.workers, reply);
            }
            return;
        }
        let saved = self.generation;
        self.generation = reload.generation;
        for id in batch {
            // A slot that gave up gets a fresh history with the new code.
            if self.slots[id as usize].state == SlotState::GaveUp {
                self.slots[id as usize].history = Default::default();
            }
            match self.start(id) {
                Some(new) => self.replacements.push(Replacement {
                    id,
                    new,
                    purpose: Purpose::Reload,
                }),
                None => {
                    self.generation = saved;
                    self.fail_reload(format!("cannot start new worker {id}"));
                    return;
                }
            }
        }
        self.generation = saved;
    }

    /// A new worker of the reload failed: stop the reload; the old workers of
    /// slots not yet replaced keep serving.
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
        if slot.state == SlotState::GaveUp {
            self.slots[id as usize].history = Default::default();
        }
        match self.start(id) {
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
