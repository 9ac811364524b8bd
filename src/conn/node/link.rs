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
//! What the worker says and how it is answered is in [`super::messages`]; how
//! it is asked to stop, in [`super::stop`].
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
use std::time::Instant;

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, send, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::app::{App, Mode};
use super::wire::{self, Lines};
use crate::conn::notice::{Garbage, Notice};
use crate::conn::peer::{Peer, Refused};
use crate::conn::socket::Socket;

/// Replies queued for a worker that does not read them; past this it is broken.
pub(super) const MAX_OUTPUT: usize = 1 << 20;

/// Bytes read from the channel at a time (what libuv reads with, too).
const READ_SIZE: usize = 64 * 1024;

/// Received fds kept waiting for their `NODE_HANDLE` message; Node sends one
/// per message, so more than this is a broken peer and the extra are closed.
const MAX_PENDING_FDS: usize = 8;

/// The manager's end of one Node.js worker's IPC channel.
pub(crate) struct Link {
    /// The channel: our end of the worker's stream socketpair.
    pub(super) fd: AsyncFd<OwnedFd>,
    /// How this app's workers are driven, and what they share.
    pub(super) app: Rc<App>,
    /// The worker's slot, for logs.
    pub(super) id: u32,
    /// The worker's pid, for logs.
    pub(super) pid: u32,
    /// The manager's listening sockets, by index: what `listen()` is matched
    /// against, and where connections go back to.
    pub(super) sockets: Vec<Rc<Socket>>,
    /// Notified when this worker can take a connection again or serves one
    /// more socket, so a stalled accept loop tries again.
    pub(super) capacity: Rc<Notify>,
    /// Wakes [`Link::recv`] when there is output to flush or the link failed.
    pub(super) kick: Notify,
    /// Where reads land; kept to avoid an allocation per read.
    pub(super) buffer: RefCell<Vec<u8>>,
    pub(super) state: RefCell<State>,
}

/// A connection handed to the worker and not answered for yet.
pub(super) struct Handoff {
    /// Our copy, kept until the app has its own.
    pub(super) conn: OwnedFd,
    /// The socket it came from, where it goes back to if refused.
    pub(super) socket: usize,
    /// The `seq` of its `newconn`, which the answer acks (cluster mode).
    pub(super) seq: u64,
}

/// One server of the app: a `listen()` the manager answered.
pub(super) struct Server {
    /// Our key for it; the worker echoes it in `close`.
    pub(super) key: String,
    /// The key as JSON, ready to put in `newconn`.
    pub(super) key_json: String,
    /// The manager's sockets whose connections it gets.
    pub(super) sockets: Vec<usize>,
}

/// A reply that carries a listening socket (`--policy none`), waiting for
/// the bytes before it to go: the fd must travel with its first byte.
pub(super) struct QueuedHandle {
    /// The reply.
    pub(super) line: Vec<u8>,
    /// The shared socket it carries, by index.
    pub(super) socket: usize,
    /// What was queued after it, to go once it went.
    pub(super) after: Vec<u8>,
}

/// Replies with a socket queued for a worker that does not read them; past
/// this it is broken.
const MAX_QUEUED_HANDLES: usize = 8;

