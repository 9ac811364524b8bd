//! Stopping tasks in order: one object tells every task of a stage to stop,
//! and waits until each has.
//!
//! A [`Shutdown`] hands out a [`Token`] to every task it is to stop. The task
//! watches [`Token::requested`] and holds the token until it is really done —
//! an accept loop until it stopped accepting, the pool until its workers are
//! drained. [`Shutdown::shutdown`] asks once and then waits for the last token
//! to be dropped, so no task is left running un-awaited. Who may ask for a
//! stop without waiting for it (a signal handler) holds a [`Trigger`].
//!
//! The manager stops in two stages, each one `Shutdown` (see
//! [`crate::commands::serve`]): first what serves (accept loops, metrics, the
//! pool's drain), then what reports (sd_notify, the watchdog, D-Bus), so that
//! systemd and D-Bus callers hear about the drain until its end.

use std::rc::Rc;

use tokio::sync::{mpsc, watch};

/// Tells the tasks of one stage to stop and waits until they have.
pub(crate) struct Shutdown {
    /// Turns true when the stop is asked for.
    requested: Rc<watch::Sender<bool>>,
    /// Cloned into every token; dropped here when the stop is asked for, so
    /// the receiver ends once every token is gone too.
    held: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

/// A task's part in a stage: it learns when to stop, and is waited for until
/// it drops the token.
pub(crate) struct Token {
    requested: watch::Receiver<bool>,
    /// Never sent on: dropping it is the task's "done".
    _held: mpsc::Sender<()>,
}

/// Asks a stage to stop without waiting for it.
#[derive(Clone)]
pub(crate) struct Trigger {
    requested: Rc<watch::Sender<bool>>,
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        let (requested, _) = watch::channel(false);
        let (held, done) = mpsc::channel(1);
        Shutdown {
            requested: Rc::new(requested),
            held,
            done,
        }
    }

    /// A token for one more task to stop with this stage.
    pub(crate) fn token(&self) -> Token {
        Token {
            requested: self.requested.subscribe(),
            _held: self.held.clone(),
        }
    }

    /// A handle that asks this stage to stop.
    pub(crate) fn trigger(&self) -> Trigger {
        Trigger {
            requested: Rc::clone(&self.requested),
        }
    }

    /// Asks every task of the stage to stop (if nobody has yet), and returns
    /// once each has dropped its token.
    pub(crate) async fn shutdown(self) {
        let Shutdown {
            requested,
            held,
            mut done,
        } = self;
        requested.send_replace(true);
        drop(held);
        let _ = done.recv().await;
    }
}

impl Trigger {
    /// Asks the stage to stop; its tasks see it at their next turn.
    pub(crate) fn request(&self) {
        self.requested.send_replace(true);
    }
}

impl Token {
    /// Resolves once the stop is asked for (at once if it already was).
    pub(crate) async fn requested(&mut self) {
        // An error means the Shutdown is gone, which asks for the stop too.
        let _ = self.requested.wait_for(|asked| *asked).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use tokio::task::{spawn_local, LocalSet};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_every_task_to_finish() {
        LocalSet::new()
            .run_until(async {
                let stage = Shutdown::new();
                let finished = Rc::new(Cell::new(0));
                for delay in [0, 5, 10] {
                    let mut token = stage.token();
                    let finished = Rc::clone(&finished);
                    spawn_local(async move {
                        token.requested().await;
                        tokio::time::sleep(Duration::from_secs(delay)).await;
                        finished.set(finished.get() + 1);
                        drop(token);
                    });
                }
                let started = tokio::time::Instant::now();
                stage.shutdown().await;
                assert_eq!(finished.get(), 3);
                assert_eq!(started.elapsed(), Duration::from_secs(10));
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_asks_without_waiting() {
        let stage = Shutdown::new();
        let mut token = stage.token();
        stage.trigger().request();
        token.requested().await;
        drop(token);
        stage.shutdown().await;
    }

    #[tokio::test]
    async fn a_stage_without_tasks_is_done_at_once() {
        Shutdown::new().shutdown().await;
    }
}
