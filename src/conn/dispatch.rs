//! Dispatch: choosing the worker that gets the next connection, and handing it over.
//!
//! The [`Dispatcher`] holds the *ready* workers only, in id order, and a
//! round-robin cursor over them. A worker enters when it reports `READY=1` and
//! leaves the moment it is chosen to go (drain, reload, scale-down), when its
//! channel breaks, or when it exits, so a connection is never offered to a
//! worker that is starting or draining.
//!
//! Handing over never waits: a worker whose channel would block is skipped for
//! this connection (it is slow, not gone), and a worker whose channel is broken
//! is dropped from the ring and the connection goes to the next one. Only when
//! no worker can take it does the connection come back to the accept loop,
//! which holds it and stops accepting until one can (see [`super::accept`]).
//!
//! Connections come in batches: whatever one wake-up of an accept loop found.
//! Each is given its worker in turn, as if it came alone; those going to a
//! native worker are then sent together, in one message when the worker
//! speaks protocol version 2, and the manager's copies closed together
//! ([`super::close`]). A worker found busy or broken when its batch is sent
//! gets none of it, and the batch goes to the others.
//!
//! How a connection reaches a worker is its route's [`Transport`]: the native
//! channel hands it over in one datagram; a Node.js worker
//! ([`super::node`]) takes one at a time, only from the sockets its app
//! listens on, and may hand it back later (refused, or died holding it). A
//! connection handed back goes to its [`Socket`]'s accept loop, which
//! dispatches it again like a new one.
//!
//! *Which* ready worker is offered a connection first is the [`Policy`]'s
//! choice ([`super::policy`]); the rest — skipping busy workers, dropping
//! broken ones, stalling when nobody can take it — is the same for all.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use nix::sys::socket::{getpeername, SockaddrStorage};

use tokio::sync::{mpsc, Notify};

use super::close::close_all;
use super::pause::Pause;
use super::peer::Refused;
use super::policy::{self, Candidate, Policy};
use super::socket::Socket;
use super::stats::Stats;
use super::transport::Transport;
use crate::sockets::listener::Local;

/// A ready worker as dispatch sees it.
#[derive(Debug)]
pub(crate) struct Route {
    /// Which process this is (unique for the manager's lifetime), so reports
    /// about a broken channel reach the right worker even after a restart.
    pub serial: u64,
    /// The stable worker id, for ordering and logs.
    pub id: u32,
    /// Where its connections go, and how.
    pub transport: Transport,
    /// Connections handed to this process, for status and D-Bus.
    pub dispatched: Cell<u64>,
    /// Of those, how many the worker reported closed (`CLOSED=<n>`): the
    /// difference is what least-conn and the metrics call open.
    pub closed: Cell<u64>,
}

impl Route {
    /// Process `serial`, the worker in slot `id`, reached through `transport`;
    /// nothing handed to it yet.
    pub(crate) fn new(serial: u64, id: u32, transport: Transport) -> Route {
        Route {
            serial,
            id,
            transport,
            dispatched: Cell::new(0),
            closed: Cell::new(0),
        }
    }

    /// Connections it holds now, as far as the manager knows: handed over and
    /// not reported closed. A worker that never reports (a Node.js app, or a
    /// native worker written before `CLOSED=`) holds every one it was given.
    pub(crate) fn open(&self) -> u64 {
        self.dispatched.get().saturating_sub(self.closed.get())
    }

    /// The worker reported `n` more connections closed. A worker cannot close
    /// more than it was given: extra reports are dropped rather than kept as
    /// credit that would hide its next connections from least-conn.
    pub(crate) fn report_closed(&self, n: u64) {
        let closed = self.closed.get().saturating_add(n);
        self.closed.set(closed.min(self.dispatched.get()));
    }
}

/// Why a connection came back undelivered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stall {
    /// No ready worker serves this socket.
    NoneReady,
    /// Every ready worker that serves this socket is busy (its channel is
    /// full, or it has not answered for its last connection yet).
    AllBusy,
}

