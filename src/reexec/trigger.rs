//! Asking for a re-exec, and the steps before the exec.
//!
//! SIGUSR2, D-Bus `Reexec()` and `sockherd upgrade` all come here through a
//! [`Trigger`]; one re-exec runs at a time, the next waits its turn. Each
//! goes in this order, and a step that fails undoes the ones before it,
//! leaving the manager serving on its own code:
//!
//! 1. the binary on disk is asked whether it can take over
//!    ([`super::check`]), off the event loop;
//! 2. the accept loops park ([`crate::conn::pause`]): what arrives waits
//!    in the kernel's queue;
//! 3. the pool says whether it is steady: a reload, scale, replacement or
//!    drain under way makes the re-exec *busy* — refused, not queued, since
//!    the operation may take minutes; the caller retries
//!    (`sockherd upgrade` does, for a while). What is merely in flight on a
//!    worker's channel (a connection a Node.js worker has not answered for
//!    yet) settles within milliseconds now that nothing new is dispatched,
//!    and is waited for, up to [`SETTLE_PATIENCE`];
//! 4. the caller is answered, and given a moment for the answer to leave;
//! 5. the log thread hands back the workers' pipes, their last lines written;
//! 6. the pool carries itself and hands its state to the exec
//!    ([`super::exec`]), with nothing else running in between.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::check;
use super::exec::{self, Plan};
use super::image::monotonic_usec;
use super::version::version;
use crate::conn::dispatch::Dispatcher;
use crate::conn::rundir::RunDir;
use crate::conn::shared::Shared;
use crate::log;
use crate::pool::report::{Exec, Handle, Request, RequestError};
use crate::shutdown::Token;
use crate::sockets::listener::CarriedListener;

/// Re-execs asked for and not yet under way.
const WAITING: usize = 8;

/// How long the accept loops have to hand over what they hold.
const PARK_PATIENCE: Duration = Duration::from_secs(2);

/// How long what is in flight on the workers' channels has to settle.
const SETTLE_PATIENCE: Duration = Duration::from_secs(1);

/// How often the pool is asked meanwhile.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// How long the caller's answer has to leave before the exec.
const REPLY_GRACE: Duration = Duration::from_millis(50);

/// Where an answer goes: the version being re-executed into, or why not.
type Answer = oneshot::Sender<Result<String, RequestError>>;

/// How the rest of the manager asks for a re-exec. `Send`.
#[derive(Debug, Clone)]
pub(crate) struct Trigger(mpsc::Sender<Option<Answer>>);

impl Trigger {
    /// Asks, and waits until the re-exec is about to happen (the version
    /// it goes to) or was refused.
    pub(crate) async fn ask(&self) -> Result<String, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .try_send(Some(tx))
            .map_err(|_| RequestError::Busy("a re-exec is already under way".into()))?;
        rx.await
            .map_err(|_| RequestError::Failed("the manager is shutting down".into()))?
    }

    /// Asks without waiting for the answer (a signal): the outcome is logged.
    pub(crate) fn fire(&self) {
        if self.0.try_send(None).is_err() {
            tracing::info!(event = "reexec-busy", "a re-exec is already under way");
        }
    }
}

/// What a re-exec carries besides the pool, and where it finds it.
pub(crate) struct Carrier {
    /// The binary at the manager's path on disk.
    pub binary: PathBuf,
    pub pool: Handle,
    pub dispatcher: Rc<Dispatcher>,
    pub listeners: Vec<CarriedListener>,
    pub shared: Option<(Vec<CarriedListener>, Rc<Shared>)>,
    pub metrics: Option<CarriedListener>,
    /// The manager's directory, kept until the exec.
    pub rundir: Rc<RunDir>,
}

/// A trigger, and the task that runs what it asks for.
pub(crate) fn channel() -> (Trigger, mpsc::Receiver<Option<Answer>>) {
    let (tx, rx) = mpsc::channel(WAITING);
    (Trigger(tx), rx)
}

/// Runs each re-exec asked for, until `stop`.
pub(crate) async fn run(
    carrier: Carrier,
    mut asked: mpsc::Receiver<Option<Answer>>,
    mut stop: Token,
) {
    loop {
        let answer = tokio::select! {
            _ = stop.requested() => return,
            answer = asked.recv() => match answer {
                Some(answer) => answer,
                None => return,
            },
        };
        let (answer, result) = carrier.reexec(answer).await;
        if let Err(e) = &result {
            tracing::warn!(
                event = "reexec-failed",
                "cannot re-execute {}: {e}; still serving on {}",
                carrier.binary.display(),
                version()
            );
        }
        if let Some(answer) = answer {
            let _ = answer.send(result);
        }
    }
}

impl Carrier {
    /// Waits until the pool is steady and its transports have nothing in
    /// flight, for up to [`SETTLE_PATIENCE`]; busy at once while an
    /// operation is under way.
    async fn settle(&self) -> Result<(), RequestError> {
        let deadline = Instant::now() + SETTLE_PATIENCE;
        loop {
            match self.pool.ask(Request::Steady).await {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => tokio::time::sleep(SETTLE_POLL).await,
                Ok(false) => {
                    return Err(RequestError::Busy(format!(
                        "the workers' channels did not settle within {} ms",
                        SETTLE_PATIENCE.as_millis()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One re-exec. Returns only if it did not happen (or the caller was
    /// answered already and the exec then failed): the answer, if not sent.
    async fn reexec(
        &self,
        mut answer: Option<Answer>,
    ) -> (Option<Answer>, Result<String, RequestError>) {
        let asked = monotonic_usec();
        let to = match check::ask(&self.binary).await {
            Ok(to) => to,
            Err(e) => return (answer, Err(RequestError::Failed(e))),
        };
        let pause = &self.dispatcher.pause;
        pause.hold();
        let result = async {
            if tokio::time::timeout(PARK_PATIENCE, pause.all_parked())
                .await
                .is_err()
            {
                return Err(RequestError::Busy(
                    "the accept loops are still handing connections over".into(),
                ));
            }
            self.settle().await?;
            if let Some(answer) = answer.take() {
                let _ = answer.send(Ok(to.clone()));
                tokio::time::sleep(REPLY_GRACE).await;
            }
            let pipes = tokio::task::spawn_blocking(log::surrender)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| RequestError::Failed("the log thread did not answer".into()))?;
            let pipes = Arc::new(Mutex::new(pipes));
            let deadline = Instant::now() + SETTLE_PATIENCE;
            let failed = loop {
                let plan = Plan {
                    binary: self.binary.clone(),
                    from_version: version(),
                    to_version: to.clone(),
                    asked_usec: asked,
                    listeners: self.listeners.clone(),
                    shared: self
                        .shared
                        .as_ref()
                        .map(|(listeners, shared)| (listeners.clone(), shared.made())),
                    metrics: self.metrics.clone(),
                    rundir: self.rundir.path().to_owned(),
                    pipes: Arc::clone(&pipes),
                };
                let exec = Exec(Box::new(move |pool| exec::exec(plan, pool)));
                match self.pool.ask(|reply| Request::Reexec(exec, reply)).await {
                    // Something came in flight meanwhile: once more.
                    Err(RequestError::Busy(_)) if Instant::now() < deadline => {
                        tokio::time::sleep(SETTLE_POLL).await;
                    }
                    failed => break failed,
                }
            };
            exec::give_back(&pipes);
            failed.map(|()| to.clone())
        }
        .await;
        pause.release();
        (answer, result)
    }
}
