//! The pool's state machine, driven without a single process.
//!
//! A fake launcher hands the pool a native transport over a socketpair whose
//! other end the test holds, and a signal channel the test reads; the test
//! then plays every worker: it says `READY=1`, crashes, hangs, exits. Time is
//! tokio's paused clock, moved by hand, so ready timeouts, kill timeouts,
//! backoff, the crash window and heartbeats are checked to the millisecond in
//! a few milliseconds of real time. Each test names the transition of the
//! worker state diagram (`pool/worker.rs`) it walks.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, MsgFlags, SockType, UnixAddr};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{spawn_local, JoinHandle, LocalSet};
use tokio::time::advance;

use super::backoff::Limit;
use super::carried::CarriedWorker;
use super::launch::{Launch, Launched, WorkerEvent};
use super::report::{Event, Handle, PoolState, Request, RequestError, Snapshot};
use super::settings::{Reconfigure, Settings};
use super::spawn::Spec;
use super::usage::Usage;
use super::worker::Process;
use super::{Outcome, Pool};
use crate::conn::channel::{self, Channel};
use crate::conn::dispatch::{Dispatcher, Route};
use crate::conn::notice::{Garbage, Notice};
use crate::conn::policy::Policy;
use crate::conn::transport::{Protocol, Transport};
use crate::shutdown::Shutdown;

/// One worker the fake launcher started, as the test sees it.
struct Fake {
    id: u32,
    serial: u64,
    /// The program it was started as: which generation's command.
    program: String,
    /// The worker's end of its channel: what the manager sent it.
    channel: OwnedFd,
    /// Signals the manager sent it.
    signals: mpsc::UnboundedReceiver<Signal>,
}

/// What the fake launcher did, shared with the test.
#[derive(Default)]
struct Launches {
    started: RefCell<Vec<Fake>>,
    /// Launches still to fail, as a fork that fails would.
    failing: Cell<u32>,
    /// The pool's event channel, to play the workers' tasks.
    events: RefCell<Option<mpsc::Sender<WorkerEvent>>>,
    /// Workers taken up from a carried pool: serial, and the signals sent.
    adopted: RefCell<Vec<(u64, mpsc::UnboundedReceiver<Signal>)>>,
}

struct FakeLauncher(Rc<Launches>);

impl Launch for FakeLauncher {
    fn launch(
        &self,
        spec: &Spec,
        id: u32,
        serial: u64,
        events: &mpsc::Sender<WorkerEvent>,
        _dispatcher: &Dispatcher,
    ) -> io::Result<Launched> {
        self.0.events.replace(Some(events.clone()));
        if self.0.failing.get() > 0 {
            self.0.failing.set(self.0.failing.get() - 1);
            return Err(io::Error::other("fork failed"));
        }
        let (manager, worker) = channel::pair(SockType::SeqPacket)?;
        let (signals, signals_rx) = mpsc::unbounded_channel();
        self.0.started.borrow_mut().push(Fake {
            id,
            serial,
            program: spec.program.display().to_string(),
            channel: worker,
            signals: signals_rx,
        });
        Ok(Launched {
            process: Process {
                pid: 10_000 + serial as u32,
                signals,
                tasks: Vec::new(),
            },
            route: Rc::new(Route::new(
                serial,
                id,
                Transport::Native(Rc::new(Channel::new(manager)?)),
            )),
        })
    }

    fn adopt(
        &self,
        _spec: &Spec,
        carried: CarriedWorker,
        events: &mpsc::Sender<WorkerEvent>,
        _dispatcher: &Dispatcher,
    ) -> io::Result<Launched> {
        self.0.events.replace(Some(events.clone()));
        // SAFETY: the test handed this fd over for the adopted pool alone.
        let manager = unsafe { OwnedFd::from_raw_fd(carried.transport.fd()) };
        let (signals, signals_rx) = mpsc::unbounded_channel();
        self.0
            .adopted
            .borrow_mut()
            .push((carried.serial, signals_rx));
        Ok(Launched {
            process: Process {
                pid: carried.pid,
                signals,
                tasks: Vec::new(),
            },
            route: Rc::new(Route::new(
                carried.serial,
                carried.id,
                Transport::Native(Rc::new(Channel::new(manager)?)),
            )),
        })
    }

    fn tidy(&self, _workers: &HashSet<u32>) {}
}

/// What to run: only the program matters to the fake launcher.
fn spec(program: &str) -> Spec {
    Spec {
        app: "test".into(),
        program: program.into(),
        args: Vec::new(),
        heartbeat_interval: None,
        protocol: Protocol::Native,
    }
}

fn settings(workers: u32) -> Settings {
    Settings {
        workers,
        max_workers: 8,
        ready_timeout: Duration::from_secs(10),
        kill_timeout: Duration::from_secs(5),
        kill_signal: Signal::SIGTERM,
        limit: Limit {
            max_restarts: 3,
            window: Duration::from_secs(60),
        },
        reload_batch: 1,
        policy: Policy::RoundRobin,
        heartbeat_timeout: None,
        max_memory: None,
    }
}

