//! Launching a worker: its process, its transport, and the tasks that watch it.
//!
//! The pool decides *when* a worker starts and what it stands for; a [`Launch`]
//! does the starting. [`Processes`] is the real one: it forks and execs the
//! worker ([`super::spawn`]), wraps the manager's end of its channel in a
//! [`Transport`] and that in the [`Route`] dispatch knows it by, and starts
//! the tasks that watch it — one reaps the child and delivers signals to its
//! process group, one reads its channel — and hands its stdout and stderr
//! pipes to the log thread ([`crate::log::forward`]). Each task reports what
//! it sees to the pool as a [`WorkerEvent`], through a bounded channel
//! ([`EVENTS_IN_FLIGHT`]): what a worker says waits there, merged into one
//! notice, when the pool is behind, and is read no faster than
//! [`MESSAGES_PER_SECOND`], so whatever a worker sends costs the manager
//! bounded memory and a bounded share of its loop. A message that says
//! nothing but `CLOSED=<n>` — one per connection under least-conn — goes
//! no further than the reader: it counts the closes on the route itself.
//!
//! The pool's own unit tests launch nothing: their launcher hands out a
//! transport over a socketpair and lets the test play the worker, so every
//! transition of the state machine runs in milliseconds (`pool/tests.rs`).

use std::collections::HashSet;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitStatus;
use std::rc::Rc;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::getpgid;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::spawn_local;
use tokio::time::{Duration, Instant};

use super::carried::CarriedWorker;
use super::child::Child;
use super::orphans;
use super::spawn::{self, Spec};
use super::usage::Usage;
use super::worker::Process;
use crate::conn::dispatch::{Dispatcher, Route};
use crate::conn::notice::{Garbage, Notice};
use crate::conn::peer::Peer;
use crate::conn::transport::Transport;
use crate::log::{self, Stream};

/// Events in flight from the tasks watching workers to the pool. A task whose
/// event finds no room waits; a channel reader keeps reading meanwhile and
/// merges what its worker says into the one notice it has waiting.
pub(crate) const EVENTS_IN_FLIGHT: usize = 1024;

/// Messages read from one worker's channel per second. A native worker sends
/// one `CLOSED=` per connection at most (the worker crate merges them when its
/// channel is full), so only a flood hits this; past it the reader waits for
/// the next second and the worker's own sends back up.
const MESSAGES_PER_SECOND: u32 = 10_000;

/// Something that happened to a worker, reported by the tasks watching it.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// It said something on its channel (but closes, which its reader
    /// counts on the route itself).
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

/// A worker just launched: its process, and the manager's end of its
/// channel as dispatch knows it.
pub(crate) struct Launched {
    pub process: Process,
    pub route: Rc<Route>,
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
        events: &mpsc::Sender<WorkerEvent>,
        dispatcher: &Dispatcher,
    ) -> io::Result<Launched>;

    /// Takes up a worker an earlier image of the manager started and
    /// carried across a re-exec: the same process, its channel inherited.
    fn adopt(
        &self,
        spec: &Spec,
        carried: CarriedWorker,
        events: &mpsc::Sender<WorkerEvent>,
        dispatcher: &Dispatcher,
    ) -> io::Result<Launched>;

    /// Kills what the workers left behind and reaps what exited, given the
    /// pids of the live `workers` (see [`super::orphans`]).
    fn tidy(&self, workers: &HashSet<u32>);
}

/// Launches workers as real processes.
pub(crate) struct Processes;

impl Launch for Processes {
    fn launch(
        &self,
        spec: &Spec,
        id: u32,
        serial: u64,
        events: &mpsc::Sender<WorkerEvent>,
        dispatcher: &Dispatcher,
    ) -> io::Result<Launched> {
        let spawned = spawn::spawn(spec, id)?;
        let pipes = [
            Some((spawned.stdout, Stream::Stdout)),
            Some((spawned.stderr, Stream::Stderr)),
        ];
        let channel = spawned.channel;
        watch(serial, id, spawned.child, pipes, events, |peer| {
            Transport::open(
                &spec.protocol,
                channel,
                peer,
                &dispatcher.sockets(),
                &dispatcher.capacity(),
            )
        })
    }

    fn adopt(
        &self,
        spec: &Spec,
        carried: CarriedWorker,
        events: &mpsc::Sender<WorkerEvent>,
        dispatcher: &Dispatcher,
    ) -> io::Result<Launched> {
        // SAFETY: the descriptors were inherited across the exec for this
        // worker alone; nothing else in this image owns them.
        let pipes = [
            (carried.stdout, Stream::Stdout),
            (carried.stderr, Stream::Stderr),
        ]
        .map(|(fd, stream)| fd.map(|fd| (unsafe { OwnedFd::from_raw_fd(fd) }, stream)));
        let child = Child::adopt(carried.pid)?;
        let transport = carried.transport;
        watch(carried.serial, carried.id, child, pipes, events, |peer| {
            Transport::adopt(
                &spec.protocol,
                transport,
                peer,
                &dispatcher.sockets(),
                &dispatcher.capacity(),
            )
        })
    }

    fn tidy(&self, workers: &HashSet<u32>) {
        orphans::tidy(workers);
    }
}