/// The ring of ready workers.
pub(crate) struct Dispatcher {
    /// Ready workers sorted by (id, serial): round-robin goes 0, 1, 2, …
    ring: RefCell<Vec<Rc<Route>>>,
    /// Index into `ring` of the worker that gets the next connection, for
    /// round-robin and for breaking least-conn's ties.
    next: Cell<usize>,
    /// Who is offered a connection first; changed by a reload.
    policy: Cell<Policy>,
    /// Woken whenever a worker joins the ring or can take more than before, so
    /// a stalled accept loop resumes.
    joined: Rc<Notify>,
    /// Tells the pool about workers whose channel broke under dispatch, so it
    /// can treat them as dying without waiting for their exit to be reaped.
    broken: mpsc::UnboundedSender<u64>,
    /// Connections handed over since the start, for status lines.
    total: Cell<u64>,
    /// Latency and error counters of the connection path, for metrics.
    pub stats: Stats,
    /// Holds the accept loops still for a re-exec.
    pub pause: Pause,
    /// Every listening socket, by index.
    sockets: RefCell<Vec<Rc<Socket>>>,
    /// What one call of [`Dispatcher::dispatch_all`] works with, kept from
    /// one to the next so that a batch allocates nothing.
    round: RefCell<Round>,
}

impl Dispatcher {
    pub(crate) fn new(broken: mpsc::UnboundedSender<u64>) -> Dispatcher {
        Dispatcher {
            ring: RefCell::new(Vec::new()),
            next: Cell::new(0),
            policy: Cell::new(Policy::default()),
            joined: Rc::new(Notify::new()),
            broken,
            total: Cell::new(0),
            stats: Stats::default(),
            pause: Pause::default(),
            sockets: RefCell::new(Vec::new()),
            round: RefCell::new(Round::default()),
        }
    }

    /// Registers a listening socket named `name`; the receiver yields the
    /// connections workers hand back, for its accept loop.
    pub(crate) fn add_socket(
        &self,
        name: &str,
        local: Local,
    ) -> (Rc<Socket>, mpsc::UnboundedReceiver<OwnedFd>) {
        let mut sockets = self.sockets.borrow_mut();
        let (socket, returns) = Socket::new(sockets.len(), name, local);
        let socket = Rc::new(socket);
        sockets.push(Rc::clone(&socket));
        (socket, returns)
    }

    /// Every listening socket, by index.
    pub(crate) fn sockets(&self) -> Vec<Rc<Socket>> {
        self.sockets.borrow().clone()
    }

    /// What a transport notifies when its worker can take a connection again.
    pub(crate) fn capacity(&self) -> Rc<Notify> {
        Rc::clone(&self.joined)
    }

    /// A worker became ready: it starts receiving connections now.
    pub(crate) fn join(&self, route: Rc<Route>) {
        route
            .transport
            .need_closes(self.policy.get().goes_by_closes());
        let mut ring = self.ring.borrow_mut();
        let at = ring.partition_point(|r| (r.id, r.serial) < (route.id, route.serial));
        if at < self.next.get() {
            self.next.set(self.next.get() + 1);
        }
        ring.insert(at, route);
        drop(ring);
        self.joined.notify_waiters();
    }

    /// A worker stops receiving connections, from this moment on.
    pub(crate) fn leave(&self, serial: u64) {
        let mut ring = self.ring.borrow_mut();
        if let Some(at) = ring.iter().position(|r| r.serial == serial) {
            ring.remove(at);
            if at < self.next.get() {
                self.next.set(self.next.get() - 1);
            }
        }
    }