#[derive(Default)]
pub(super) struct State {
    /// Reassembles messages from the byte stream.
    pub(super) lines: Lines,
    /// Fds received, each waiting for the `NODE_HANDLE` message it belongs to.
    pub(super) fds: VecDeque<OwnedFd>,
    /// Bytes the socket did not take yet; sent before anything else.
    pub(super) output: Vec<u8>,
    /// Replies carrying a socket, each after what was queued before it.
    pub(super) handles: VecDeque<QueuedHandle>,
    /// The connection in flight, if any: the worker is busy until it answers.
    pub(super) handoff: Option<Handoff>,
    /// When the app last took a connection; a stop lets it settle first.
    pub(super) last_taken: Option<Instant>,
    /// The app's servers (cluster mode).
    pub(super) servers: Vec<Server>,
    /// Our next cluster `seq`.
    pub(super) seq: u64,
    /// What the pool has yet to hear, oldest first.
    pub(super) notices: VecDeque<Notice>,
    /// Readiness has been reported (once is enough).
    pub(super) ready: bool,
    /// The worker said it is leaving on its own (`exitedAfterDisconnect`):
    /// asking it to disconnect again would make Node throw.
    pub(super) leaving: bool,
    /// We asked it to stop; only once.
    pub(super) stop_requested: bool,
    /// We sent the cluster `disconnect`; only once.
    pub(super) disconnected: bool,
    /// The worker's shim said hello: it can be asked to stop with a signal.
    pub(super) shim: bool,
    /// Connections its servers still held when its shim last counted them
    /// (only while it stops).
    pub(super) open_reported: Option<u64>,
    /// The `exclusive: true` hint was logged.
    pub(super) exclusive_said: bool,
    /// Why the worker is broken, to report once.
    pub(super) failure: Option<String>,
    /// No more connections for it: broken or closed.
    pub(super) dead: bool,
    /// Its end of the channel closed.
    pub(super) closed: bool,
}

impl State {
    /// Whether anything waits to be sent to the worker.
    pub(super) fn has_output(&self) -> bool {
        !self.output.is_empty() || !self.handles.is_empty()
    }

    pub(super) fn next_seq(&mut self) -> u64 {
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
        Link::with_state(app, fd, peer, sockets, capacity, state)
    }

    /// A link over `fd` that starts from `state`: a new worker's, or one an
    /// earlier image of the manager carried ([`super::carry`]).
    pub(super) fn with_state(
        app: Rc<App>,
        fd: OwnedFd,
        peer: Peer,
        sockets: Vec<Rc<Socket>>,
        capacity: Rc<Notify>,
        state: State,
    ) -> io::Result<Link> {
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(io::Error::from)?;
        Ok(Link {
            fd,
            app,
            id: peer.id,
            pid: peer.pid,
            sockets,
            capacity,
            kick: Notify::new(),
            buffer: RefCell::new(vec![0; READ_SIZE]),
            state: RefCell::new(state),
        })
    }

