//! One Node.js worker's IPC channel at run time: the primary's half of the protocol.
//!
//! A [`Link`] is driven from two sides. Dispatch calls [`Link::offer`] with a
//! connection; the pool's reader task calls [`Link::recv`], which reads the
//! channel, answers what Node needs answered there and then (`queryServer`,
//! handle ACKs, `exitedAfterDisconnect`), and returns only what the pool
//! cares about: ready, stopping, garbage, closed.
//!
//! A connection is handed over with its fd on the first byte of a `NODE_HANDLE`
//! message and stays ours until the app answers: `accepted: true` (cluster) or
//! `NODE_HANDLE_ACK` (IPC) and our copy is closed; `accepted: false` or a NACK
//! and it goes back to its socket's accept loop to be dispatched again; the
//! worker dies first and it goes back too. Until then the worker is busy, so
//! it never has more than one connection, and one fd, in flight.
//!
//! Everything kept per worker is bounded: one message being reassembled
//! ([`wire::MAX_MESSAGE`]), a few received fds, and [`MAX_OUTPUT`] of replies
//! the worker has not read yet. A worker past a bound is broken and replaced.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    recvmsg, send, sendmsg, shutdown, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown,
    UnixAddr,
};
use serde_json::{Map, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, Notify};
use tokio::task::spawn_local;
use tokio::time::{sleep, sleep_until};

use super::app::{App, Mode};
use super::listen::{self, Answer};
use super::wire::{self, Lines};
use crate::conn::notice::{Garbage, Notice};
use crate::conn::peer::{Peer, Refused};
use crate::conn::socket::Socket;
use crate::sockets::listener::Local;

/// Replies queued for a worker that does not read them; past this it is broken.
pub(super) const MAX_OUTPUT: usize = 1 << 20;

/// Bytes read from the channel at a time (what libuv reads with, too).
const READ_SIZE: usize = 64 * 1024;

/// Received fds kept waiting for their `NODE_HANDLE` message; Node sends one
/// per message, so more than this is a broken peer and the extra are closed.
const MAX_PENDING_FDS: usize = 8;

/// How long after the app took its last connection a stop waits before it
/// closes the app's servers: long enough for the app to read that
/// connection's request, since Node's `server.close()` drops connections on
/// which no request has arrived yet.
const SETTLE: Duration = Duration::from_millis(100);

/// How often a stop checks whether the last hand-off has been answered.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// How long a worker that closed its channel after a stop request has to exit
/// by itself before it gets SIGTERM (something other than its servers, a
/// timer say, keeps it alive).
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// The manager's end of one Node.js worker's IPC channel.
pub(crate) struct Link {
    /// The channel: our end of the worker's stream socketpair.
    fd: AsyncFd<OwnedFd>,
    /// How this app's workers are driven, and what they share.
    app: Rc<App>,
    /// The worker's slot, for logs.
    id: u32,
    /// The worker's pid, for logs.
    pid: u32,
    /// Its process's signals, for the SIGTERM that follows a stop request.
    signals: mpsc::UnboundedSender<Signal>,
    /// The manager's listening sockets, by index: what `listen()` is matched
    /// against, and where connections go back to.
    sockets: Vec<Rc<Socket>>,
    /// Notified when this worker can take a connection again or serves one
    /// more socket, so a stalled accept loop tries again.
    capacity: Rc<Notify>,
    /// Wakes [`Link::recv`] when there is output to flush or the link failed.
    kick: Notify,
    /// Woken when the channel closes, for a stop under way.
    closed: Notify,
    /// Where reads land; kept to avoid an allocation per read.
    buffer: RefCell<Vec<u8>>,
    state: RefCell<State>,
}

/// A connection handed to the worker and not answered for yet.
struct Handoff {
    /// Our copy, kept until the app has its own.
    conn: OwnedFd,
    /// The socket it came from, where it goes back to if refused.
    socket: usize,
    /// The `seq` of its `newconn`, which the answer acks (cluster mode).
    seq: u64,
}

/// One server of the app: a `listen()` the manager answered.
struct Server {
    /// Our key for it; the worker echoes it in `close`.
    key: String,
    /// The key as JSON, ready to put in `newconn`.
    key_json: String,
    /// The manager's sockets whose connections it gets.
    sockets: Vec<usize>,
}