    /// Sets the policy for the connections dispatched from now on, and
    /// tells the ready workers whether it goes by their closes.
    pub(crate) fn set_policy(&self, policy: Policy) {
        self.policy.set(policy);
        for route in self.ring.borrow().iter() {
            route.transport.need_closes(policy.goes_by_closes());
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.get()
    }

    /// Counts connections an earlier image of the manager dispatched, so
    /// the total goes on across a re-exec.
    pub(crate) fn add_dispatched(&self, n: u64) {
        self.total.set(self.total.get().saturating_add(n));
    }

    /// Whether any worker is ready (in the ring), busy or not.
    pub(crate) fn any_ready(&self) -> bool {
        !self.ring.borrow().is_empty()
    }

    /// Resolves the next time a worker joins the ring.
    pub(crate) async fn joined(&self) {
        self.joined.notified().await;
    }

    /// Hands `conn`, accepted on `socket`, to the first ready worker in the
    /// policy's order that serves that socket and can take it now. On success
    /// the connection belongs to the worker; otherwise it comes back intact.
    #[cfg(test)]
    pub(crate) fn dispatch(&self, conn: OwnedFd, socket: &Socket) -> Result<(), (OwnedFd, Stall)> {
        let mut conns = VecDeque::from([conn]);
        match self.dispatch_all(&mut conns, socket, false) {
            Ok(()) => Ok(()),
            Err(stall) => match conns.pop_front() {
                Some(conn) => Err((conn, stall)),
                None => Ok(()),
            },
        }
    }

    /// Hands each of `conns`, all accepted on `socket`, to the first ready
    /// worker in the policy's order that serves that socket and can take it
    /// now; the manager's copies of those handed over are closed. If one
    /// cannot be placed, it and those after it stay in `conns`, in order,
    /// and the error says why.
    ///
    /// Under ip-hash a client's worker that is busy is waited for (the
    /// connection stays with [`Stall::AllBusy`]) rather than passed over,
    /// so the client stays put — unless `spill`: for connections that have
    /// waited long enough, so one stuck worker cannot hold up a whole socket.
    pub(crate) fn dispatch_all(
        &self,
        conns: &mut VecDeque<OwnedFd>,
        socket: &Socket,
        spill: bool,
    ) -> Result<(), Stall> {
        let mut round = self.round.borrow_mut();
        round.busy.clear();
        loop {
            let mut stall = None;
            while let Some(conn) = conns.pop_front() {
                if let Err((conn, why)) = self.place(conn, socket, spill, &mut round) {
                    conns.push_front(conn);
                    stall = Some(why);
                    break;
                }
            }
            let bounced = self.send_staged(socket, &mut round, conns);
            if conns.is_empty() {
                close_all(&mut round.sent);
                return Ok(());
            }
            // What a busy or broken worker did not take goes to the others.
            if !bounced {
                close_all(&mut round.sent);
                return Err(stall.unwrap_or(Stall::AllBusy));
            }
        }
    }

    /// Gives `conn` its worker: offered at once to a transport that takes
    /// connections one by one, staged in `round` for one that batches.
    fn place(
        &self,
        conn: OwnedFd,
        socket: &Socket,
        spill: bool,
        round: &mut Round,
    ) -> Result<(), (OwnedFd, Stall)> {
        let policy = self.policy.get();
        let client = match policy {
            Policy::IpHash => peer_ip(&conn),
            _ => None,
        };
        let order = {
            let ring = self.ring.borrow();
            if policy == Policy::RoundRobin {
                // Only the ring's length matters: no allocation per connection.
                policy::Order::cyclic(self.next.get(), ring.len())
            } else {
                let candidates: Vec<Candidate> = ring
                    .iter()
                    .map(|r| Candidate {
                        id: r.id,
                        open: r.open(),
                    })
                    .collect();
                policy::order(policy, &candidates, self.next.get(), client)
            }
        };
        // A client with an address under ip-hash waits for its own worker.
        let sticky = client.is_some() && !spill;
        let mut conn = conn;
        let mut serving = false;
        // Broken workers leave the ring after the loop, so `order`'s indices
        // stay valid while it runs.
        let mut gone = Vec::new();
        for at in order {
            let route = Rc::clone(&self.ring.borrow()[at]);
            let refused = if round.busy.contains(&route.serial) {
                Refused::Busy
            } else if route.transport.batches() {
                round.stage(&route, conn);
                route.dispatched.set(route.dispatched.get() + 1);
                self.next.set(at + 1);
                self.forget(gone);
                return Ok(());
            } else {
                match route.transport.offer(conn, socket) {
                    Ok(()) => {
                        route.dispatched.set(route.dispatched.get() + 1);
                        self.total.set(self.total.get() + 1);
                        self.next.set(at + 1);
                        self.forget(gone);
                        return Ok(());
                    }
                    Err((back, refused)) => {
                        conn = back;
                        refused
                    }
                }
            };
            match refused {
                Refused::Busy => {
                    serving = true;
                    if sticky {
                        break;
                    }
                }
                Refused::NotListening => {}
                // The worker died between two connections: try the next one.
                Refused::Gone => gone.push(route.serial),
            }
        }
        self.forget(gone);
        let stall = if serving {
            Stall::AllBusy
        } else {
            Stall::NoneReady
        };
        Err((conn, stall))
    }

    /// Sends what `round` staged, one worker at a time. A worker that is
    /// busy or broken takes none of what was left for it: that goes back to
    /// the front of `conns`, and the worker is passed over for the rest of the
    /// round. Returns whether anything went back.
    fn send_staged(
        &self,
        socket: &Socket,
        round: &mut Round,
        conns: &mut VecDeque<OwnedFd>,
    ) -> bool {
        let mut bounced = false;
        let mut gone = Vec::new();
        let mut staged = std::mem::take(&mut round.staged);
        let mut raw = std::mem::take(&mut round.raw);
        for (route, mut fds) in staged.drain(..) {
            raw.clear();
            raw.extend(fds.iter().map(AsRawFd::as_raw_fd));
            let (mut sent, mut refused) = (0, None);
            for chunk in raw.chunks(socket.batch) {
                let (took, why) = route.transport.send_conns(chunk, socket);
                sent += took;
                if why.is_some() {
                    refused = why;
                    break;
                }
            }
            self.total.set(self.total.get() + sent as u64);
            round.sent.extend(fds.drain(..sent));
            if let Some(refused) = refused {
                route
                    .dispatched
                    .set(route.dispatched.get() - fds.len() as u64);
                for conn in fds.drain(..).rev() {
                    conns.push_front(conn);
                }
                bounced = true;
                round.busy.push(route.serial);
                if refused == Refused::Gone {
                    gone.push(route.serial);
                }
            }
            round.spare.push(fds);
        }
        round.staged = staged;
        round.raw = raw;
        self.forget(gone);
        bounced
    }

    /// Drops workers whose channel broke under dispatch from the ring, and
    /// tells the pool.
    fn forget(&self, gone: Vec<u64>) {
        for serial in gone {
            self.leave(serial);
            let _ = self.broken.send(serial);
        }
    }
}

/// One call of [`Dispatcher::dispatch_all`]: the connections staged for the
/// workers that take them in batches, those handed over, and the workers
/// passed over for the rest of it. Its vectors are emptied, not dropped, so
/// their room serves the next call.
#[derive(Default)]
struct Round {
    staged: Vec<(Rc<Route>, Vec<OwnedFd>)>,
    /// Emptied vectors of `staged`, for the next workers staged for.
    spare: Vec<Vec<OwnedFd>>,
    /// The descriptor numbers of one worker's batch.
    raw: Vec<RawFd>,
    /// The manager's copies of connections handed over, to be closed.
    sent: Vec<OwnedFd>,
    /// Serials of workers found busy or broken when their batch was sent.
    busy: Vec<u64>,
}

impl Round {
    fn stage(&mut self, route: &Rc<Route>, conn: OwnedFd) {
        match self
            .staged
            .iter_mut()
            .find(|(r, _)| r.serial == route.serial)
        {
            Some((_, fds)) => fds.push(conn),
            None => {
                let mut fds = self.spare.pop().unwrap_or_default();
                fds.push(conn);
                self.staged.push((Rc::clone(route), fds));
            }
        }
    }
}

/// The address of the client at the other end of `conn`: `None` for a Unix
/// socket peer, or a client that is already gone.
fn peer_ip(conn: &OwnedFd) -> Option<IpAddr> {
    let addr: SockaddrStorage = getpeername(conn.as_raw_fd()).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsFd;

    use nix::cmsg_space;
    use nix::sys::socket::{recvmsg, sendmsg, ControlMessageOwned, MsgFlags, SockType};

    use super::*;
    use crate::conn::channel::{self, Channel};
    use crate::sockets::listener::Local;

    /// A fake worker: the other end of a real channel, and its route.
    struct Worker {
        end: OwnedFd,
        route: Rc<Route>,
    }

    impl Worker {
        /// Worker `id` on a new channel, speaking protocol `version`.
        async fn new(id: u32, version: u32) -> Worker {
            let (manager, end) = channel::pair(SockType::SeqPacket).expect("a channel");
            let channel = Rc::new(Channel::new(manager).expect("register the channel"));
            if version > 1 {
                let said = format!("READY=1\nPROTOCOL={version}");
                sendmsg::<()>(
                    end.as_raw_fd(),
                    &[IoSlice::new(said.as_bytes())],
                    &[],
                    MsgFlags::empty(),
                    None,
                )
                .expect("say READY=1");
                let notice = channel.recv().await.expect("read").expect("a message");
                assert_eq!(notice.expect("a notice").protocol, Some(version));
            }
            let route = Rc::new(Route::new(u64::from(id), id, Transport::Native(channel)));
            Worker { end, route }
        }

        /// Every message waiting for the worker: its text and how many
        /// descriptors came with it.
        fn received(&self) -> Vec<(String, usize)> {
            let mut messages = Vec::new();
            loop {
                let mut text = [0u8; 4096];
                let mut iov = [IoSliceMut::new(&mut text)];
                let mut space = cmsg_space!([RawFd; 253]);
                let Ok(msg) = recvmsg::<()>(
                    self.end.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                ) else {
                    return messages;
                };
                let mut fds = 0;
                for cmsg in msg.cmsgs().expect("control messages") {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        fds += received.len();
                        for fd in received {
                            nix::unistd::close(fd).expect("close a received fd");
                        }
                    }
                }
                let len = msg.bytes;
                messages.push((String::from_utf8_lossy(&text[..len]).into_owned(), fds));
            }
        }
    }

