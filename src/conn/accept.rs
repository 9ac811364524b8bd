//! The accept loop: one task per listening socket, from `accept()` to dispatch.
//!
//! Each loop accepts as many connections as the kernel has queued (up to what
//! one message to a worker holds), hands them to the [`Dispatcher`]
//! together, which closes its own copies. Accepted sockets are
//! close-on-exec (no worker inherits another's connection by accident) and
//! blocking: what a worker gets is what its own `accept()` would have given it.
//!
//! Backpressure lives here. When no worker can take a connection, the loop
//! holds what it has and stops calling `accept()`: the kernel's backlog (or
//! systemd's, for an activated socket) holds the rest, and nothing is refused
//! while the queue has room. It resumes as soon as a worker joins the ring
//! or has room again. What it holds is one connection when no worker was
//! ready or the last hand-over had to wait, so that a manager stopping
//! then resets one client, not a batch of them; at most a batch when the
//! workers filled up in the middle of one.
//!
//! Connections a worker hands back undelivered (a Node.js app refused one, or
//! died holding it) come back to the loop of the socket they were accepted on,
//! and go out again before anything new is accepted.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{accept4, SockFlag};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::{spawn_local, JoinHandle};
use tokio::time::sleep;

use super::dispatch::{Dispatcher, Stall};
use super::socket::Socket;
use crate::shutdown::Token;
use crate::sockets::listener::Listener;

/// Connections accepted in one go before they are handed over and other
/// tasks get their turn, so a busy socket cannot starve the pool's event
/// handling (fewer when one message to a worker holds fewer).
const BATCH: usize = 64;

/// How long to back off when the process or system is out of descriptors or memory.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// When every ready worker's channel is full, how often to try again
/// (a worker joining the ring also wakes us).
const BUSY_RETRY: Duration = Duration::from_millis(2);

/// Under ip-hash, how long a connection waits for its client's worker while
/// that worker is busy before it goes to the client's next choice: sticky
/// through a burst, but one stuck worker cannot hold up the whole socket.
const STICKY_PATIENCE: Duration = Duration::from_millis(50);

/// Registers `listener` with the dispatcher (so workers can ask for it from
/// the start) and runs its accept loop until `stop` is requested.
pub(crate) fn spawn(
    listener: Listener,
    dispatcher: Rc<Dispatcher>,
    stop: Token,
) -> JoinHandle<io::Result<()>> {
    let (socket, returned) = dispatcher.add_socket(&listener.name, listener.local.clone());
    spawn_local(run(Rc::new(listener), socket, returned, dispatcher, stop))
}