#[derive(Default)]
struct State {
    /// Reassembles messages from the byte stream.
    lines: Lines,
    /// Fds received, each waiting for the `NODE_HANDLE` message it belongs to.
    fds: VecDeque<OwnedFd>,
    /// Bytes the socket did not take yet; sent before anything else.
    output: Vec<u8>,
    /// The connection in flight, if any: the worker is busy until it answers.
    handoff: Option<Handoff>,
    /// When the app last took a connection; a stop lets it settle first.
    last_taken: Option<Instant>,
    /// The app's servers (cluster mode).
    servers: Vec<Server>,
    /// Our next cluster `seq`.
    seq: u64,
    /// What the pool has yet to hear, oldest first.
    notices: VecDeque<Notice>,
    /// Readiness has been reported (once is enough).
    ready: bool,
    /// The worker said it is leaving on its own (`exitedAfterDisconnect`):
    /// asking it to disconnect again would make Node throw.
    leaving: bool,
    /// We asked it to stop; only once.
    stop_requested: bool,
    /// Why the worker is broken, to report once.
    failure: Option<String>,
    /// No more connections for it: broken or closed.
    dead: bool,
    /// Its end of the channel closed.
    closed: bool,
}

impl State {
    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("mode", &self.app.mode)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn new(
        app: Rc<App>,
        fd: OwnedFd,
        peer: Peer,
        sockets: Vec<Rc<Socket>>,
        capacity: Rc<Notify>,
    ) -> io::Result<Link> {
        let mut state = State::default();
        if app.mode == Mode::Ipc && !app.wait_ready {
            // A plain IPC child has no `listening` to wait for; what it is sent
            // before it listens for messages waits in its channel.
            state.ready = true;
            state.notices.push_back(Notice {
                ready: true,
                ..Notice::default()
            });
        }
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(io::Error::from)?;
        Ok(Link {
            fd,
            app,
            id: peer.id,
            pid: peer.pid,
            signals: peer.signals,
            sockets,
            capacity,
            kick: Notify::new(),
            closed: Notify::new(),
            buffer: RefCell::new(vec![0; READ_SIZE]),
            state: RefCell::new(state),
        })
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Offers a connection accepted on `socket`. Never waits: a worker that
    /// does not listen on that socket, or still has a connection in flight,
    /// gives it back at once.
    pub(crate) fn offer(&self, conn: OwnedFd, socket: &Socket) -> Result<(), (OwnedFd, Refused)> {
        let mut st = self.state.borrow_mut();
        if st.dead {
            return Err((conn, Refused::Gone));
        }
        let message = match self.app.mode {
            Mode::Cluster => {
                let Some(server) = st
                    .servers
                    .iter()
                    .find(|s| s.sockets.contains(&socket.index))
                else {
                    return Err((conn, Refused::NotListening));
                };
                wire::newconn(&server.key_json, st.seq)
            }
            Mode::Ipc => wire::socket_handle().to_vec(),
        };
        if st.handoff.is_some() || !st.output.is_empty() {
            return Err((conn, Refused::Busy));
        }
        let fds = [conn.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<UnixAddr>(self.raw_fd(), &[IoSlice::new(&message)], &cmsg, flags, None) {
            Ok(sent) => {
                // The fd went with the first bytes; the rest follows without it.
                if sent < message.len() {
                    st.output.extend_from_slice(&message[sent..]);
                    self.kick.notify_one();
                }
                let seq = st.next_seq();
                st.handoff = Some(Handoff {
                    conn,
                    socket: socket.index,
                    seq,
                });
                Ok(())
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Err((conn, Refused::Busy)),
            Err(_) => {
                st.dead = true;
                Err((conn, Refused::Gone))
            }
        }
    }

    /// Starts a graceful stop: once the last connection handed over has
    /// settled, `'shutdown'` (with `--shutdown-message`), then the cluster
    /// `disconnect` (the app closes its servers, finishes its connections and
    /// exits) or, for a plain IPC child, the end of its channel; SIGTERM if it
    /// is still running a while later. The pool SIGKILLs at the kill timeout.
    pub(crate) fn ask_to_stop(link: &Rc<Link>) {
        {
            let mut st = link.state.borrow_mut();
            if st.stop_requested {
                return;
            }
            st.stop_requested = true;
        }
        spawn_local(stop(Rc::clone(link)));
    }

    /// The next thing the pool needs to hear: ready, stopping, a protocol
    /// error, or `None` once the worker closed its channel.
    pub(crate) async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        loop {
            let wants_write = {
                let mut st = self.state.borrow_mut();
                if let Some(notice) = st.notices.pop_front() {
                    return Ok(Some(Ok(notice)));
                }
                if let Some(why) = st.failure.take() {
                    return Ok(Some(Err(Garbage(why))));
                }
                if st.closed {
                    return Ok(None);
                }
                !st.output.is_empty() && !st.dead
            };
            tokio::select! {
                guard = self.fd.readable() => {
                    let mut guard = guard?;
                    let mut buffer = self.buffer.borrow_mut();
                    match guard.try_io(|fd| read_chunk(fd.get_ref().as_raw_fd(), &mut buffer)) {
                        Ok(Ok((0, _))) => self.on_closed(),
                        Ok(Ok((len, fds))) => self.on_bytes(&buffer[..len], fds),
                        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => self.on_closed(),
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                guard = self.fd.writable(), if wants_write => {
                    let mut guard = guard?;
                    let mut st = self.state.borrow_mut();
                    self.flush(&mut st);
                    if !st.output.is_empty() {
                        guard.clear_ready();
                    }
                }
                _ = self.kick.notified() => {}
            }
        }
    }

    /// Queues `line` for the worker and sends what the socket takes now.
    fn send_line(&self, st: &mut State, line: &[u8]) {
        if st.dead {
            return;
        }
        if st.output.len() + line.len() > MAX_OUTPUT {
            self.fail(
                st,
                format!(
                    "it left more than {} KiB of messages unread on its channel",
                    MAX_OUTPUT / 1024
                ),
            );
            return;
        }
        st.output.extend_from_slice(line);
        self.flush(st);
        if !st.output.is_empty() {
            self.kick.notify_one();
        }
    }

    fn flush(&self, st: &mut State) {
        while !st.output.is_empty() && !st.dead {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match send(self.raw_fd(), &st.output, flags) {
                Ok(sent) => {
                    st.output.drain(..sent);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                // The worker is gone; its end of file follows.
                Err(_) => {
                    st.dead = true;
                    st.output.clear();
                }
            }
        }
        if st.output.is_empty() && st.handoff.is_none() {
            // An offer refused because of pending output can go through now.
            self.capacity.notify_waiters();
        }
    }

    /// The worker is broken: it gets no more connections, the one in flight
    /// goes back, and the pool hears why (and replaces it).
    fn fail(&self, st: &mut State, why: String) {
        st.failure.get_or_insert(why);
        st.dead = true;
        st.output.clear();
        self.reclaim(st);
        self.kick.notify_one();
    }

    /// Sends the connection in flight, if any, back to dispatch.
    fn reclaim(&self, st: &mut State) {
        if let Some(handoff) = st.handoff.take() {
            tracing::debug!(
                worker_id = self.id,
                "worker {} (pid {}) did not take its last connection; dispatching it again",
                self.id,
                self.pid
            );
            self.give_back(handoff);
        }
    }

    fn give_back(&self, handoff: Handoff) {
        if let Some(socket) = self.sockets.get(handoff.socket) {
            socket.give_back(handoff.conn);
        }
    }

    fn on_closed(&self) {
        let mut st = self.state.borrow_mut();
        st.closed = true;
        st.dead = true;
        st.output.clear();
        st.fds.clear();
        self.reclaim(&mut st);
        self.closed.notify_waiters();
    }

    fn on_bytes(&self, bytes: &[u8], fds: Vec<OwnedFd>) {
        let mut st = self.state.borrow_mut();
        for fd in fds {
            if st.fds.len() < MAX_PENDING_FDS {
                st.fds.push_back(fd);
            }
        }
        let messages = match st.lines.feed(bytes) {
            Ok(messages) => messages,
            Err(why) => return self.fail(&mut st, why),
        };
        for message in messages {
            if st.dead {
                return;
            }
            self.on_message(&mut st, message);
        }
    }

    fn on_message(&self, st: &mut State, message: Value) {
        match wire::internal_cmd(&message) {
            Some("NODE_HANDLE_ACK") => self.on_handle_answer(st, true),
            Some("NODE_HANDLE_NACK") => self.on_handle_answer(st, false),
            Some("NODE_HANDLE") => {
                // The app sent us a handle (`process.send(m, socket)`). Answer,
                // or Node holds back every later message; we have no use for it.
                let fd = st.fds.pop_front();
                self.send_line(st, &wire::handle_ack(fd.is_some()));
                let shown = wire::shown(message.get("msg").unwrap_or(&Value::Null));
                tracing::debug!(
                    worker_id = self.id,
                    worker_pid = self.pid,
                    "message with a handle from worker {} (pid {}), handle closed: {shown}",
                    self.id,
                    self.pid,
                );
            }
            Some("NODE_CLUSTER") if self.app.mode == Mode::Cluster => self.on_cluster(st, &message),
            Some(_) => tracing::debug!(
                worker_id = self.id,
                "ignoring internal message from worker {}: {}",
                self.id,
                wire::shown(&message)
            ),
            None => self.on_app_message(st, &message),
        }
    }

    /// The worker answered a handle: for a plain IPC child that is the
    /// answer to the hand-off; in a cluster only a NACK is (the `newconn` was
    /// dropped, no `accepted` follows).
    fn on_handle_answer(&self, st: &mut State, received: bool) {
        match (self.app.mode, received) {
            (Mode::Ipc, true) => self.handoff_done(st, true),
            (_, false) => self.handoff_done(st, false),
            (Mode::Cluster, true) => {}
        }
    }

    /// Settles the connection in flight: the app took it (close our copy) or not
    /// (dispatch it again).
    fn handoff_done(&self, st: &mut State, taken: bool) {
        let Some(handoff) = st.handoff.take() else {
            return;
        };
        if taken {
            st.last_taken = Some(Instant::now());
            drop(handoff);
        } else {
            tracing::debug!(
                worker_id = self.id,
                "worker {} (pid {}) refused a connection; dispatching it again",
                self.id,
                self.pid
            );
            self.give_back(handoff);
        }
        if st.output.is_empty() {
            self.capacity.notify_waiters();
        }
    }

    fn on_cluster(&self, st: &mut State, message: &Value) {
        if let Some(ack) = message.get("ack").and_then(Value::as_u64) {
            if st.handoff.as_ref().is_some_and(|h| h.seq == ack) {
                let taken = message.get("accepted").and_then(Value::as_bool) == Some(true);
                self.handoff_done(st, taken);
            }
            return;
        }
        match message.get("act").and_then(Value::as_str) {
            Some("online") => tracing::debug!(
                worker_id = self.id,
                "worker {} (pid {}) is online",
                self.id,
                self.pid
            ),
            Some("queryServer") => self.on_query_server(st, message),
            Some("listening") => {
                tracing::debug!(
                    worker_id = self.id,
                    "worker {} (pid {}) is listening on {}",
                    self.id,
                    self.pid,
                    listen::describe(message)
                );
                if !self.app.wait_ready {
                    self.report_ready(st);
                }
            }
            Some("close") => {
                if let Some(key) = message.get("key").and_then(Value::as_str) {
                    st.servers.retain(|s| s.key != key);
                }
            }
            Some("exitedAfterDisconnect" | "suicide") => {
                // Without this ack the worker never disconnects.
                let mut reply = Map::new();
                reply.insert(
                    "ack".into(),
                    message.get("seq").cloned().unwrap_or(Value::Null),
                );
                let seq = st.next_seq();
                self.send_line(st, &wire::cluster(reply, seq));
                if !st.leaving && !st.stop_requested {
                    st.notices.push_back(Notice {
                        stopping: true,
                        ..Notice::default()
                    });
                }
                st.leaving = true;
            }
            _ => tracing::debug!(
                worker_id = self.id,
                "ignoring cluster message from worker {}: {}",
                self.id,
                wire::shown(message)
            ),
        }
    }

    fn on_query_server(&self, st: &mut State, query: &Value) {
        let locals: Vec<Local> = self.sockets.iter().map(|s| s.local.clone()).collect();
        let key = listen::key(query);
        let offered = query.get("data").unwrap_or(&Value::Null);
        let mut reply = Map::new();
        match listen::resolve(query, &locals) {
            Answer::Serve { sockets, sockname } => {
                tracing::debug!(
                    worker_id = self.id,
                    "worker {} (pid {}) listens on {}: serving {}",
                    self.id,
                    self.pid,
                    listen::describe(query),
                    sockets
                        .iter()
                        .map(|i| locals[*i].to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                reply.insert("errno".into(), Value::Null);
                reply.insert("key".into(), key.clone().into());
                reply.insert("ack".into(), seq_of(query));
                // An https server crashes on `data: null`; all share the first's.
                reply.insert("data".into(), self.app.server_data(&key, offered));
                if let Some(sockname) = sockname {
                    reply.insert("sockname".into(), sockname);
                }
                let key_json = Value::String(key.clone()).to_string();
                st.servers.retain(|s| s.key != key);
                st.servers.push(Server {
                    key,
                    key_json,
                    sockets,
                });
                self.capacity.notify_waiters();
            }
            Answer::Refuse { errno, why } => {
                tracing::error!(
                    event = "node-listen-refused",
                    worker_id = self.id,
                    worker_pid = self.pid,
                    "worker {} (pid {}): {why}; its listen() fails with {}",
                    self.id,
                    self.pid,
                    listen::errno_name(errno)
                );
                reply.insert("errno".into(), errno.into());
                reply.insert("key".into(), key.into());
                reply.insert("ack".into(), seq_of(query));
                reply.insert("data".into(), offered.clone());
            }
        }
        let seq = st.next_seq();
        self.send_line(st, &wire::cluster(reply, seq));
    }

    fn on_app_message(&self, st: &mut State, message: &Value) {
        tracing::debug!(
            worker_id = self.id,
            worker_pid = self.pid,
            "message from worker {} (pid {}): {}",
            self.id,
            self.pid,
            wire::shown(message)
        );
        if self.app.wait_ready && message.as_str() == Some("ready") {
            self.report_ready(st);
        }
    }

    fn report_ready(&self, st: &mut State) {
        if !st.ready {
            st.ready = true;
            st.notices.push_back(Notice {
                ready: true,
                ..Notice::default()
            });
        }
    }

    /// The stop messages themselves (see [`Link::ask_to_stop`]).
    fn send_stop(&self) {
        let mut st = self.state.borrow_mut();
        if self.app.shutdown_message {
            self.send_line(&mut st, wire::shutdown());
        }
        match self.app.mode {
            Mode::Cluster if !st.leaving => {
                let mut message = Map::new();
                message.insert("act".into(), "disconnect".into());
                let seq = st.next_seq();
                self.send_line(&mut st, &wire::cluster(message, seq));
            }
            Mode::Cluster => {}
            Mode::Ipc => {
                // End of file tells the child no more connections will come:
                // it leaves once those it has are done. Not before our last
                // bytes are out, though.
                if st.output.is_empty() && !st.dead {
                    let _ = shutdown(self.raw_fd(), Shutdown::Write);
                }
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The worker is gone from the pool; a connection it held still has a
        // client waiting.
        let handoff = self.state.get_mut().handoff.take();
        if let Some(handoff) = handoff {
            self.give_back(handoff);
        }
    }
}

/// The `seq` of a worker's request, which our answer acks.
fn seq_of(message: &Value) -> Value {
    message.get("seq").cloned().unwrap_or(Value::Null)
}

/// The stop sequence of one worker, from the request to SIGTERM.
async fn stop(link: Rc<Link>) {
    let asked = Instant::now();
    let term_at = asked + link.app.term_after;
    loop {
        let wait_until = {
            let st = link.state.borrow();
            let now = Instant::now();
            if st.dead {
                None
            } else if st.handoff.is_some() || !st.output.is_empty() {
                Some(now + SETTLE_POLL)
            } else {
                st.last_taken.map(|t| t + SETTLE).filter(|t| *t > now)
            }
        };
        match wait_until {
            Some(at) if at < term_at => sleep_until(at.into()).await,
            _ => break,
        }
    }
    link.send_stop();
    let exited_late = async {
        let closed = link.state.borrow().closed;
        if !closed {
            link.closed.notified().await;
        }
        sleep(EXIT_GRACE).await;
    };
    tokio::select! {
        _ = exited_late => {}
        _ = sleep_until(term_at.into()) => {}
    }
    // Reaches nothing if the worker has already been reaped.
    let _ = link.signals.send(Signal::SIGTERM);
}

/// One `recvmsg`: the bytes, and the fds that came with them.
fn read_chunk(fd: RawFd, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buffer)];
    let mut space = cmsg_space!([RawFd; MAX_PENDING_FDS]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg =
        recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), flags).map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for raw in received {
                // SAFETY: the kernel just installed this fd for us; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
