//! One connection handed over by the manager: a TCP or Unix stream that
//! reports its own close (`CLOSED=1`) when it is dropped, which is what the
//! manager's `least-conn` policy counts by.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{watch, Notify};

use crate::channel;

/// One connection handed over by the manager. It reads and writes like the
/// [`TcpStream`] or [`UnixStream`] it is (it is [`AsyncRead`] +
/// [`AsyncWrite`]), and dropping it closes the connection — after telling
/// the manager (`CLOSED=1`), so that the client cannot come back before the
/// manager knows.
pub struct Connection {
    // Fields are dropped in this order: the close is reported first, then
    // the socket is closed.
    report: CloseReport,
    socket: Socket,
    name: String,
    /// Set until the connection is first read from (see
    /// `Listener::shutdown_signal`).
    unread: Option<Unread>,
}

/// The two kinds of connection there are.
#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The address of the client at the other end of a [`Connection`].
#[derive(Debug, Clone)]
pub enum PeerAddr {
    /// A TCP client (IPv4 or IPv6).
    Tcp(std::net::SocketAddr),
    /// A Unix-socket client; most often unnamed.
    Unix(tokio::net::unix::SocketAddr),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => addr.fmt(f),
            PeerAddr::Unix(addr) => match addr.as_pathname() {
                Some(path) => path.display().fmt(f),
                None => f.write_str("(unnamed)"),
            },
        }
    }
}