/// A running pool, its fake workers, and the test's levers on both.
struct Rig {
    launches: Rc<Launches>,
    handle: Handle,
    dispatcher: Rc<Dispatcher>,
    stop: Option<Shutdown>,
    run: JoinHandle<Outcome>,
    events: tokio::sync::broadcast::Receiver<Event>,
}

impl Rig {
    /// Starts a pool with `settings` and lets it launch its first workers.
    async fn start(settings: Settings) -> Rig {
        Rig::start_with(settings, None).await
    }

    /// Starts a pool whose reloads re-read a config file that says `next`.
    async fn start_reconfigured(settings: Settings, next: Result<(Spec, Settings), String>) -> Rig {
        let reconfigure: Reconfigure = Box::new(move || {
            let next = next.clone();
            Box::pin(async move { next })
        });
        Rig::start_with(settings, Some(reconfigure)).await
    }

    async fn start_with(settings: Settings, reconfigure: Option<Reconfigure>) -> Rig {
        let launches = Rc::new(Launches::default());
        let (broken_tx, broken) = mpsc::unbounded_channel();
        let dispatcher = Rc::new(Dispatcher::new(broken_tx));
        let (pool, handle) = Pool::new(
            spec("/gen1"),
            settings,
            reconfigure,
            Rc::clone(&dispatcher),
            broken,
            Box::new(FakeLauncher(Rc::clone(&launches))),
        );
        let stop = Shutdown::new();
        let events = handle.events.subscribe();
        let run = spawn_local(pool.run(stop.token()));
        let rig = Rig {
            launches,
            handle,
            dispatcher,
            stop: Some(stop),
            run,
            events,
        };
        rig.settle().await;
        rig
    }

    /// Lets the pool act on everything sent to it, without moving the clock.
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Moves the clock and lets the pool act on its timers.
    async fn wait(&self, by: Duration) {
        advance(by).await;
        self.settle().await;
    }

    fn send(&self, event: WorkerEvent) {
        let events = self.launches.events.borrow();
        let events = events.as_ref().expect("the pool launched a worker");
        events.try_send(event).expect("the pool is running");
    }

    async fn tell(&self, serial: u64, notice: Notice) {
        self.send(WorkerEvent::Notice(serial, notice));
        self.settle().await;
    }

    async fn ready(&self, serial: u64) {
        self.tell(
            serial,
            Notice {
                ready: true,
                ..Notice::default()
            },
        )
        .await;
    }

    /// Every worker started so far says `READY=1`.
    async fn all_ready(&self) {
        for serial in self.serials() {
            self.ready(serial).await;
        }
    }

    async fn exit(&self, serial: u64, status: ExitStatus) {
        self.send(WorkerEvent::Exited(serial, status));
        self.settle().await;
    }

    /// The serials of the workers started so far, in order.
    fn serials(&self) -> Vec<u64> {
        self.launches
            .started
            .borrow()
            .iter()
            .map(|f| f.serial)
            .collect()
    }

    /// The program the last worker of slot `id` was started as.
    fn program(&self, id: u32) -> String {
        let serial = self.latest(id);
        let started = self.launches.started.borrow();
        let fake = started.iter().find(|f| f.serial == serial);
        fake.map(|f| f.program.clone()).unwrap_or_default()
    }

    /// The serial of the last worker started for slot `id`.
    fn latest(&self, id: u32) -> u64 {
        self.launches
            .started
            .borrow()
            .iter()
            .rev()
            .find(|f| f.id == id)
            .map(|f| f.serial)
            .expect("a worker was started for the slot")
    }

    fn started(&self) -> usize {
        self.launches.started.borrow().len()
    }

    /// The signals worker `serial` has been sent since last asked.
    fn signals(&self, serial: u64) -> Vec<Signal> {
        let mut started = self.launches.started.borrow_mut();
        let fake = started
            .iter_mut()
            .find(|f| f.serial == serial)
            .expect("a worker with this serial");
        let mut got = Vec::new();
        while let Ok(signal) = fake.signals.try_recv() {
            got.push(signal);
        }
        got
    }

    /// The messages worker `serial` has been sent on its channel since last asked.
    fn said(&self, serial: u64) -> Vec<String> {
        let started = self.launches.started.borrow();
        let fake = started
            .iter()
            .find(|f| f.serial == serial)
            .expect("a worker with this serial");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let flags = MsgFlags::MSG_DONTWAIT;
            match recvmsg::<UnixAddr>(fake.channel.as_raw_fd(), &mut iov, None, flags) {
                Ok(msg) if msg.bytes > 0 => {
                    let len = msg.bytes;
                    got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
                }
                _ => return got,
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.handle.snapshot.borrow().clone()
    }

    /// Sends a request; its answer comes on the returned receiver.
    fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Request,
    ) -> oneshot::Receiver<Result<T, RequestError>> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .requests
            .try_send(make(reply))
            .expect("the pool is running");
        answer
    }

    /// The events the pool sent since last asked.
    fn events(&mut self) -> Vec<Event> {
        let mut got = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            got.push(event);
        }
        got
    }

    /// Asks the pool to stop, and returns how its run ended once it did.
    async fn stop(&mut self) -> Outcome {
        if let Some(stop) = self.stop.take() {
            stop.trigger().request();
            // The pool holds its token until it is done.
            let finished = stop.shutdown();
            tokio::pin!(finished);
            loop {
                tokio::select! {
                    _ = &mut finished => break,
                    _ = tokio::task::yield_now() => {}
                }
            }
        }
        (&mut self.run).await.expect("the pool's run ends")
    }
}