    /// A dispatcher with `workers` in its ring under `policy`, and a socket.
    fn dispatcher(policy: Policy, workers: &[&Worker]) -> (Dispatcher, Rc<Socket>) {
        let (broken, _) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::new(broken);
        dispatcher.set_policy(policy);
        for worker in workers {
            dispatcher.join(Rc::clone(&worker.route));
        }
        let (socket, _returns) = dispatcher.add_socket("http", Local::UnixUnnamed);
        (dispatcher, socket)
    }

    /// `n` connections (the manager's ends), and their clients.
    fn conns(n: usize) -> (VecDeque<OwnedFd>, Vec<OwnedFd>) {
        (0..n)
            .map(|_| channel::pair(SockType::Stream).expect("a connection"))
            .unzip()
    }

    fn conn(message: &str, fds: usize) -> (String, usize) {
        (message.to_owned(), fds)
    }

    #[tokio::test]
    async fn a_batch_goes_to_each_worker_of_version_2_in_one_message() {
        let (w0, w1) = (Worker::new(0, 2).await, Worker::new(1, 2).await);
        let (dispatcher, socket) = dispatcher(Policy::RoundRobin, &[&w0, &w1]);
        let (mut batch, _clients) = conns(5);
        assert_eq!(dispatcher.dispatch_all(&mut batch, &socket, false), Ok(()));
        assert!(batch.is_empty());
        // Told at joining that closes may come late under rr.
        let lazy = conn("CLOSED_REPORTS=lazy", 0);
        let three = "CONN=http\nCONN=http\nCONN=http";
        assert_eq!(w0.received(), [lazy.clone(), conn(three, 3)]);
        assert_eq!(w1.received(), [lazy, conn("CONN=http\nCONN=http", 2)]);
        assert_eq!(
            (w0.route.dispatched.get(), w1.route.dispatched.get()),
            (3, 2)
        );
        assert_eq!(dispatcher.total(), 5);
    }