    /// What "ready" means for this worker ([`App::ready_hint`]).
    pub(crate) fn ready_hint(&self) -> &'static str {
        self.app.ready_hint()
    }

    /// Connections the stopping worker's servers held at its shim's last
    /// count, if it counted.
    pub(crate) fn open_reported(&self) -> Option<u64> {
        self.state.borrow().open_reported
    }

    pub(super) fn raw_fd(&self) -> RawFd {
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
        if st.handoff.is_some() || st.has_output() {
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
            // As on the native channel: a full queue or a short-of-memory
            // kernel is a busy worker, not a gone one.
            Err(
                Errno::EAGAIN | Errno::EINTR | Errno::ETOOMANYREFS | Errno::ENOBUFS | Errno::ENOMEM,
            ) => Err((conn, Refused::Busy)),
            Err(_) => {
                st.dead = true;
                Err((conn, Refused::Gone))
            }
        }
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
                st.has_output() && !st.dead
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
                    if st.has_output() {
                        guard.clear_ready();
                    }
                }
                _ = self.kick.notified() => {}
            }
        }
    }

    /// Queues `line` for the worker and sends what the socket takes now.
    pub(super) fn send_line(&self, st: &mut State, line: &[u8]) {
        if st.dead || !self.room_for(st, line.len()) {
            return;
        }
        match st.handles.back_mut() {
            Some(handle) => handle.after.extend_from_slice(line),
            None => st.output.extend_from_slice(line),
        }
        self.flush(st);
        if st.has_output() {
            self.kick.notify_one();
        }
    }

    /// Queues `line` with the shared listening socket `socket` attached
    /// (`--policy none`), and sends what the socket takes now.
    pub(super) fn send_handle(&self, st: &mut State, line: Vec<u8>, socket: usize) {
        if st.dead || !self.room_for(st, line.len()) {
            return;
        }
        if st.handles.len() >= MAX_QUEUED_HANDLES {
            self.fail(
                st,
                format!("it left {MAX_QUEUED_HANDLES} listening sockets unread on its channel"),
            );
            return;
        }
        st.handles.push_back(QueuedHandle {
            line,
            socket,
            after: Vec::new(),
        });
        self.flush(st);
        if st.has_output() {
            self.kick.notify_one();
        }
    }

    /// Whether `len` more bytes fit in what the worker has not read yet; if
    /// not, the worker is broken.
    fn room_for(&self, st: &mut State, len: usize) -> bool {
        let queued: usize = st.output.len()
            + st.handles
                .iter()
                .map(|h| h.line.len() + h.after.len())
                .sum::<usize>();
        if queued + len <= MAX_OUTPUT {
            return true;
        }
        self.fail(
            st,
            format!(
                "it left more than {} KiB of messages unread on its channel",
                MAX_OUTPUT / 1024
            ),
        );
        false
    }

    pub(super) fn flush(&self, st: &mut State) {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        while st.has_output() && !st.dead {
            let result = if st.output.is_empty() {
                self.send_next_handle(st)
            } else {
                send(self.raw_fd(), &st.output, flags).map(|sent| {
                    st.output.drain(..sent);
                })
            };
            match result {
                Ok(()) | Err(Errno::EINTR) => {}
                // Full, or the kernel short of memory for a moment: the rest
                // goes when the socket is writable again.
                Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM | Errno::ETOOMANYREFS) => return,
                // The worker is gone; its end of file follows.
                Err(_) => {
                    st.dead = true;
                    st.output.clear();
                    st.handles.clear();
                }
            }
        }
        if !st.has_output() && st.handoff.is_none() {
            // An offer refused because of pending output can go through now.
            self.capacity.notify_waiters();
        }
    }

    /// Sends the first queued reply with its socket; what of it the channel
    /// did not take, and what was queued after it, become plain output.
    fn send_next_handle(&self, st: &mut State) -> Result<(), Errno> {
        let Some(handle) = st.handles.front() else {
            return Ok(());
        };
        let shared = self
            .app
            .shared()
            .and_then(|s| s.listeners().get(handle.socket));
        let Some(listener) = shared else {
            // Cannot happen: only a shared app queues handles, by index.
            st.handles.pop_front();
            return Ok(());
        };
        let fds = [listener.fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let sent = sendmsg::<UnixAddr>(
            self.raw_fd(),
            &[IoSlice::new(&handle.line)],
            &cmsg,
            flags,
            None,
        )?;
        if let Some(handle) = st.handles.pop_front() {
            st.output.extend_from_slice(&handle.line[sent..]);
            st.output.extend_from_slice(&handle.after);
        }
        Ok(())
    }

    /// The worker is broken: it gets no more connections, the one in flight
    /// goes back, and the pool hears why (and replaces it).
    pub(super) fn fail(&self, st: &mut State, why: String) {
        st.failure.get_or_insert(why);
        st.dead = true;
        st.output.clear();
        st.handles.clear();
        self.reclaim(st);
        self.kick.notify_one();
    }

    /// Sends the connection in flight, if any, back to dispatch.
    pub(super) fn reclaim(&self, st: &mut State) {
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

    pub(super) fn give_back(&self, handoff: Handoff) {
        if let Some(socket) = self.sockets.get(handoff.socket) {
            socket.give_back(handoff.conn);
        }
    }

    fn on_closed(&self) {
        let mut st = self.state.borrow_mut();
        st.closed = true;
        st.dead = true;
        st.output.clear();
        st.handles.clear();
        st.fds.clear();
        self.reclaim(&mut st);
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