fn code(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn killed(signal: Signal) -> ExitStatus {
    ExitStatus::from_raw(signal as i32)
}

fn test(body: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    LocalSet::new().block_on(&runtime, body);
}

fn answered<T: std::fmt::Debug>(
    answer: &mut oneshot::Receiver<Result<T, RequestError>>,
) -> Option<Result<T, RequestError>> {
    answer.try_recv().ok()
}

// spawn ──► starting ──READY=1──► ready

#[test]
fn a_worker_joins_the_ring_on_ready_and_not_before() {
    test(async {
        let rig = Rig::start(settings(2)).await;
        assert_eq!(rig.started(), 2, "both slots are filled at once");
        let snapshot = rig.snapshot();
        assert_eq!((snapshot.ready, snapshot.state), (0, PoolState::Starting));
        rig.ready(rig.latest(0)).await;
        assert_eq!(rig.snapshot().ready, 1);
        rig.ready(rig.latest(1)).await;
        let snapshot = rig.snapshot();
        assert_eq!((snapshot.ready, snapshot.state), (2, PoolState::Running));
        assert_eq!(rig.dispatcher.total(), 0);
    });
}

// starting ──ready timeout──► crash ──► backoff ──► spawn

#[test]
fn a_worker_not_ready_in_time_is_killed_and_its_slot_restarts() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        let first = rig.latest(0);
        rig.wait(Duration::from_millis(9_999)).await;
        assert!(
            rig.signals(first).is_empty(),
            "not before the ready timeout"
        );
        rig.wait(Duration::from_millis(1)).await;
        assert_eq!(rig.signals(first), [Signal::SIGKILL]);
        rig.exit(first, killed(Signal::SIGKILL)).await;
        // The first crash restarts at once; it counts as a restart.
        assert_eq!(rig.started(), 2);
        assert_eq!(rig.snapshot().restarts, 1);
    });
}

// crash (unexpected exit) ──► backoff (delay ×1.5) ──► spawn

#[test]
fn crashes_restart_after_a_growing_delay() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.exit(rig.latest(0), code(1)).await;
        assert_eq!(rig.started(), 2, "the first restart is immediate");
        rig.exit(rig.latest(0), code(1)).await;
        assert_eq!(rig.started(), 2, "the second waits");
        rig.wait(Duration::from_millis(99)).await;
        assert_eq!(rig.started(), 2);
        rig.wait(Duration::from_millis(1)).await;
        assert_eq!(rig.started(), 3, "after 100 ms");
        rig.exit(rig.latest(0), code(1)).await;
        rig.wait(Duration::from_millis(149)).await;
        assert_eq!(rig.started(), 3);
        rig.wait(Duration::from_millis(1)).await;
        assert_eq!(rig.started(), 4, "after 150 ms");
    });
}

// backoff ──too many crashes in the window──► gave-up

#[test]
fn a_crash_loop_gives_up_and_the_manager_ends() {
    test(async {
        let mut rig = Rig::start(settings(1)).await;
        for _ in 0..3 {
            rig.exit(rig.latest(0), code(1)).await;
            rig.wait(Duration::from_secs(1)).await;
        }
        assert_eq!(rig.started(), 4);
        assert!(rig.snapshot().gave_up.is_empty());
        rig.exit(rig.latest(0), code(1)).await;
        assert_eq!(
            rig.snapshot().gave_up,
            [0],
            "the fourth crash in the window"
        );
        assert_eq!(rig.stop().await, Outcome::AllGaveUp);
    });
}

#[test]
fn crashes_outside_the_window_do_not_add_up() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        for _ in 0..6 {
            rig.ready(rig.latest(0)).await;
            rig.wait(Duration::from_secs(31)).await;
            rig.exit(rig.latest(0), code(1)).await;
        }
        assert!(rig.snapshot().gave_up.is_empty(), "at most 2 in any 60 s");
        assert_eq!(rig.started(), 7);
    });
}

#[test]
fn a_worker_that_cannot_start_counts_as_a_crash() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.launches.failing.set(1);
        rig.exit(rig.latest(0), code(1)).await;
        assert_eq!(rig.started(), 1, "the restart failed to launch");
        assert_eq!(rig.snapshot().restarts, 2);
        rig.wait(Duration::from_millis(100)).await;
        assert_eq!(rig.started(), 2, "and is tried again after its backoff");
    });
}

// ready ──chosen to go (scale down)──► draining ──exit──► exited (not a crash)

