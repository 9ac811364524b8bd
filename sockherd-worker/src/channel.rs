//! The channel itself: checking that a descriptor is one before it is
//! trusted, and sending and receiving its messages (`KEY=VALUE` lines, one
//! `sendmsg` each, connections riding along as `SCM_RIGHTS`: one per
//! message in version 1, one per `CONN=` line in version 2).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessageOwned, MsgFlags, SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;

use crate::protocol::{MAX_CONNS_PER_MESSAGE, MAX_MESSAGE};

/// Checks that `fd` is an open `SOCK_SEQPACKET` socket, as a channel is;
/// `what` names it in the error. Reads only: the descriptor is not changed.
pub(crate) fn check(fd: RawFd, what: &str) -> io::Result<()> {
    let hint = "run this program under `sockherd serve`";
    if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{what} is not an open descriptor: {hint}"),
        ));
    }
    // SAFETY: just checked to be open, and only borrowed for this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::SockType) {
        Ok(SockType::SeqPacket) => Ok(()),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is a {other:?} socket, not SOCK_SEQPACKET: {hint}"),
        )),
        Err(Errno::ENOTSOCK) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is not a socket: {hint}"),
        )),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}: cannot tell its socket type ({e}): {hint}"),
        )),
    }
}

/// Sends one message without waiting; `WouldBlock` if the channel is full.
pub(crate) fn send(channel: &AsyncFd<OwnedFd>, message: &str) -> io::Result<()> {
    let iov = [IoSlice::new(message.as_bytes())];
    sendmsg::<UnixAddr>(
        channel.get_ref().as_raw_fd(),
        &iov,
        &[],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// How the manager wants closes reported (`CLOSED_REPORTS=`, version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reports {
    /// Each at once (`each`): the manager dispatches by them (least-conn).
    Each,
    /// Gathered, at most a second late (`lazy`): it only counts them.
    Lazy,
}

/// What one message from the manager said.
#[derive(Debug, Default)]
pub(crate) struct Message {
    /// Its `CONN=<name>` lines in order, each with its connection (the
    /// descriptors come in the order of the lines), or why it did not come.
    pub conns: Vec<(String, io::Result<OwnedFd>)>,
    /// Its last `CLOSED_REPORTS=`.
    pub reports: Option<Reports>,
    /// `SHUTDOWN=1`.
    pub shutdown: bool,
}

/// What a read of the channel found.
pub(crate) enum Received {
    Message(Message),
    /// The manager closed its end.
    Closed,
}

/// Where messages from the manager are read into, kept from one to the next.
pub(crate) struct Inbox {
    text: Box<[u8]>,
    /// Room for the most descriptors one message carries.
    space: Vec<u8>,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            text: vec![0; MAX_MESSAGE].into_boxed_slice(),
            space: cmsg_space!([RawFd; MAX_CONNS_PER_MESSAGE]),
        }
    }

    /// Receives one message without waiting; `WouldBlock` if there is none.
    pub(crate) fn receive(&mut self, fd: RawFd) -> io::Result<Received> {
        let mut iov = [IoSliceMut::new(&mut self.text)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut self.space), flags)?;
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these fds for this process.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let len = msg.bytes;
        // Seqpacket carries messages of zero bytes too, which mean nothing: a
        // read of nothing is the end only if the manager hung up.
        if len == 0 && hung_up(fd) {
            return Ok(Received::Closed);
        }
        Ok(Received::Message(parse(&self.text[..len], fds, truncated)))
    }
}

/// Reads a message's lines; the `CONN=` lines take `fds` in order.
/// Descriptors no line takes are closed.
fn parse(text: &[u8], fds: Vec<OwnedFd>, truncated: bool) -> Message {
    let mut fds = fds.into_iter();
    let mut message = Message::default();
    for line in String::from_utf8_lossy(text).lines() {
        match line.split_once('=') {
            Some(("CONN", name)) => {
                let fd = fds.next().ok_or_else(|| {
                    io::Error::other(if truncated {
                        format!("a connection on {name:?} was lost on its way: this process is out of file descriptors")
                    } else {
                        format!("a connection on {name:?} arrived without its descriptor")
                    })
                });
                message.conns.push((name.to_owned(), fd));
            }
            Some(("CLOSED_REPORTS", "each")) => message.reports = Some(Reports::Each),
            Some(("CLOSED_REPORTS", "lazy")) => message.reports = Some(Reports::Lazy),
            Some(("SHUTDOWN", "1")) => message.shutdown = true,
            _ => {}
        }
    }
    message
}

/// Whether the other end of the channel is closed; if that cannot be told,
/// it is taken as closed.
fn hung_up(fd: RawFd) -> bool {
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
