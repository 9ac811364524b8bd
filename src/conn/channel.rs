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

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::notice::{parse_notice, Garbage, Notice};
use super::protocol::MAX_MESSAGE;

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

/// The manager's end of one worker's channel.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: AsyncFd<OwnedFd>,
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
        })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Hands a connection over: one datagram naming the listening socket, with
    /// the connection's fd attached. Never waits. The caller keeps (and closes)
    /// its own copy of the fd either way.
    pub(crate) fn try_send_conn(
        &self,
        conn: BorrowedFd<'_>,
        message: &[u8],
    ) -> Result<(), SendError> {
        let fds = [conn.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        self.try_send_with(message, &cmsg)
    }

    /// Sends a control message (`SHUTDOWN=1`) without waiting.
    pub(crate) fn try_send(&self, message: &[u8]) -> Result<(), SendError> {
        self.try_send_with(message, &[])
    }

    fn try_send_with(&self, message: &[u8], cmsg: &[ControlMessage<'_>]) -> Result<(), SendError> {
        let iov = [IoSlice::new(message)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<UnixAddr>(self.raw_fd(), &iov, cmsg, flags, None) {
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
    /// closed its end (it exited). Descriptors a worker sends are closed.
    pub(crate) async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        let mut buf = [0u8; MAX_MESSAGE + 1];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_datagram(fd.get_ref().as_raw_fd(), &mut buf)) {
                Ok(Ok(Datagram::Closed)) => return Ok(None),
                Ok(Ok(Datagram::Truncated)) => {
                    return Ok(Some(Err(Garbage(format!(
                        "message of more than {MAX_MESSAGE} bytes"
                    )))))
                }
                Ok(Ok(Datagram::Message { len, had_fds })) => {
                    if had_fds {
                        return Ok(Some(Err(Garbage("worker sent file descriptors".into()))));
                    }
                    return Ok(Some(parse_notice(&buf[..len])));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

enum Datagram {
    Closed,
    Truncated,
    Message { len: usize, had_fds: bool },
}

fn recv_datagram(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = cmsg_space!([RawFd; 8]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg =
        recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), flags).map_err(io::Error::from)?;
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
        return Ok(Datagram::Truncated);
    }
    match msg.bytes {
        // Seqpacket carries messages of zero bytes too: a read of nothing is
        // the end only if the worker hung up, or a live worker would drop out
        // of the ring for good without being replaced.
        0 if peer_hung_up(fd) => Ok(Datagram::Closed),
        len => Ok(Datagram::Message { len, had_fds }),
    }
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