#[test]
fn scaling_down_drains_the_highest_ids() {
    test(async {
        let rig = Rig::start(settings(3)).await;
        rig.all_ready().await;
        let mut answer = rig.ask(|reply| Request::Scale(1, reply));
        rig.settle().await;
        let (one, two) = (rig.latest(1), rig.latest(2));
        for serial in [one, two] {
            assert_eq!(rig.said(serial), ["SHUTDOWN=1"]);
        }
        assert!(rig.said(rig.latest(0)).is_empty());
        assert_eq!(rig.snapshot().ready, 1, "out of the ring at once");
        assert!(
            answered(&mut answer).is_none(),
            "answered once they are gone"
        );
        rig.exit(one, code(0)).await;
        rig.exit(two, code(0)).await;
        assert!(matches!(answered(&mut answer), Some(Ok(1))));
        let snapshot = rig.snapshot();
        assert_eq!(
            (snapshot.target, snapshot.restarts),
            (1, 0),
            "a drain is no crash"
        );
        assert_eq!(rig.started(), 3, "nothing restarts");
    });
}

// draining ──kill timeout──► SIGKILL

#[test]
fn a_draining_worker_is_killed_at_the_kill_timeout() {
    test(async {
        let rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        let _answer = rig.ask(|reply| Request::Scale(1, reply));
        rig.settle().await;
        let leaving = rig.latest(1);
        rig.wait(Duration::from_millis(4_999)).await;
        assert!(rig.signals(leaving).is_empty());
        rig.wait(Duration::from_millis(1)).await;
        assert_eq!(rig.signals(leaving), [Signal::SIGKILL]);
    });
}

// draining ──exit──► gone: routine only when it drained

/// The reason and status of the last `WorkerExited` among `events`.
fn last_exit(events: Vec<Event>) -> (String, i32) {
    events
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::WorkerExited { reason, status, .. } => Some((reason, status)),
            _ => None,
        })
        .expect("a worker exited")
}

#[test]
fn a_drain_is_reported_as_it_ended() {
    test(async {
        let mut rig = Rig::start(settings(5)).await;
        rig.all_ready().await;
        // Workers 0 to 3 get two connections, worker 4 one.
        let (socket, _returns) = rig
            .dispatcher
            .add_socket("http", crate::sockets::listener::Local::UnixUnnamed);
        let mut clients = Vec::new();
        for _ in 0..9 {
            let (conn, client) = channel::pair(SockType::Stream).expect("a connection");
            assert!(rig.dispatcher.dispatch(conn, &socket).is_ok());
            clients.push(client);
        }
        rig.settle().await;
        let _answer = rig.ask(|reply| Request::Scale(1, reply));
        rig.settle().await;
        rig.events();

        rig.exit(rig.latest(1), code(0)).await;
        assert_eq!(last_exit(rig.events()), ("drained".into(), 0));
        rig.exit(rig.latest(2), code(1)).await;
        assert_eq!(
            last_exit(rig.events()),
            (
                "exit code 1 while draining, still holding 2 connections".into(),
                1
            )
        );
        rig.exit(rig.latest(3), killed(Signal::SIGTERM)).await;
        assert_eq!(
            last_exit(rig.events()).0,
            "killed by SIGTERM while draining, still holding 2 connections",
            "a native worker is asked on its channel, not by signal"
        );
        rig.wait(Duration::from_secs(5)).await;
        assert_eq!(rig.signals(rig.latest(4)), [Signal::SIGKILL]);
        rig.exit(rig.latest(4), killed(Signal::SIGKILL)).await;
        assert_eq!(
            last_exit(rig.events()).0,
            "killed at the kill timeout (5s), still holding 1 connection"
        );
        assert_eq!(
            rig.snapshot().restarts,
            0,
            "a drain is no crash, however it ends"
        );
    });
}

// ready ──STOPPING=1──► draining, replacement started at once

#[test]
fn a_worker_that_announces_it_stops_is_replaced_at_once() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        rig.wait(Duration::from_secs(30)).await;
        let old = rig.latest(0);
        rig.tell(
            old,
            Notice {
                stopping: true,
                ..Notice::default()
            },
        )
        .await;
        assert_eq!(rig.started(), 2);
        assert_eq!(rig.said(old), ["SHUTDOWN=1"]);
        assert_eq!(rig.snapshot().ready, 0);
        rig.exit(old, code(0)).await;
        rig.ready(rig.latest(0)).await;
        let snapshot = rig.snapshot();
        assert_eq!((snapshot.ready, snapshot.restarts), (1, 0));
    });
}

// any state ──garbage──► crash

#[test]
fn a_worker_that_breaks_the_protocol_is_killed_and_its_exit_is_a_crash() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        let worker = rig.latest(0);
        rig.send(WorkerEvent::Garbage(worker, Garbage("nonsense".into())));
        rig.settle().await;
        assert_eq!(rig.signals(worker), [Signal::SIGKILL]);
        rig.exit(worker, killed(Signal::SIGKILL)).await;
        assert_eq!((rig.started(), rig.snapshot().restarts), (2, 1));
    });
}

#[test]
fn a_worker_alive_without_its_channel_is_killed() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        let worker = rig.latest(0);
        rig.send(WorkerEvent::ChannelClosed(worker));
        rig.settle().await;
        assert!(rig.signals(worker).is_empty(), "it may be exiting");
        rig.wait(Duration::from_secs(1)).await;
        assert_eq!(rig.signals(worker), [Signal::SIGKILL]);
    });
}

