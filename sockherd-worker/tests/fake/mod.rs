//! A fake manager for the crate's tests: the other end of a real
//! `SOCK_SEQPACKET` socket pair, which hands over real connections with
//! `SCM_RIGHTS` and reads what the worker says, as `sockherd serve` would.

// Each test file uses its own part of it.
#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
    UnixAddr,
};

/// How long anything may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The manager's end of a channel.
pub struct Manager(OwnedFd);

/// A new channel: the manager's end, and the worker's.
pub fn channel() -> (Manager, OwnedFd) {
    let (manager, worker) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("create a seqpacket socket pair");
    (Manager(manager), worker)
}

impl Manager {
    /// Sends one message.
    pub fn send(&self, message: &str) {
        sendmsg::<UnixAddr>(
            self.0.as_raw_fd(),
            &[IoSlice::new(message.as_bytes())],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("send to the worker");
    }

    /// Hands over a connection as `CONN=name`, then closes its own copy as
    /// the manager does.
    pub fn hand_over(&self, name: &str, conn: impl Into<OwnedFd>) {
        let conn: OwnedFd = conn.into();
        let fds = [conn.as_raw_fd()];
        sendmsg::<UnixAddr>(
            self.0.as_raw_fd(),
            &[IoSlice::new(format!("CONN={name}").as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("hand a connection over");
    }

    /// Hands over several connections in one message, as a manager speaking
    /// protocol version 2 does: a `CONN=name` line for each, the
    /// descriptors in the order of the lines.
    pub fn hand_over_many(&self, conns: Vec<(&str, OwnedFd)>) {
        let text: Vec<String> = conns
            .iter()
            .map(|(name, _)| format!("CONN={name}"))
            .collect();
        let fds: Vec<RawFd> = conns.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        sendmsg::<UnixAddr>(
            self.0.as_raw_fd(),
            &[IoSlice::new(text.join("\n").as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("hand connections over");
    }

    /// The next message from the worker, if one is there now.
    pub fn try_recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<UnixAddr>(self.0.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT) {
            Ok(msg) => {
                let len = msg.bytes;
                Some(String::from_utf8_lossy(&buf[..len]).into_owned())
            }
            Err(Errno::EAGAIN) => None,
            Err(e) => panic!("receive from the worker: {e}"),
        }
    }

    /// The next message from the worker, waiting for it without blocking
    /// the runtime.
    pub async fn recv(&self) -> String {
        let start = Instant::now();
        loop {
            if let Some(message) = self.try_recv() {
                return message;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the worker said nothing for {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the worker has reported `n` closes in all (`CLOSED=<k>`
    /// messages add up); fails on any other message.
    pub async fn closed(&self, n: u64) {
        let mut total = 0;
        while total < n {
            let message = self.recv().await;
            let count = message
                .strip_prefix("CLOSED=")
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("expected CLOSED=<n>, got {message:?}"));
            total += count;
        }
        assert_eq!(total, n, "more closes reported than connections closed");
    }
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// A connected TCP pair on loopback: (client, server side to hand over).
pub async fn tcp_pair() -> (tokio::net::TcpStream, std::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let client = client.expect("connect");
    let (server, _) = accepted.expect("accept");
    let server = server.into_std().expect("a std stream");
    server
        .set_nonblocking(false)
        .expect("blocking, as handed over");
    (client, server)
}