    #[tokio::test]
    async fn a_worker_of_version_1_gets_a_message_per_connection() {
        let w0 = Worker::new(0, 1).await;
        let (dispatcher, socket) = dispatcher(Policy::RoundRobin, &[&w0]);
        let (mut batch, _clients) = conns(3);
        assert_eq!(dispatcher.dispatch_all(&mut batch, &socket, false), Ok(()));
        // Nothing it does not speak: no CLOSED_REPORTS, one fd a message.
        assert_eq!(w0.received(), vec![conn("CONN=http", 1); 3]);
    }

    #[tokio::test]
    async fn a_full_worker_is_passed_over_and_its_share_goes_to_the_others() {
        let (w0, w1) = (Worker::new(0, 2).await, Worker::new(1, 2).await);
        let (dispatcher, socket) = dispatcher(Policy::RoundRobin, &[&w0, &w1]);
        let Transport::Native(full) = &w0.route.transport else {
            unreachable!("a native worker")
        };
        while full.try_send(b"FILLER=1").is_ok() {}
        let (mut batch, _clients) = conns(4);
        assert_eq!(dispatcher.dispatch_all(&mut batch, &socket, false), Ok(()));
        assert_eq!(
            (w0.route.dispatched.get(), w1.route.dispatched.get()),
            (0, 4)
        );
        // Its own share, then what worker 0 could not take.
        let fds: usize = w1.received().iter().map(|(_, fds)| fds).sum();
        assert_eq!(fds, 4);
    }