/// Wires up worker `id` (process `serial`), started or taken over: its
/// transport, made by `transport` for the worker as a [`Peer`]; the tasks
/// that reap it and read its channel; its output `pipes`, handed to the log
/// thread. A worker whose transport cannot be made is killed (its slot
/// restarts it): it must not run on unseen.
fn watch(
    serial: u64,
    id: u32,
    child: Child,
    pipes: [Option<(OwnedFd, Stream)>; 2],
    events: &mpsc::Sender<WorkerEvent>,
    transport: impl FnOnce(Peer) -> io::Result<Transport>,
) -> io::Result<Launched> {
    let pid = child.pid();
    let (signals, signals_rx) = mpsc::unbounded_channel();
    let peer = Peer {
        id,
        pid,
        signals: signals.clone(),
    };
    let transport = transport(peer).inspect_err(|_| {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    })?;
    let route = Rc::new(Route::new(serial, id, transport));
    let tasks = vec![
        spawn_local(watch_process(serial, child, signals_rx, events.clone())),
        spawn_local(read_channel((id, pid), Rc::clone(&route), events.clone())),
    ];
    // Off the event loop: read by the log thread until their end.
    for (pipe, stream) in pipes.into_iter().flatten() {
        log::forward(pipe, stream, id, pid);
    }
    Ok(Launched {
        process: Process {
            pid,
            signals,
            tasks,
        },
        route,
    })
}

/// Owns the child: reaps it, and delivers signals to its process group only
/// while it has not been reaped (so a recycled pid is never signalled). A
/// worker that left its group is signalled by pid too; one still in it gets
/// each signal once (a second SIGINT or SIGTERM means "now" to many apps).
pub(super) async fn watch_process(
    serial: u64,
    child: Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    events: mpsc::Sender<WorkerEvent>,
) {
    let pid = Pid::from_raw(child.pid() as i32);
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
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = events.send(WorkerEvent::Exited(serial, status)).await;
                return;
            }
            Some(signal) = signals.recv() => {
                if child.running() {
                    let _ = killpg(pid, signal);
                    let in_its_group = getpgid(Some(pid)).is_ok_and(|group| group == pid);
                    if !in_its_group {
                        let _ = kill(pid, signal);
                    }
                }
            }
        }
    }
}

/// Forwards what a worker says on its channel until it closes or misbehaves.
/// Closes are counted on its route at once; what else it says goes to the
/// pool, merged into one waiting notice while the pool has no room. The
/// channel is read no faster than [`MESSAGES_PER_SECOND`].
async fn read_channel((id, pid): (u32, u32), route: Rc<Route>, events: mpsc::Sender<WorkerEvent>) {
    let serial = route.serial;
    let mut waiting: Option<Notice> = None;
    let mut budget = Budget::new();
    let end = loop {
        tokio::select! {
            biased;
            room = events.reserve(), if waiting.is_some() => match (room, waiting.take()) {
                (Ok(room), Some(notice)) => room.send(WorkerEvent::Notice(serial, notice)),
                _ => return,
            },
            said = route.transport.recv() => match said {
                Ok(Some(Ok(mut notice))) => {
                    route.report_closed(std::mem::take(&mut notice.closed));
                    if !notice.only_closes() {
                        match &mut waiting {
                            Some(earlier) => earlier.merge(notice),
                            None => waiting = Some(notice),
                        }
                    }
                    if let Some(news) = budget.take() {
                        if news {
                            tracing::warn!(
                                event = "worker-flooding",
                                worker_id = id,
                                worker_pid = pid,
                                "worker {id} (pid {pid}) sends more than \
                                 {MESSAGES_PER_SECOND} messages a second on its channel; \
                                 reading it no faster"
                            );
                        }
                        budget.refill().await;
                    }
                }
                Ok(Some(Err(garbage))) => break WorkerEvent::Garbage(serial, garbage),
                Ok(None) | Err(_) => break WorkerEvent::ChannelClosed(serial),
            },
        }
    };
    // What it said last goes first, then how it ended.
    if let Some(notice) = waiting {
        let _ = events.send(WorkerEvent::Notice(serial, notice)).await;
    }
    let _ = events.send(end).await;
}

/// How many messages a channel reader may still read in the current second.
/// The clock is read once per [`MESSAGES_PER_SECOND`] messages, not per
/// message: a second starts when its budget is handed out, and a reader that
/// spends it before the second is over waits for the next.
struct Budget {
    left: u32,
    /// When the current second ends.
    until: Instant,
    /// The reader is being held back; logged once, until a second passes
    /// that does not use up its budget.
    flooding: bool,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            left: MESSAGES_PER_SECOND,
            until: Instant::now() + Duration::from_secs(1),
            flooding: false,
        }
    }

    /// Takes one message. `None` while the budget lasts, or when it ran out
    /// after its second was over (a new second starts, with a full budget);
    /// `Some(news)` when it ran out within its second, `news` when the flood
    /// has just begun (log it): the caller waits for [`Budget::refill`].
    fn take(&mut self) -> Option<bool> {
        self.left -= 1;
        if self.left > 0 {
            return None;
        }
        let now = Instant::now();
        if now >= self.until {
            self.flooding = false;
            self.left = MESSAGES_PER_SECOND;
            self.until = now + Duration::from_secs(1);
            return None;
        }
        Some(!std::mem::replace(&mut self.flooding, true))
    }

    /// Waits for the next second, and starts it with a full budget.
    async fn refill(&mut self) {
        tokio::time::sleep_until(self.until).await;
        self.left = MESSAGES_PER_SECOND;
        self.until = Instant::now() + Duration::from_secs(1);
    }
}
