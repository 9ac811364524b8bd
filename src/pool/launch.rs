//! Launching a worker: its process, its transport, and the tasks that watch it.
//!
//! The pool decides *when* a worker starts and what it stands for; a [`Launch`]
//! does the starting. [`Processes`] is the real one: it forks and execs the
//! worker ([`super::spawn`]), wraps the manager's end of its channel in a
//! [`Transport`], and starts the tasks that watch it — one reaps the child and
//! delivers signals to its process group, one reads its channel — and hands
//! its stdout and stderr pipes to the log thread ([`crate::log::forward`]).
//! Each task reports what it sees to the pool as a [`WorkerEvent`].
//!
//! The pool's own unit tests launch nothing: their launcher hands out a
//! transport over a socketpair and lets the test play the worker, so every
//! transition of the state machine runs in milliseconds (`pool/tests.rs`).

use std::io;
use std::process::ExitStatus;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::spawn_local;

use super::spawn::{self, Spec};
use super::usage::Usage;
use super::worker::Process;
use crate::conn::dispatch::Dispatcher;
use crate::conn::notice::{Garbage, Notice};
use crate::conn::peer::Peer;
use crate::conn::transport::Transport;
use crate::log::{self, Stream};

/// Something that happened to a worker, reported by the tasks watching it.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// It said something on its channel.
    Notice(u64, Notice),
    /// It broke the protocol; it is replaced.
    Garbage(u64, Garbage),
    /// Its end of the channel closed: it exits, or should.
    ChannelClosed(u64),
    /// It was reaped.
    Exited(u64, ExitStatus),
    /// What the workers use, sampled for `--max-memory`: by serial.
    Usage(Vec<(u64, Usage)>),
}

/// A worker just launched: its process, and the manager's end of its channel.
pub(crate) struct Launched {
    pub process: Process,
    pub transport: Transport,
}

/// Starts workers for the pool.
pub(crate) trait Launch {
    /// Starts worker `id` of `spec` as process `serial`, whose events go to
    /// `events`. A Node.js worker is matched against `dispatcher`'s sockets.
    fn launch(
        &self,
        spec: &Spec,
        id: u32,
        serial: u64,
        events: &mpsc::UnboundedSender<WorkerEvent>,
        dispatcher: &Dispatcher,
    ) -> io::Result<Launched>;
}

/// Launches workers as real processes.
pub(crate) struct Processes;

impl Launch for Processes {
    fn launch(
        &self,
        spec: &Spec,
        id: u32,
        serial: u64,
        events: &mpsc::UnboundedSender<WorkerEvent>,
        dispatcher: &Dispatcher,
    ) -> io::Result<Launched> {
        let spawned = spawn::spawn(spec, id)?;
        let pid = spawned.pid;
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let peer = Peer {
            id,
            pid,
            signals: signals.clone(),
        };
        let transport = Transport::open(
            &spec.protocol,
            spawned.channel,
            peer,
            &dispatcher.sockets(),
            &dispatcher.capacity(),
        )
        .inspect_err(|_| {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        })?;
        let tasks = vec![
            spawn_local(watch_process(
                serial,
                spawned.child,
                signals_rx,
                events.clone(),
            )),
            spawn_local(read_channel(serial, transport.clone(), events.clone())),
        ];
        // Off the event loop: read by the log thread until their end.
        for (pipe, stream) in [
            (spawned.stdout.into_owned_fd(), Stream::Stdout),
            (spawned.stderr.into_owned_fd(), Stream::Stderr),
        ] {
            match pipe {
                Ok(fd) => log::forward(fd, stream, id, pid),
                Err(e) => tracing::warn!(worker_id = id, "cannot read worker {id}'s output: {e}"),
            }
        }
        Ok(Launched {
            process: Process {
                pid,
                signals,
                tasks,
            },
            transport,
        })
    }
}

/// Owns the child: reaps it, and delivers signals to its process group only
/// while it has not been reaped (so a recycled pid is never signalled).
async fn watch_process(
    serial: u64,
    mut child: tokio::process::Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    events: mpsc::UnboundedSender<WorkerEvent>,
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
                let _ = events.send(WorkerEvent::Exited(serial, status));
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
async fn read_channel(serial: u64, channel: Transport, events: mpsc::UnboundedSender<WorkerEvent>) {
    loop {
        let event = match channel.recv().await {
            Ok(Some(Ok(notice))) => WorkerEvent::Notice(serial, notice),
            Ok(Some(Err(garbage))) => {
                let _ = events.send(WorkerEvent::Garbage(serial, garbage));
                return;
            }
            Ok(None) | Err(_) => {
                let _ = events.send(WorkerEvent::ChannelClosed(serial));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}