    #[tokio::test]
    async fn with_no_worker_ready_the_batch_stays_whole_and_in_order() {
        let (dispatcher, socket) = dispatcher(Policy::RoundRobin, &[]);
        let (mut batch, _clients) = conns(3);
        let before: Vec<RawFd> = batch.iter().map(AsRawFd::as_raw_fd).collect();
        assert_eq!(
            dispatcher.dispatch_all(&mut batch, &socket, false),
            Err(Stall::NoneReady)
        );
        let after: Vec<RawFd> = batch.iter().map(AsRawFd::as_raw_fd).collect();
        assert_eq!(before, after);
        for conn in &batch {
            assert!(
                nix::fcntl::fcntl(conn.as_fd().as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).is_ok()
            );
        }
    }

    #[tokio::test]
    async fn least_conn_counts_a_batch_as_it_goes() {
        let (w0, w1) = (Worker::new(0, 2).await, Worker::new(1, 2).await);
        let (dispatcher, socket) = dispatcher(Policy::LeastConn, &[&w0, &w1]);
        w0.route.dispatched.set(2);
        let (mut batch, _clients) = conns(4);
        assert_eq!(dispatcher.dispatch_all(&mut batch, &socket, false), Ok(()));
        // 2:0, then 2:1, 2:2, a tie (round-robin: worker 0), then 3:2.
        assert_eq!(
            (w0.route.dispatched.get(), w1.route.dispatched.get()),
            (3, 3)
        );
        // A worker reports each close until told otherwise: nothing to say.
        assert_eq!(w1.received(), [conn("CONN=http\nCONN=http\nCONN=http", 3)]);
    }

    #[tokio::test]
    async fn workers_of_version_2_hear_whether_the_policy_goes_by_closes() {
        let (w0, w1) = (Worker::new(0, 2).await, Worker::new(1, 1).await);
        let (dispatcher, _socket) = dispatcher(Policy::RoundRobin, &[&w0, &w1]);
        assert_eq!(w0.received(), [conn("CLOSED_REPORTS=lazy", 0)]);
        dispatcher.set_policy(Policy::LeastConn);
        assert_eq!(w0.received(), [conn("CLOSED_REPORTS=each", 0)]);
        // Said once, not again for the same policy.
        dispatcher.set_policy(Policy::LeastConn);
        assert!(w0.received().is_empty());
        // A worker of version 1 reports each close anyway, and hears nothing.
        assert!(w1.received().is_empty());
    }

    #[tokio::test]
    async fn a_worker_whose_channel_was_full_hears_of_the_policy_with_its_next_connections() {
        let w0 = Worker::new(0, 2).await;
        let (dispatcher, socket) = dispatcher(Policy::RoundRobin, &[&w0]);
        let Transport::Native(full) = &w0.route.transport else {
            unreachable!("a native worker")
        };
        while full.try_send(b"FILLER=1").is_ok() {}
        dispatcher.set_policy(Policy::LeastConn);
        let mut got = w0.received();
        assert!(!got.contains(&conn("CLOSED_REPORTS=each", 0)));
        let (mut batch, _clients) = conns(1);
        assert_eq!(dispatcher.dispatch_all(&mut batch, &socket, false), Ok(()));
        got = w0.received();
        assert_eq!(got, [conn("CLOSED_REPORTS=each", 0), conn("CONN=http", 1)]);
    }
}