/// Runs until `stop` is requested. The listening socket is never shut down; it is
/// only closed when the manager is done with it (systemd keeps its own copy).
async fn run(
    listener: Rc<Listener>,
    socket: Rc<Socket>,
    mut returned: mpsc::UnboundedReceiver<OwnedFd>,
    dispatcher: Rc<Dispatcher>,
    mut stop: Token,
) -> io::Result<()> {
    nix::fcntl::fcntl(
        listener.fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    // SAFETY: `listener` owns the fd and outlives `fd`, which is dropped first
    // when this function returns.
    let fd = unsafe { AsyncFd::register(listener.fd.as_raw_fd()) }.map_err(std::io::Error::from)?;
    let batch = BATCH.min(socket.batch);
    // Connections accepted and not handed over yet: empty between wake-ups.
    let mut conns = VecDeque::with_capacity(batch);
    // The last hand-over had to wait for a worker: accept one at a time
    // until one goes through at once.
    let mut waited = false;
    // Made once: a new one for every wake-up would cost more than the
    // wake-up's dispatch.
    let stopped = stop.requested();
    tokio::pin!(stopped);
    let _running = dispatcher.pause.enter();
    let mut held = dispatcher.pause.watch();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return Ok(()),
            true = until(&mut held, true) => {
                // Nothing is held between wake-ups: park until let go.
                let _parked = dispatcher.pause.parked();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return Ok(()),
                        _ = until(&mut held, false) => break,
                        Some(conn) = returned.recv() => {
                            conns.push_back(conn);
                            if hand_over(&mut conns, &socket, &dispatcher, stopped.as_mut()).await
                                == Handed::Stopped
                            {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Some(conn) = returned.recv() => {
                conns.push_back(conn);
                match hand_over(&mut conns, &socket, &dispatcher, stopped.as_mut()).await {
                    Handed::Stopped => return Ok(()),
                    handed => waited = handed == Handed::AfterWaiting,
                }
            }
            guard = fd.readable() => {
                let mut guard = guard?;
                let mut queue_left = true;
                let mut pause = false;
                let accepted = Instant::now();
                let limit = if waited || !dispatcher.any_ready() { 1 } else { batch };
                while conns.len() < limit {
                    match accept4(listener.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                        Ok(raw) => {
                            // SAFETY: accept4 just returned this fd; nothing else owns it.
                            conns.push_back(unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                        Err(Errno::EAGAIN) => {
                            guard.clear_ready();
                            queue_left = false;
                            break;
                        }
                        // The client gave up while queued, or a signal: next one.
                        Err(Errno::ECONNABORTED | Errno::EPROTO | Errno::EINTR) => {}
                        Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                            dispatcher.stats.accept_error();
                            tracing::warn!(
                                event = "accept-backoff",
                                socket = %listener.local,
                                "cannot accept on {}: {}; pausing {} ms",
                                listener.local, e.desc(), RESOURCE_BACKOFF.as_millis()
                            );
                            pause = true;
                            break;
                        }
                        Err(e) => {
                            dispatcher.stats.accept_error();
                            tracing::error!(socket = %listener.local, "accept on {} failed: {}", listener.local, e.desc());
                            pause = true;
                            break;
                        }
                    }
                }
                let count = conns.len() as u64;
                if count > 0 {
                    match hand_over(&mut conns, &socket, &dispatcher, stopped.as_mut()).await {
                        Handed::Stopped => return Ok(()),
                        handed => waited = handed == Handed::AfterWaiting,
                    }
                    dispatcher.stats.dispatched(count, accepted.elapsed());
                }
                if pause {
                    sleep(RESOURCE_BACKOFF).await;
                } else if queue_left {
                    // A full batch: let the pool's events in before the next one.
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// Waits until the pause switch is `on` (false if it is gone).
async fn until(held: &mut watch::Receiver<bool>, on: bool) -> bool {
    held.wait_for(|held| *held == on).await.is_ok()
}

/// How [`hand_over`] went.
#[derive(Debug, PartialEq, Eq)]
enum Handed {
    /// Every connection went to a worker at once.
    AtOnce,
    /// Every connection went to a worker, some after waiting for one.
    AfterWaiting,
    /// The manager is stopping: the connections were closed.
    Stopped,
}

/// Delivers accepted connections, waiting (without accepting more) until
/// workers can take them all. If the manager is stopping meanwhile, the
/// connections are closed, which their clients see as a reset.
async fn hand_over(
    conns: &mut VecDeque<OwnedFd>,
    socket: &Socket,
    dispatcher: &Dispatcher,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
) -> Handed {
    // Set at the first stall: the clock is read only when connections wait.
    let mut waiting_since: Option<Instant> = None;
    loop {
        let spill = waiting_since.is_some_and(|since| since.elapsed() >= STICKY_PATIENCE);
        let stall = match dispatcher.dispatch_all(conns, socket, spill) {
            Ok(()) if waiting_since.is_some() => return Handed::AfterWaiting,
            Ok(()) => return Handed::AtOnce,
            Err(stall) => stall,
        };
        waiting_since.get_or_insert_with(Instant::now);
        let wait = async {
            match stall {
                Stall::NoneReady => dispatcher.joined().await,
                Stall::AllBusy => tokio::select! {
                    _ = dispatcher.joined() => {}
                    _ = sleep(BUSY_RETRY) => {}
                },
            }
        };
        tokio::select! {
            _ = &mut stopped => {
                conns.clear();
                return Handed::Stopped;
            }
            _ = wait => {}
        }
    }
}