impl Connection {
    /// Wraps a connection the manager handed over. From here on its close is
    /// reported, also when wrapping fails and it is closed at once.
    pub(crate) fn new(
        fd: OwnedFd,
        name: String,
        closes: &Arc<Closes>,
        unread: &Arc<watch::Sender<usize>>,
    ) -> io::Result<Connection> {
        let report = CloseReport {
            closes: Arc::clone(closes),
        };
        let unix =
            getsockname::<SockaddrStorage>(fd.as_raw_fd())?.family() == Some(AddressFamily::Unix);
        let socket = if unix {
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            Socket::Unix(UnixStream::from_std(std)?)
        } else {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true)?;
            Socket::Tcp(TcpStream::from_std(std)?)
        };
        Ok(Connection {
            report,
            socket,
            name,
            unread: Some(Unread::new(unread)),
        })
    }

    /// The name of the listening socket it arrived on: `FileDescriptorName=`
    /// in the `.socket` unit, or `NAME=` of `--listen NAME=ADDR`; `unknown`
    /// when the socket has none.
    pub fn socket_name(&self) -> &str {
        &self.name
    }

    /// The client's address, asked of the kernel like
    /// [`TcpStream::peer_addr`]. Fails with `NotConnected` once the client
    /// has reset the connection.
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match &self.socket {
            Socket::Tcp(s) => s.peer_addr().map(PeerAddr::Tcp),
            Socket::Unix(s) => s.peer_addr().map(PeerAddr::Unix),
        }
    }

    /// The TCP stream, if it is one (for `set_nodelay`, `local_addr`, …).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.socket {
            Socket::Tcp(s) => Some(s),
            Socket::Unix(_) => None,
        }
    }

    /// The Unix stream, if it is one.
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match &self.socket {
            Socket::Unix(s) => Some(s),
            Socket::Tcp(_) => None,
        }
    }

    /// The TCP stream itself, with the [`CloseReport`] that tells the manager
    /// when it is closed; the connection back if it is a Unix one.
    ///
    /// The stream no longer reports anything: the report goes when the
    /// [`CloseReport`] is dropped. Keep the two together and drop them
    /// together (the report first, ideally), so that `least-conn` counts the
    /// connection as open exactly as long as it is. Dropping the report at
    /// once (`let (stream, _) = …`) reports the connection closed while it
    /// is still open.
    pub fn into_tcp(self) -> Result<(TcpStream, CloseReport), Connection> {
        let Connection {
            report,
            socket,
            name,
            unread,
        } = self;
        match socket {
            Socket::Tcp(stream) => Ok((stream, report)),
            socket => Err(Connection {
                report,
                socket,
                name,
                unread,
            }),
        }
    }

    /// The Unix stream itself, with its [`CloseReport`]; the connection back
    /// if it is a TCP one. See [`Connection::into_tcp`].
    pub fn into_unix(self) -> Result<(UnixStream, CloseReport), Connection> {
        let Connection {
            report,
            socket,
            name,
            unread,
        } = self;
        match socket {
            Socket::Unix(stream) => Ok((stream, report)),
            socket => Err(Connection {
                report,
                socket,
                name,
                unread,
            }),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("socket", &self.socket)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = match &mut this.socket {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        };
        if polled.is_ready() {
            this.unread = None;
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.socket {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Tells the manager that one connection it handed over is closed
/// (`CLOSED=1`), when dropped. Every [`Connection`] holds one; after
/// [`Connection::into_tcp`] or [`Connection::into_unix`] it is yours to keep
/// for as long as the stream is open.
#[must_use = "dropping it reports the connection closed"]
pub struct CloseReport {
    closes: Arc<Closes>,
}

impl Drop for CloseReport {
    fn drop(&mut self) {
        self.closes.closed();
    }
}

impl fmt::Debug for CloseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseReport").finish_non_exhaustive()
    }
}

/// Counts a connection as not read from yet, until dropped.
struct Unread(Arc<watch::Sender<usize>>);

impl Unread {
    fn new(count: &Arc<watch::Sender<usize>>) -> Unread {
        count.send_modify(|n| *n += 1);
        Unread(Arc::clone(count))
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// How late a close may be reported when the manager said `lazy`.
const LAZY_REPORTS: Duration = Duration::from_secs(1);

/// Reports closed connections to the manager.
#[derive(Debug)]
pub(crate) struct Closes {
    /// The channel to the manager.
    channel: Arc<AsyncFd<OwnedFd>>,
    /// Closes not reported yet: the channel was full, or reports are lazy.
    count: AtomicU64,
    /// The manager said `CLOSED_REPORTS=lazy`: it only counts closes, so
    /// they are gathered and sent at most [`LAZY_REPORTS`] late.
    lazy: AtomicBool,
    /// Wakes the task that reports those.
    wake: Notify,
    /// Ends the task's wait for more closes: reports are no longer lazy.
    eager: Notify,
}

impl Closes {
    pub(crate) fn new(channel: Arc<AsyncFd<OwnedFd>>) -> Closes {
        Closes {
            channel,
            count: AtomicU64::new(0),
            lazy: AtomicBool::new(false),
            wake: Notify::new(),
            eager: Notify::new(),
        }
    }

    /// One more connection is closed. Unless reports are lazy, said at
    /// once, without waiting: a report that lags lets the client's next
    /// connection find this worker counted as busy (or another counted as
    /// idle). If the channel is full, or reports are already waiting, the
    /// reporting task sends it with them.
    pub(crate) fn closed(&self) {
        if self.lazy.load(Ordering::Relaxed) {
            if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
                self.wake.notify_one();
            }
            return;
        }
        if self.count.load(Ordering::Relaxed) == 0
            && channel::send(&self.channel, "CLOSED=1").is_ok()
        {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The manager said how it wants closes reported (`CLOSED_REPORTS=`).
    /// From lazy to each, what was gathered goes at once.
    pub(crate) fn set_reports(&self, reports: channel::Reports) {
        let lazy = reports == channel::Reports::Lazy;
        if self.lazy.swap(lazy, Ordering::Relaxed) && !lazy {
            self.eager.notify_one();
        }
    }
}

/// Sends the closes [`Closes::closed`] did not: one message per wake-up,
/// carrying every close since the last; while reports are lazy, a wake-up
/// waits [`LAZY_REPORTS`] for more first. Ends when the manager is gone.
pub(crate) async fn report_closes(closes: Arc<Closes>) {
    let channel = &closes.channel;
    let mut unsent = 0u64;
    loop {
        if unsent == 0 {
            closes.wake.notified().await;
        }
        if closes.lazy.load(Ordering::Relaxed) {
            let _ = tokio::time::timeout(LAZY_REPORTS, closes.eager.notified()).await;
        }
        unsent += closes.count.swap(0, Ordering::Relaxed);
        if unsent == 0 {
            continue;
        }
        match channel::send(channel, &format!("CLOSED={unsent}")) {
            Ok(()) => unsent = 0,
            // The manager is not reading right now: keep the count and try
            // again once the channel has room.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match channel.writable().await {
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => return,
            },
            Err(_) => return,
        }
    }
}