// ready ──no heartbeat for --heartbeat-timeout──► SIGABRT, then SIGKILL

#[test]
fn a_hung_worker_gets_sigabrt_then_sigkill() {
    test(async {
        let mut hung = settings(1);
        hung.heartbeat_timeout = Some(Duration::from_secs(4));
        let rig = Rig::start(hung).await;
        rig.all_ready().await;
        let worker = rig.latest(0);
        let beat = Notice {
            heartbeat: true,
            ..Notice::default()
        };
        for _ in 0..3 {
            rig.tell(worker, beat.clone()).await;
            rig.wait(Duration::from_secs(3)).await;
        }
        assert!(rig.signals(worker).is_empty(), "heartbeats keep it alive");
        rig.wait(Duration::from_millis(999)).await;
        assert!(rig.signals(worker).is_empty());
        rig.wait(Duration::from_millis(1)).await;
        assert_eq!(
            rig.signals(worker),
            [Signal::SIGABRT, Signal::SIGCONT],
            "silent for 4 s, even with nothing else to wake the pool"
        );
        assert_eq!(rig.snapshot().ready, 0);
        rig.wait(Duration::from_secs(3)).await;
        assert_eq!(rig.signals(worker), [Signal::SIGKILL]);
        rig.exit(worker, killed(Signal::SIGKILL)).await;
        assert_eq!(rig.snapshot().restarts, 1, "a hang is a crash");
    });
}

#[test]
fn a_worker_that_never_beats_is_not_checked() {
    test(async {
        let mut hung = settings(1);
        hung.heartbeat_timeout = Some(Duration::from_secs(4));
        let rig = Rig::start(hung).await;
        rig.all_ready().await;
        rig.wait(Duration::from_secs(60)).await;
        assert!(rig.signals(rig.latest(0)).is_empty());
    });
}

// reload: replacements, new before old

#[test]
fn a_reload_replaces_every_worker_new_before_old() {
    test(async {
        let mut rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        let (old0, old1) = (rig.latest(0), rig.latest(1));
        let mut answer = rig.ask(Request::Reload);
        rig.settle().await;
        assert_eq!(rig.snapshot().state, PoolState::Reloading);
        assert_eq!(rig.started(), 3, "one at a time (--reload-batch 1)");
        let new0 = rig.latest(0);
        assert!(rig.said(old0).is_empty(), "the old one serves until then");
        rig.ready(new0).await;
        assert_eq!(rig.said(old0), ["SHUTDOWN=1"]);
        assert_eq!(rig.started(), 4);
        rig.ready(rig.latest(1)).await;
        assert_eq!(rig.said(old1), ["SHUTDOWN=1"]);
        assert!(matches!(answered(&mut answer), Some(Ok(2))));
        let snapshot = rig.snapshot();
        assert_eq!(
            (snapshot.generation, snapshot.ready, snapshot.state),
            (2, 2, PoolState::Running)
        );
        assert!(rig.events().contains(&Event::Reloaded {
            generation: 2,
            ok: true
        }));
    });
}

#[test]
fn a_reload_whose_new_worker_fails_keeps_the_old_ones() {
    test(async {
        let mut rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        let (old0, old1) = (rig.latest(0), rig.latest(1));
        let mut answer = rig.ask(Request::Reload);
        rig.settle().await;
        rig.exit(rig.latest(0), code(1)).await;
        assert!(matches!(
            answered(&mut answer),
            Some(Err(RequestError::Failed(_)))
        ));
        assert!(rig.said(old0).is_empty() && rig.said(old1).is_empty());
        let snapshot = rig.snapshot();
        assert_eq!(
            (
                snapshot.generation,
                snapshot.ready,
                snapshot.state,
                snapshot.restarts
            ),
            (1, 2, PoolState::Running, 0)
        );
        assert_eq!(rig.started(), 3, "the reload stopped at its first failure");
        assert!(rig.events().contains(&Event::Reloaded {
            generation: 2,
            ok: false
        }));
    });
}

#[test]
fn a_reload_whose_new_worker_is_not_ready_in_time_is_rolled_back() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        let old = rig.latest(0);
        let mut answer = rig.ask(Request::Reload);
        rig.settle().await;
        let new = rig.latest(0);
        rig.wait(Duration::from_secs(10)).await;
        assert_eq!(rig.signals(new), [Signal::SIGKILL]);
        rig.exit(new, killed(Signal::SIGKILL)).await;
        assert!(matches!(answered(&mut answer), Some(Err(_))));
        assert!(rig.said(old).is_empty());
        assert_eq!(rig.snapshot().ready, 1);
    });
}

#[test]
fn a_second_reload_during_one_is_refused_as_busy() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        let _first = rig.ask(Request::Reload);
        let mut second = rig.ask(Request::Reload);
        rig.settle().await;
        assert!(matches!(
            answered(&mut second),
            Some(Err(RequestError::Busy(_)))
        ));
    });
}

// restart one: a replacement

