//! The object every manager serves: `/io/sockherd/Manager`, interface
//! `io.sockherd.Manager1` (reference: `docs/dbus.md`).
//!
//! A thin translation layer over [`crate::pool::report`]: property reads come
//! from the pool's snapshot, every method is one request to the pool, and the
//! signals are the pool's events ([`super::service`] emits them). Nothing here
//! owns state of its own.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Type;
use zbus::{interface, Connection};

use super::access::Access;
use super::error::Error;
use crate::pool::report::{Handle, Request, RequestError, Snapshot};
use crate::pool::usage;
use crate::reexec::{self, Trigger};

/// The object every manager serves.
pub(crate) const PATH: &str = "/io/sockherd/Manager";
/// The interface on [`PATH`].
pub(crate) const INTERFACE: &str = "io.sockherd.Manager1";

/// One row of `ListWorkers`, signature `(uusuttt)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub(crate) struct WorkerRow {
    pub id: u32,
    pub pid: u32,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// Restarts of this worker's slot after crashes.
    pub restarts: u32,
    /// Start time, µs since the Unix epoch.
    pub started_usec: u64,
    pub rss_bytes: u64,
    /// Connections dispatched to this process.
    pub connections: u64,
}

/// One row of `ListWorkerDetails`, signature `(uusuttttt)`: a row of
/// `ListWorkers`, then what a live view needs besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub(crate) struct WorkerDetails {
    pub id: u32,
    pub pid: u32,
    pub state: String,
    pub restarts: u32,
    pub started_usec: u64,
    pub rss_bytes: u64,
    /// Connections dispatched to this process.
    pub connections: u64,
    /// Of those, the ones it has not reported closed (0 for a worker that
    /// never reports closes).
    pub open: u64,
    /// CPU time it used (user + system), µs: two readings make a CPU share.
    pub cpu_usec: u64,
}

/// `GaveUp`: the ids of the slots that gave up, as decimal strings (the
/// interface's `as` signature).
pub(crate) fn gave_up(snapshot: &Snapshot) -> Vec<String> {
    snapshot.gave_up.iter().map(u32::to_string).collect()
}

/// Logs a mutating call's refusal (the pool logs what it does) and turns
/// the pool's answer into the reply.
fn answer<T>(call: &str, result: Result<T, RequestError>) -> Result<T, Error> {
    if let Err(e) = &result {
        tracing::info!(event = "dbus-refused", "D-Bus: {call} refused: {e}");
    }
    result.map_err(Error::from)
}

/// The object at [`PATH`]. `Send + Sync`: it holds only the pool's handle.
pub(crate) struct Manager {
    /// The pool: its snapshot answers the properties, its requests carry the methods.
    pub pool: Handle,
    /// Memory readings, shared by every `ListWorkers` caller.
    pub usage: Arc<usage::Cache>,
    /// Who may call the methods that change something.
    pub access: Access,
    /// Asks for a re-exec of the manager.
    pub reexec: Trigger,
}

impl Manager {
    /// Every worker process, with its memory and CPU time from the shared
    /// readings (at most one sweep of `/proc` a second, off the event loop).
    async fn details(&self) -> Result<Vec<WorkerDetails>, Error> {
        let status = self.pool.ask(Request::Status).await?;
        let pids = status.workers.iter().map(|w| w.pid).collect();
        let usage = self.usage.of(pids).await;
        Ok(status
            .workers
            .into_iter()
            .zip(usage)
            .map(|(w, usage)| WorkerDetails {
                id: w.id,
                pid: w.pid,
                state: w.state,
                restarts: w.restarts,
                started_usec: w.started_usec,
                rss_bytes: usage.map_or(0, |u| u.rss_bytes),
                connections: w.connections,
                open: w.open,
                cpu_usec: usage.map_or(0, |u| u.cpu_usec),
            })
            .collect())
    }
}

#[interface(
    name = "io.sockherd.Manager1",
    proxy(default_path = "/io/sockherd/Manager", gen_blocking = false)
)]
impl Manager {
    /// Sets the number of workers; returns once the new ones are ready or the
    /// removed ones have drained.
    async fn scale(
        &self,
        count: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let call = format!("Scale({count})");
        self.access.check(connection, &header, &call).await?;
        let result = self.pool.ask(|reply| Request::Scale(count, reply)).await;
        answer(&call, result).map(drop)
    }

