//! The native channel: the manager's end of one worker's `SOCK_SEQPACKET` socket.
//!
//! Each worker gets one end of an `AF_UNIX`/`SOCK_SEQPACKET` socketpair as fd 3
//! (`SOCKHERD_CHANNEL_FD`). Seqpacket keeps message boundaries and is reliable
//! and ordered, so a message is one datagram and needs no framing; a worker in
//! any language speaks it with the socket calls it already has
//! (`docs/protocol.md` is the spec).
//!
//! Manager → worker: `CONN=<socket name>` with the connection's fd attached
//! (`SCM_RIGHTS`), and `SHUTDOWN=1`. Worker → manager: the `KEY=VALUE` lines of
//! [`super::notice`]. A send never waits: a full channel means a busy worker,
//! and dispatch tries the next one.
//!
//! A conversation starts in protocol version 1. A worker that says
//! `PROTOCOL=2` (with its `READY=1`) speaks version 2 from then on: one
//! message carries every connection handed to it at once, a `CONN=` line
//! each, and it is told whether its closes are needed at once or may be
//! gathered (`CLOSED_REPORTS=each` or `lazy`, [`Channel::set_reports`]).

use std::cell::{Cell, RefCell};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::carried::Carried;
use super::notice::{parse_notice, Garbage, Notice};
use super::protocol::{FIRST_VERSION, MAX_MESSAGE, PROTOCOL_VERSION};

/// Creates a worker channel of socket type `kind` (seqpacket for the native
/// protocol, stream for Node's): the manager's end (non-blocking) and the
/// worker's end. Both are close-on-exec; the spawner moves the worker's end to
/// its place in the child.
pub(crate) fn pair(kind: SockType) -> io::Result<(OwnedFd, OwnedFd)> {
    let (manager, worker) = socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)?;
    nix::fcntl::fcntl(
        manager.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok((manager, worker))
}

/// The result of offering a connection to a worker without waiting.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Its queue is full: it is slow, not gone. Try another worker.
    WouldBlock,
    /// The worker's end is closed: it died or is dying.
    Gone,
}

/// How a worker speaking version 2 reports its closes (`CLOSED_REPORTS=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reports {
    /// Each at once: the policy goes by them (least-conn).
    Each,
    /// Gathered, at most a second late: they are only counted.
    Lazy,
}

impl Reports {
    fn message(self) -> &'static [u8] {
        match self {
            Reports::Each => b"CLOSED_REPORTS=each",
            Reports::Lazy => b"CLOSED_REPORTS=lazy",
        }
    }
}

/// The manager's end of one worker's channel.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: AsyncFd<OwnedFd>,
    /// The protocol version spoken: the first, until the worker says it
    /// speaks a later one.
    version: Cell<u32>,
    /// How the worker reports closes as far as it was told: a worker starts
    /// reporting each.
    told: Cell<Reports>,
    /// How it should; told with its next message when the two differ.
    wanted: Cell<Reports>,
}

/// Where messages from workers are read into: one for every channel of the
/// thread (the event loop's), since a message is parsed before the next is
/// read, rather than 4 KiB per worker, or zeroed for each message.
struct Inbox {
    /// One byte more than a message may have, to tell one too long.
    text: Box<[u8]>,
    space: Vec<u8>,
}

thread_local! {
    static INBOX: RefCell<Inbox> = RefCell::new(Inbox {
        text: vec![0; MAX_MESSAGE + 1].into_boxed_slice(),
        space: cmsg_space!([RawFd; 8]),
    });
}

impl Channel {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Channel> {
        Ok(Channel {
            // Registered for reading only: a full channel is skipped, never
            // waited on, and an EPOLLOUT registration would wake the manager
            // each time the worker takes a connection off its queue.
            // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
            fd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(io::Error::from)?,
            version: Cell::new(FIRST_VERSION),
            told: Cell::new(Reports::Each),
            wanted: Cell::new(Reports::Each),
        })
    }

