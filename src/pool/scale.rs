//! Scaling: up starts new slots and answers once they are ready; down drains
//! the highest ids first and answers once they are gone. Both go through the
//! same paths as every other start and drain.

use tokio::time::Instant;

use super::report::{Reply, RequestError};
use super::state::{Pool, ScaleWait};
use super::worker::{Slot, SlotState, Worker};

impl Pool {
    pub(super) fn scale(&mut self, count: u32, reply: Reply<u32>) {
        if count == 0 || count > self.settings.max_workers {
            let _ = reply.send(Err(RequestError::InvalidArgs(format!(
                "cannot scale to {count}: the worker count must be 1..={} (--max-workers)",
                self.settings.max_workers
            ))));
            return;
        }
        if self.reload.is_some() {
            let _ = reply.send(Err(RequestError::Busy(
                "a reload is under way; scale after it".into(),
            )));
            return;
        }
        let current = self.slots.len() as u32;
        tracing::info!(event = "scale", "scaling from {current} to {count} workers");
        let now = Instant::now();
        let mut wait = ScaleWait {
            slots: Vec::new(),
            draining: Vec::new(),
            target: count,
            reply,
        };
        if count > current {
            for id in current..count {
                self.slots.push(Slot::new(id, self.generation, now));
                wait.slots.push(id);
            }
        } else {
            // Highest ids go first.
            for slot in self.slots.drain(count as usize..).collect::<Vec<_>>() {
                if let SlotState::Running(serial) = slot.state {
                    wait.draining.push(serial);
                }
            }
            for serial in wait.draining.clone() {
                self.drain(serial, "scaled down");
            }
            let gone: Vec<u64> = self
                .replacements
                .iter()
                .filter(|r| r.id >= count)
                .map(|r| r.new)
                .collect();
            wait.draining.extend(gone.iter().copied());
            for serial in gone {
                self.drain(serial, "scaled down");
            }
        }
        self.scale_waits.push(wait);
        self.settle_scale_waits();
    }

    /// Answers the `Scale` calls whose workers are all ready (or drained).
    pub(super) fn settle_scale_waits(&mut self) {
        let mut pending = Vec::new();
        for wait in std::mem::take(&mut self.scale_waits) {
            let gave_up: Vec<u32> = wait
                .slots
                .iter()
                .copied()
                .filter(|id| {
                    self.slots
                        .get(*id as usize)
                        .is_some_and(|s| s.state == SlotState::GaveUp)
                })
                .collect();
            let ready = wait
                .slots
                .iter()
                .all(|id| match self.slots.get(*id as usize) {
                    Some(slot) => match slot.state {
                        SlotState::Running(serial) => {
                            self.workers.get(&serial).is_some_and(Worker::serving)
                        }
                        SlotState::GaveUp => true,
                        SlotState::Backoff { .. } => false,
                    },
                    None => true,
                });
            let drained = wait.draining.iter().all(|s| !self.workers.contains_key(s));
            if !gave_up.is_empty() {
                let _ = wait.reply.send(Err(RequestError::Failed(format!(
                    "new workers {gave_up:?} crashed until they gave up"
                ))));
            } else if ready && drained {
                let _ = wait.reply.send(Ok(wait.target));
            } else {
                pending.push(wait);
            }
        }
        self.scale_waits = pending;
    }
}