    /// Changes the number of workers by `delta`; returns the new number.
    async fn scale_by(
        &self,
        delta: i32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<u32, Error> {
        let call = format!("ScaleBy({delta})");
        self.access.check(connection, &header, &call).await?;
        let result = self.pool.ask(|reply| Request::ScaleBy(delta, reply)).await;
        answer(&call, result)
    }

    /// Replaces every worker, a batch at a time; returns once done.
    async fn reload(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let call = "Reload()";
        self.access.check(connection, &header, call).await?;
        let result = self.pool.ask(Request::Reload).await;
        answer(call, result).map(drop)
    }

    /// Replaces one worker, the new one ready before the old one goes.
    async fn restart_worker(
        &self,
        id: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let call = format!("RestartWorker({id})");
        self.access.check(connection, &header, &call).await?;
        let result = self
            .pool
            .ask(|reply| Request::RestartWorker(id, reply))
            .await;
        answer(&call, result)
    }

    /// Re-executes the manager from its binary on disk, keeping its PID,
    /// workers and sockets; returns the version it goes to once the checks
    /// passed, just before the exec (the caller may see the connection
    /// close instead). `Busy` during a reload, scale or drain.
    async fn reexec(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<String, Error> {
        let call = "Reexec()";
        self.access.check(connection, &header, call).await?;
        let result = self.reexec.ask().await;
        answer(call, result)
    }

    /// The manager's version: `0.1.0`, or `0.1.0 (LABEL)` for a labelled
    /// build. Constant for an image: a re-exec comes back on a new connection.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        reexec::version()
    }

    /// When the running image of the manager started (its start, or its
    /// last re-exec), µs since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn image_started_usec(&self) -> u64 {
        reexec::image_started_usec()
    }

    /// Every worker process: id, pid, state, restarts, start time (µs since
    /// the epoch), RSS bytes, connections dispatched.
    async fn list_workers(&self) -> Result<Vec<WorkerRow>, Error> {
        Ok(self
            .details()
            .await?
            .into_iter()
            .map(|w| WorkerRow {
                id: w.id,
                pid: w.pid,
                state: w.state,
                restarts: w.restarts,
                started_usec: w.started_usec,
                rss_bytes: w.rss_bytes,
                connections: w.connections,
            })
            .collect())
    }

    /// `ListWorkers`' rows, each with the connections still open and the
    /// CPU time used (µs).
    async fn list_worker_details(&self) -> Result<Vec<WorkerDetails>, Error> {
        self.details().await
    }

    /// The app's name (`--name`).
    #[zbus(property)]
    fn app(&self) -> String {
        self.pool.snapshot.borrow().app.clone()
    }

    /// Workers wanted.
    #[zbus(property)]
    fn workers(&self) -> u32 {
        self.pool.snapshot.borrow().target
    }

    /// Workers taking connections now.
    #[zbus(property)]
    fn ready_workers(&self) -> u32 {
        self.pool.snapshot.borrow().ready
    }

    /// `starting`, `running`, `reloading`, `degraded` or `stopping`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.pool.snapshot.borrow().state.as_str().to_owned()
    }

    /// The dispatch policy: `rr`, `least-conn`, `ip-hash` or `none` (shared accept).
    #[zbus(property)]
    fn policy(&self) -> String {
        self.pool.snapshot.borrow().policy.clone()
    }

    /// Connections dispatched since the manager started. Changes with every
    /// connection, so no change signal.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn connections(&self) -> zbus::fdo::Result<u64> {
        self.pool
            .ask(Request::Connections)
            .await
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// Restarts after crashes, over all workers, since the manager started.
    #[zbus(property)]
    fn restarts(&self) -> u32 {
        self.pool.snapshot.borrow().restarts
    }

    /// Bumped by every successful reload; starts at 1.
    #[zbus(property)]
    fn generation(&self) -> u32 {
        self.pool.snapshot.borrow().generation
    }

    /// The ids (decimal) of workers that crashed too often and gave up.
    #[zbus(property)]
    fn gave_up(&self) -> Vec<String> {
        gave_up(&self.pool.snapshot.borrow())
    }

    /// A worker process started (`id` is its slot).
    #[zbus(signal)]
    pub async fn worker_started(emitter: &SignalEmitter<'_>, id: u32, pid: u32)
        -> zbus::Result<()>;

    /// A worker process exited: `status` is its exit code or the negated
    /// signal number; `reason` says why in words.
    #[zbus(signal)]
    pub async fn worker_exited(
        emitter: &SignalEmitter<'_>,
        id: u32,
        pid: u32,
        status: i32,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A reload finished, to `generation`; `ok` false means it was rolled back.
    #[zbus(signal)]
    pub async fn reloaded(
        emitter: &SignalEmitter<'_>,
        generation: u32,
        ok: bool,
    ) -> zbus::Result<()>;
}