    /// What the next image needs to go on speaking with the worker
    /// ([`super::carried`]): the fd, the version, and what it was told.
    pub(crate) fn carry(&self) -> Carried {
        Carried::Native {
            fd: self.raw_fd(),
            version: self.version.get(),
            told_each: self.told.get() == Reports::Each,
            wanted_each: self.wanted.get() == Reports::Each,
        }
    }

    /// The channel an earlier image carried: `fd` is inherited and owned by
    /// nothing else.
    pub(crate) fn adopt(
        fd: OwnedFd,
        version: u32,
        told_each: bool,
        wanted_each: bool,
    ) -> io::Result<Channel> {
        let channel = Channel::new(fd)?;
        let reports = |each| if each { Reports::Each } else { Reports::Lazy };
        channel
            .version
            .set(version.clamp(FIRST_VERSION, PROTOCOL_VERSION));
        channel.told.set(reports(told_each));
        channel.wanted.set(reports(wanted_each));
        Ok(channel)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Hands connections over, all accepted on the socket whose `CONN=`
    /// line is `line`, without waiting: in one message when the worker
    /// speaks version 2 (the caller keeps to what one message holds, see
    /// [`super::socket::Socket::batch`]), else one message each. Returns how
    /// many went, from the first on, and why the next did not. The caller
    /// keeps (and closes) its own copies of the fds either way.
    pub(crate) fn send_conns(&self, fds: &[RawFd], line: &[u8]) -> (usize, Option<SendError>) {
        if let Err(e) = self.tell_reports() {
            return (0, Some(e));
        }
        if self.version.get() > FIRST_VERSION && fds.len() > 1 {
            let mut text = Vec::with_capacity(fds.len() * (line.len() + 1));
            for _ in fds {
                text.extend_from_slice(line);
                text.push(b'\n');
            }
            text.pop();
            return match self.try_send_with(&text, fds) {
                Ok(()) => (fds.len(), None),
                Err(e) => (0, Some(e)),
            };
        }
        for (sent, fd) in fds.iter().enumerate() {
            if let Err(e) = self.try_send_with(line, &[*fd]) {
                return (sent, Some(e));
            }
        }
        (fds.len(), None)
    }

    /// Sends a control message (`SHUTDOWN=1`) without waiting.
    pub(crate) fn try_send(&self, message: &[u8]) -> Result<(), SendError> {
        self.try_send_with(message, &[])
    }

    /// Says how the worker should report closes, if it speaks version 2 (a
    /// worker of version 1 reports each at once, always). If its channel is
    /// full it is told with its next connections.
    pub(crate) fn set_reports(&self, reports: Reports) {
        self.wanted.set(reports);
        let _ = self.tell_reports();
    }

    /// Tells the worker how to report closes if it has not been told yet.
    fn tell_reports(&self) -> Result<(), SendError> {
        let wanted = self.wanted.get();
        if self.version.get() == FIRST_VERSION || self.told.get() == wanted {
            return Ok(());
        }
        self.try_send(wanted.message())?;
        self.told.set(wanted);
        Ok(())
    }

    fn try_send_with(&self, message: &[u8], fds: &[RawFd]) -> Result<(), SendError> {
        match send_with_fds(self.raw_fd(), message, fds) {
            Ok(_) => Ok(()),
            // ETOOMANYREFS: the kernel's cap on descriptors in flight was
            // hit; ENOBUFS, ENOMEM: the kernel is short of memory for a
            // moment. The worker is backed up or the system is, not gone:
            // the connection goes to another worker, or waits.
            Err(
                Errno::EAGAIN | Errno::EINTR | Errno::ETOOMANYREFS | Errno::ENOBUFS | Errno::ENOMEM,
            ) => Err(SendError::WouldBlock),
            Err(_) => Err(SendError::Gone),
        }
    }

    /// Receives the next message from the worker. `Ok(None)` when the worker
    /// closed its end (it exited). Descriptors a worker sends are closed. A
    /// worker that says `PROTOCOL=2` is spoken to in version 2 from now on.
    pub(crate) async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                INBOX.with_borrow_mut(|inbox| recv_datagram(fd.get_ref().as_raw_fd(), inbox))
            });
            match read {
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some(said))) => {
                    if let Ok(Notice {
                        protocol: Some(version),
                        ..
                    }) = &said
                    {
                        self.version.set(*version);
                    }
                    return Ok(Some(said));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Room for the control message of the most descriptors one message carries,
/// `CMSG_SPACE(253 * sizeof(int))`: 1,032 bytes on Linux, aligned for its header.
const FDS_SPACE: usize = 130;

/// Sends `text` with `fds` attached (`SCM_RIGHTS`), without waiting or
/// raising SIGPIPE. The control message is built on the stack: nothing is
/// allocated per message.
fn send_with_fds(channel: RawFd, text: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    use nix::libc;
    let mut space = [0u64; FDS_SPACE];
    let mut iov = libc::iovec {
        iov_base: text.as_ptr().cast_mut().cast(),
        iov_len: text.len(),
    };
    // SAFETY: a msghdr of zeroes is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: pure arithmetic on a length.
        let (space_len, data_len) = unsafe { (libc::CMSG_SPACE(bytes), libc::CMSG_LEN(bytes)) };
        if space_len as usize > std::mem::size_of_val(&space) {
            return Err(Errno::EINVAL);
        }
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = space_len as usize;
        // SAFETY: msg_control points to `space`, which holds a header and
        // `fds` (checked above); CMSG_FIRSTHDR and CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = data_len as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
    }
    // SAFETY: `msg` and what it points to live until the call returns.
    let sent = unsafe { libc::sendmsg(channel, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Reads one datagram: `None` if the worker hung up, else what it said.
fn recv_datagram(fd: RawFd, inbox: &mut Inbox) -> io::Result<Option<Result<Notice, Garbage>>> {
    let mut iov = [IoSliceMut::new(&mut inbox.text)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg =
        recvmsg::<()>(fd, &mut iov, Some(&mut inbox.space), flags).map_err(io::Error::from)?;
    let mut had_fds = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            had_fds = true;
            for fd in fds {
                // SAFETY: the kernel just installed these fds for us; we own
                // them and close them at once.
                drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Ok(Some(Err(Garbage(format!(
            "message of more than {MAX_MESSAGE} bytes"
        )))));
    }
    if had_fds {
        return Ok(Some(Err(Garbage("worker sent file descriptors".into()))));
    }
    let len = msg.bytes;
    // Seqpacket carries messages of zero bytes too: a read of nothing is
    // the end only if the worker hung up, or a live worker would drop out
    // of the ring for good without being replaced.
    if len == 0 && peer_hung_up(fd) {
        return Ok(None);
    }
    Ok(Some(parse_notice(&inbox.text[..len])))
}

/// Whether the worker's end of the channel is closed. If that cannot be
/// told, it is taken as closed.
fn peer_hung_up(fd: RawFd) -> bool {
    let mut poll = nix::libc::pollfd {
        fd,
        events: nix::libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; no waiting.
    match unsafe { nix::libc::poll(&mut poll, 1, 0) } {
        0 => false,
        1 => poll.revents & (nix::libc::POLLHUP | nix::libc::POLLRDHUP) != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, UnixAddr};
    use std::io::IoSlice;

    #[tokio::test]
    async fn an_empty_message_is_not_the_end() {
        let (manager, worker) = pair(SockType::SeqPacket).unwrap();
        let channel = Channel::new(manager).unwrap();
        let send = |m: &[u8]| {
            sendmsg::<UnixAddr>(
                worker.as_raw_fd(),
                &[IoSlice::new(m)],
                &[],
                MsgFlags::empty(),
                None,
            )
        };
        send(b"").unwrap();
        send(b"READY=1").unwrap();
        assert_eq!(channel.recv().await.unwrap(), Some(Ok(Notice::default())));
        assert!(channel.recv().await.unwrap().unwrap().unwrap().ready);
        drop(worker);
        assert_eq!(channel.recv().await.unwrap(), None);
    }
}