#[test]
fn restarting_one_worker_replaces_it_new_before_old() {
    test(async {
        let rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        let old = rig.latest(1);
        let mut answer = rig.ask(|reply| Request::RestartWorker(1, reply));
        rig.settle().await;
        assert_eq!(rig.snapshot().ready, 2, "the old one still serves");
        rig.ready(rig.latest(1)).await;
        assert!(matches!(answered(&mut answer), Some(Ok(()))));
        assert_eq!(rig.said(old), ["SHUTDOWN=1"]);
        let mut unknown = rig.ask(|reply| Request::RestartWorker(7, reply));
        rig.settle().await;
        assert!(matches!(
            answered(&mut unknown),
            Some(Err(RequestError::InvalidArgs(_)))
        ));
    });
}

// scale up

#[test]
fn scaling_up_answers_once_the_new_workers_are_ready() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        let mut answer = rig.ask(|reply| Request::ScaleBy(2, reply));
        rig.settle().await;
        assert_eq!((rig.started(), rig.snapshot().target), (3, 3));
        rig.ready(rig.latest(1)).await;
        assert!(answered(&mut answer).is_none());
        rig.ready(rig.latest(2)).await;
        assert!(matches!(answered(&mut answer), Some(Ok(3))));
        let mut too_many = rig.ask(|reply| Request::Scale(9, reply));
        let mut none = rig.ask(|reply| Request::ScaleBy(-3, reply));
        rig.settle().await;
        assert!(matches!(
            answered(&mut too_many),
            Some(Err(RequestError::InvalidArgs(_)))
        ));
        assert!(matches!(
            answered(&mut none),
            Some(Err(RequestError::InvalidArgs(_)))
        ));
    });
}

// --max-memory: replaced new before old; past twice the limit, killed

#[test]
fn a_bloated_worker_is_replaced_and_a_runaway_one_killed() {
    test(async {
        let mut limited = settings(2);
        limited.max_memory = Some(100 << 20);
        let rig = Rig::start(limited).await;
        rig.all_ready().await;
        let (zero, one) = (rig.latest(0), rig.latest(1));
        let usage = |rss_bytes| Usage {
            rss_bytes,
            cpu_usec: 0,
            started_usec: 0,
        };
        rig.send(WorkerEvent::Usage(vec![
            (zero, usage(150 << 20)),
            (one, usage(250 << 20)),
        ]));
        rig.settle().await;
        assert_eq!(rig.signals(one), [Signal::SIGKILL], "over twice the limit");
        assert!(rig.signals(zero).is_empty());
        assert_eq!(rig.started(), 3, "a stand-in for worker 0");
        rig.ready(rig.latest(0)).await;
        assert_eq!(rig.said(zero), ["SHUTDOWN=1"]);
    });
}

// shutdown: every worker drains, the rest is killed at the kill timeout

#[test]
fn a_stop_drains_every_worker_and_kills_what_is_left() {
    test(async {
        let mut rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        let (zero, one) = (rig.latest(0), rig.latest(1));
        let stop = rig.stop.take().expect("running");
        stop.trigger().request();
        let stopping = async {
            rig.settle().await;
            assert_eq!(rig.snapshot().state, PoolState::Stopping);
            assert_eq!(rig.said(zero), ["SHUTDOWN=1"]);
            assert_eq!(rig.said(one), ["SHUTDOWN=1"]);
            rig.exit(zero, code(0)).await;
            rig.wait(Duration::from_secs(5)).await;
            assert_eq!(rig.signals(one), [Signal::SIGKILL]);
            rig.exit(one, killed(Signal::SIGKILL)).await;
        };
        let (_, ()) = tokio::join!(stop.shutdown(), stopping);
        assert_eq!((&mut rig.run).await.expect("ends"), Outcome::Stopped);
        assert_eq!(rig.started(), 2, "nothing restarts during a stop");
    });
}

#[test]
fn requests_during_a_stop_are_refused() {
    test(async {
        let mut rig = Rig::start(settings(1)).await;
        rig.all_ready().await;
        rig.stop.as_ref().expect("running").trigger().request();
        rig.settle().await;
        let mut reload = rig.ask(Request::Reload);
        let mut ping = rig.ask_ping();
        rig.settle().await;
        assert!(matches!(
            answered(&mut reload),
            Some(Err(RequestError::Failed(_)))
        ));
        assert!(ping.try_recv().is_ok(), "reads are still answered");
        rig.exit(rig.latest(0), code(0)).await;
        assert_eq!(rig.stop().await, Outcome::Stopped);
    });
}

impl Rig {
    fn ask_ping(&self) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .requests
            .try_send(Request::Ping(reply))
            .expect("the pool is running");
        answer
    }
}

// A failed reload leaves no trace: what is stored is what proved itself.

#[test]
fn after_a_failed_reload_crashed_workers_come_back_as_the_last_good_generation() {
    test(async {
        let rig = Rig::start_reconfigured(settings(2), Ok((spec("/gen2"), settings(2)))).await;
        rig.all_ready().await;
        let mut answer = rig.ask(Request::Reload);
        rig.settle().await;
        assert_eq!(rig.program(0), "/gen2");
        rig.exit(rig.latest(0), code(1)).await;
        assert!(matches!(answered(&mut answer), Some(Err(_))));
        // An ordinary crash of a worker of generation 1, after the failed reload.
        let old = rig
            .serials()
            .into_iter()
            .find(|s| *s == 1)
            .expect("the first worker of slot 0");
        rig.exit(old, code(1)).await;
        assert_eq!(rig.program(0), "/gen1", "the replacement runs what served");
        assert_eq!(rig.snapshot().generation, 1);
    });
}

#[test]
fn a_reload_that_fails_half_way_rolls_the_replaced_workers_back() {
    test(async {
        let rig = Rig::start_reconfigured(settings(2), Ok((spec("/gen2"), settings(2)))).await;
        rig.all_ready().await;
        let mut answer = rig.ask(Request::Reload);
        rig.settle().await;
        let new0 = rig.latest(0);
        rig.ready(new0).await;
        assert_eq!(rig.program(1), "/gen2", "slot 1's stand-in started");
        rig.exit(rig.latest(1), code(1)).await;
        assert!(matches!(answered(&mut answer), Some(Err(_))));
        assert_eq!(rig.program(0), "/gen1", "slot 0 gets generation 1 back");
        assert!(rig.said(new0).is_empty(), "new before old, also backwards");
        rig.ready(rig.latest(0)).await;
        assert_eq!(rig.said(new0), ["SHUTDOWN=1"]);
        let snapshot = rig.snapshot();
        assert_eq!((snapshot.generation, snapshot.ready), (1, 2));
    });
}

#[test]
fn a_successful_reload_keeps_what_the_file_said() {
    test(async {
        let mut more = settings(1);
        more.kill_timeout = Duration::from_secs(1);
        let rig = Rig::start_reconfigured(settings(1), Ok((spec("/gen2"), more))).await;
        rig.all_ready().await;
        let mut answer = rig.ask(Request::Reload);
        rig.settle().await;
        rig.ready(rig.latest(0)).await;
        assert!(matches!(answered(&mut answer), Some(Ok(2))));
        rig.exit(rig.latest(0), code(1)).await;
        assert_eq!(rig.program(0), "/gen2");
    });
}

// A worker whose channel broke is a dead worker.

#[test]
fn a_worker_whose_channel_broke_is_killed_and_replaced() {
    test(async {
        let rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        let broken = rig.latest(0);
        rig.shut_reading(broken);
        let (socket, _returns) = rig
            .dispatcher
            .add_socket("http", crate::sockets::listener::Local::UnixUnnamed);
        let (conn, _client) = channel::pair(SockType::Stream).expect("a connection");
        assert!(
            rig.dispatcher.dispatch(conn, &socket).is_ok(),
            "the connection goes to the other worker"
        );
        rig.settle().await;
        assert_eq!(rig.snapshot().ready, 1, "no longer counted ready");
        assert!(rig.signals(broken).is_empty(), "it may be dying");
        rig.wait(Duration::from_secs(1)).await;
        assert_eq!(rig.signals(broken), [Signal::SIGKILL], "it is not");
        rig.exit(broken, killed(Signal::SIGKILL)).await;
        assert_eq!((rig.started(), rig.snapshot().restarts), (3, 1));
    });
}

#[test]
fn a_killed_worker_is_not_counted_ready() {
    test(async {
        let rig = Rig::start(settings(2)).await;
        rig.all_ready().await;
        rig.send(WorkerEvent::Garbage(
            rig.latest(0),
            Garbage("nonsense".into()),
        ));
        rig.send(WorkerEvent::ChannelClosed(rig.latest(1)));
        rig.settle().await;
        assert_eq!(rig.snapshot().ready, 0);
    });
}

// A worker that keeps saying STOPPING=1 is a crash loop too.

#[test]
fn a_stopping_storm_backs_off_and_gives_up() {
    test(async {
        let mut rig = Rig::start(settings(1)).await;
        let stopping = Notice {
            ready: true,
            stopping: true,
            ..Notice::default()
        };
        for _ in 0..20 {
            if !rig.snapshot().gave_up.is_empty() {
                break;
            }
            // The worker that says it stops, then does.
            let old = rig.latest(0);
            rig.tell(old, stopping.clone()).await;
            rig.exit(old, code(0)).await;
            rig.wait(Duration::from_millis(50)).await;
        }
        assert!(
            rig.started() < 10,
            "backed off: {} starts in 1 s",
            rig.started()
        );
        assert_eq!(rig.snapshot().gave_up, [0], "it gives up like a crash loop");
        assert_eq!(rig.stop().await, Outcome::AllGaveUp);
    });
}

#[test]
fn a_worker_that_stops_after_a_stable_run_is_replaced_at_once() {
    test(async {
        let rig = Rig::start(settings(1)).await;
        for round in 0..10 {
            rig.all_ready().await;
            rig.wait(Duration::from_secs(31)).await;
            let old = rig.latest(0);
            rig.tell(
                old,
                Notice {
                    stopping: true,
                    ..Notice::default()
                },
            )
            .await;
            assert_eq!(rig.started(), round + 2, "no delay after 31 s of service");
            rig.exit(old, code(0)).await;
        }
        assert!(rig.snapshot().gave_up.is_empty());
    });
}

impl Rig {
    /// Worker `serial` stops reading its channel, as `shutdown(fd 3, SHUT_RD)` does.
    fn shut_reading(&self, serial: u64) {
        let started = self.launches.started.borrow();
        let fake = started
            .iter()
            .find(|f| f.serial == serial)
            .expect("a worker with this serial");
        nix::sys::socket::shutdown(fake.channel.as_raw_fd(), nix::sys::socket::Shutdown::Read)
            .expect("shutdown");
    }
}

// ready ──re-exec──► ready (the same processes, in the next image's pool)

/// Carries the pool as a re-exec would; the exec "fails", so the pool
/// answers, and the carried state comes back to the test.
async fn carry(rig: &Rig) -> (super::carried::CarriedPool, Result<(), RequestError>) {
    let (carried_tx, carried_rx) = std::sync::mpsc::channel();
    let exec = super::report::Exec(Box::new(move |carried| {
        let _ = carried_tx.send(carried);
        "not replaced: a test".to_owned()
    }));
    let mut answer = rig.ask(|reply| Request::Reexec(exec, reply));
    rig.settle().await;
    let answer = answered(&mut answer).expect("the pool answered");
    (
        carried_rx.try_recv().expect("the pool carried itself"),
        answer,
    )
}

#[test]
fn a_steady_pool_is_carried_and_taken_up_whole() {
    test(async {
        let rig = Rig::start(settings(3)).await;
        rig.all_ready().await;
        // Slot 2 crashed once: its history crosses too.
        rig.exit(rig.latest(2), code(1)).await;
        rig.wait(Duration::from_secs(1)).await;
        rig.ready(rig.latest(2)).await;
        let (socket, _returns) = rig
            .dispatcher
            .add_socket("http", crate::sockets::listener::Local::UnixUnnamed);
        let mut clients = Vec::new();
        for _ in 0..5 {
            let (conn, client) = channel::pair(SockType::Stream).expect("a connection");
            assert!(rig.dispatcher.dispatch(conn, &socket).is_ok());
            clients.push(client);
        }
        let mut steady = rig.ask(Request::Steady);
        rig.settle().await;
        assert!(matches!(answered(&mut steady), Some(Ok(true))));
        let before = rig.ask(Request::Status);
        rig.settle().await;
        let before = before.await.expect("answered").expect("a status");

        let (carried, answer) = carry(&rig).await;
        assert_eq!(
            answer,
            Err(RequestError::Failed("not replaced: a test".into()))
        );
        // Through the image's format, over copies of the channels (the old
        // pool still holds its own: in a real re-exec it is gone).
        let mut carried: super::carried::CarriedPool =
            serde_json::from_str(&serde_json::to_string(&carried).expect("JSON"))
                .expect("read back");
        for worker in &mut carried.workers {
            if let crate::conn::carried::Carried::Native { fd, .. } = &mut worker.transport {
                *fd = nix::unistd::dup(*fd).expect("a copy");
            }
        }
        let launches = Rc::new(Launches::default());
        let (broken_tx, broken) = mpsc::unbounded_channel();
        let dispatcher = Rc::new(Dispatcher::new(broken_tx));
        let (pool, handle) = Pool::adopt(
            carried,
            spec("/gen1"),
            None,
            Rc::clone(&dispatcher),
            broken,
            Box::new(FakeLauncher(Rc::clone(&launches))),
        )
        .expect("taken up");
        let stop = Shutdown::new();
        let _run = spawn_local(pool.run(stop.token()));
        rig.settle().await;
        let (tx, after) = oneshot::channel();
        handle
            .requests
            .try_send(Request::Status(tx))
            .expect("running");
        rig.settle().await;
        let after = after.await.expect("answered").expect("a status");
        assert_eq!(after, before, "the same workers, counters and restarts");
        assert!(dispatcher.any_ready());
        assert_eq!(dispatcher.total(), 5);
        let snapshot = handle.snapshot.borrow().clone();
        assert_eq!(
            (snapshot.state, snapshot.ready, snapshot.restarts),
            (PoolState::Running, 3, 1)
        );
        assert_eq!(launches.adopted.borrow().len(), 3);
        assert_eq!(
            launches.started.borrow().len(),
            0,
            "nothing new was started"
        );
    });
}

#[test]
fn a_pool_that_is_not_steady_is_busy_for_a_reexec() {
    test(async {
        let rig = Rig::start(settings(2)).await;
        let mut steady = rig.ask(Request::Steady);
        rig.settle().await;
        assert!(
            matches!(answered(&mut steady), Some(Err(RequestError::Busy(why))) if why.contains("starting")),
            "workers still starting"
        );
        rig.all_ready().await;
        let _reload = rig.ask(Request::Reload);
        rig.settle().await;
        let exec = super::report::Exec(Box::new(|_| panic!("a busy pool is not carried")));
        let mut answer = rig.ask(|reply| Request::Reexec(exec, reply));
        rig.settle().await;
        assert!(
            matches!(answered(&mut answer), Some(Err(RequestError::Busy(why))) if why.contains("reload")),
            "a reload under way"
        );
    });
}
