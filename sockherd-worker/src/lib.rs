//! Be a sockherd worker.
//!
//! A sockherd manager accepts connections on the app's listening sockets and
//! hands each one to a worker over the worker's channel (fd 3,
//! `SOCKHERD_CHANNEL_FD`). This crate is the worker's side of that channel for
//! tokio servers: [`Listener::from_env`] takes the channel, and
//! [`Listener::accept`] yields each connection as a tokio [`TcpStream`] or
//! [`UnixStream`], much as `tokio::net::TcpListener::accept` would.
//!
//! The lifecycle, as the manager sees it:
//! 1. the worker starts, sets itself up, then calls [`Listener::ready`]: only
//!    now does it receive connections;
//! 2. it serves what [`Listener::accept`] yields. When the manager checks
//!    heartbeats (`SOCKHERD_HEARTBEAT_USEC` is set), a task of the listener
//!    sends them on the worker's own runtime, so a wedged runtime goes silent
//!    and gets the worker replaced; [`Listener::heartbeat`] sends one by hand;
//! 3. when the manager wants it gone (reload, scale down, stop), it stops
//!    sending connections and sends a shutdown request: [`Listener::accept`]
//!    then returns the connections handed over before it, followed by `None`,
//!    and [`Listener::shutdown_requested`] resolves. The worker finishes its
//!    in-flight requests and exits 0 — within the manager's kill timeout;
//! 4. a worker that decides to go on its own calls [`Listener::stopping`]
//!    first, so its replacement starts at once.
//!
//! Every [`Stream`] reports its own close when it is dropped (`CLOSED=1`,
//! sent before the socket is closed, so the client cannot come back with a
//! new connection before the manager knows; `CLOSED=<n>` for several when the
//! channel was full), which is how the manager's `least-conn` policy knows how
//! many connections each worker holds. Nothing is asked of the app for that
//! but to drop connections it is done with.
//!
//! ```no_run
//! # async fn serve() -> std::io::Result<()> {
//! let listener = sockherd_worker::Listener::from_env()?;
//! listener.ready()?;
//! while let Some(conn) = listener.accept().await? {
//!     tokio::spawn(async move { /* serve conn.stream */ drop(conn) });
//! }
//! # Ok(()) }
//! ```
//!
//! The wire protocol is in the sockherd repository's `docs/protocol.md`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::cmsg_space;
use nix::sys::socket::{
    getsockname, recvmsg, sendmsg, AddressFamily, ControlMessageOwned, MsgFlags, SockaddrLike,
    SockaddrStorage, UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch, Mutex, Notify};
use tokio::task::JoinHandle;

/// The protocol version this crate speaks (`SOCKHERD_PROTOCOL`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message on the channel.
const MAX_MESSAGE: usize = 4096;

/// Connections read from the channel but not yet accepted. Small on purpose:
/// while it is full the channel fills, and the manager sends new connections
/// to other workers.
const QUEUE: usize = 16;

/// One connection handed over by the manager.
#[derive(Debug)]
pub struct Connection {
    pub stream: Stream,
    /// The name of the listening socket it arrived on (`FileDescriptorName=`
    /// in the `.socket` unit, or `NAME=` of `--listen`).
    pub socket: String,
}

/// A connected socket: TCP or Unix, as the listening socket was. Reads and
/// writes like either; dropping it closes the connection and reports the
/// close to the manager.
#[derive(Debug)]
pub struct Stream {
    /// The socket itself.
    socket: Socket,
    /// Where its close is counted when it is dropped.
    closes: Arc<Closes>,
}

/// The two kinds of connection a [`Stream`] can be.
#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// The TCP connection, if it is one (for `peer_addr`, `set_nodelay`, …).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.socket {
            Socket::Tcp(s) => Some(s),
            Socket::Unix(_) => None,
        }
    }

    /// The Unix connection, if it is one.
    pub fn unix(&self) -> Option<&UnixStream> {
        match &self.socket {
            Socket::Unix(s) => Some(s),
            Socket::Tcp(_) => None,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Runs before the socket field is dropped: reported, then closed.
        self.closes.closed();
    }
}

/// Reports closed connections to the manager.
#[derive(Debug)]
struct Closes {
    /// The channel to the manager.
    channel: Arc<AsyncFd<OwnedFd>>,
    /// Closes not reported yet because the channel was full.
    count: AtomicU64,
    /// Wakes the task that reports those.
    wake: Notify,
}

impl Closes {
    fn new(channel: Arc<AsyncFd<OwnedFd>>) -> Closes {
        Closes {
            channel,
            count: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    /// One more connection is closed. Said at once, without waiting: a
    /// report that lags lets the client's next connection find this worker
    /// counted as busy (or another counted as idle). If the channel is full,
    /// or reports are already waiting, the reporting task sends it with them.
    fn closed(&self) {
        if self.count.load(Ordering::Relaxed) == 0 && send(&self.channel, "CLOSED=1").is_ok() {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// The worker's end of its channel to the manager.
pub struct Listener {
    /// The channel, for messages to the manager.
    channel: std::sync::Arc<AsyncFd<OwnedFd>>,
    /// Connections read by the reader task, in the order they were sent.
    incoming: Mutex<mpsc::Receiver<io::Result<Connection>>>,
    /// Turns true when the manager asks us to shut down.
    shutdown: watch::Receiver<bool>,
    /// Reads the channel; stopped when the listener is dropped.
    reader: JoinHandle<()>,
    /// Sends heartbeats when the manager asks for them; stopped on drop.
    heartbeat: Option<JoinHandle<()>>,
    /// Reports closed connections (`CLOSED=<n>`); stopped on drop.
    closes: JoinHandle<()>,
}

impl Listener {
    /// Takes the channel named by `SOCKHERD_CHANNEL_FD`. Must be called inside
    /// a tokio runtime; call it once.
    pub fn from_env() -> io::Result<Listener> {
        let fd: RawFd = std::env::var("SOCKHERD_CHANNEL_FD")
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "SOCKHERD_CHANNEL_FD is not set: run this program under `sockherd serve`",
                )
            })?
            .parse()
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "SOCKHERD_CHANNEL_FD is not a number",
                )
            })?;
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("SOCKHERD_CHANNEL_FD={fd} is not an open descriptor"),
            ));
        }
        // SAFETY: the manager gave this descriptor to us alone; it was just
        // checked to be open, and from here on the listener owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let channel =
            std::sync::Arc::new(unsafe { AsyncFd::register(owned) }.map_err(io::Error::from)?);
        let (conn_tx, conn_rx) = mpsc::channel(QUEUE);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let closed = Arc::new(Closes::new(Arc::clone(&channel)));
        let reader = tokio::spawn(read_channel(
            std::sync::Arc::clone(&channel),
            conn_tx,
            shutdown_tx,
            Arc::clone(&closed),
        ));
        let closes = tokio::spawn(report_closes(closed));
        let heartbeat = std::env::var("SOCKHERD_HEARTBEAT_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(|usec| {
                tokio::spawn(beat(
                    std::sync::Arc::clone(&channel),
                    Duration::from_micros(usec),
                ))
            });
        Ok(Listener {
            channel,
            incoming: Mutex::new(conn_rx),
            shutdown: shutdown_rx,
            reader,
            heartbeat,
            closes,
        })
    }

    /// The next connection; `None` once the manager asked us to shut down and
    /// every connection handed over before that has been returned.
    pub async fn accept(&self) -> io::Result<Option<Connection>> {
        self.incoming.lock().await.recv().await.transpose()
    }

    /// Resolves once the manager has asked this worker to shut down.
    pub async fn shutdown_requested(&self) {
        let mut shutdown = self.shutdown.clone();
        let _ = shutdown.wait_for(|asked| *asked).await;
    }

    /// Whether the manager has asked this worker to shut down.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Tells the manager this worker accepts connections now.
    pub fn ready(&self) -> io::Result<()> {
        self.notify("READY=1")
    }

    /// Tells the manager this worker is alive (see `--heartbeat-timeout`).
    pub fn heartbeat(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// Tells the manager this worker is about to exit on its own; it stops
    /// getting connections and its replacement is started now.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// Sends raw `KEY=VALUE` lines, `sd_notify` style (e.g. `STATUS=warming up`).
    pub fn notify(&self, message: &str) -> io::Result<()> {
        send(&self.channel, message)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.reader.abort();
        self.closes.abort();
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.abort();
        }
    }
}

/// Sends the closes [`Closes::closed`] could not: one message per wake-up,
/// carrying every close since the last. Ends when the manager is gone.
async fn report_closes(closes: Arc<Closes>) {
    let channel = &closes.channel;
    let mut unsent = 0u64;
    loop {
        if unsent == 0 {
            closes.wake.notified().await;
        }
        unsent += closes.count.swap(0, Ordering::Relaxed);
        if unsent == 0 {
            continue;
        }
        match send(channel, &format!("CLOSED={unsent}")) {
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

fn send(channel: &AsyncFd<OwnedFd>, message: &str) -> io::Result<()> {
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

async fn beat(channel: std::sync::Arc<AsyncFd<OwnedFd>>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if send(&channel, "WATCHDOG=1").is_err() {
            return;
        }
    }
}

/// The worker id the manager gave us (`SOCKHERD_WORKER_ID`), if any.
pub fn worker_id() -> Option<u32> {
    std::env::var("SOCKHERD_WORKER_ID").ok()?.parse().ok()
}

enum Received {
    Conn(String, OwnedFd),
    Shutdown,
    Other,
    Closed,
}

async fn read_channel(
    channel: std::sync::Arc<AsyncFd<OwnedFd>>,
    conns: mpsc::Sender<io::Result<Connection>>,
    shutdown: watch::Sender<bool>,
    closes: Arc<Closes>,
) {
    loop {
        let received = match channel.readable().await {
            Ok(mut guard) => match guard.try_io(|fd| receive(fd.get_ref().as_raw_fd())) {
                Ok(result) => result,
                Err(_would_block) => continue,
            },
            Err(e) => Err(e),
        };
        match received {
            Ok(Received::Conn(socket, fd)) => {
                let conn = into_stream(fd, &closes).map(|stream| Connection { stream, socket });
                if conns.send(conn).await.is_err() {
                    return;
                }
            }
            Ok(Received::Other) => {}
            // The manager is gone or wants us gone: no more connections will come.
            Ok(Received::Shutdown) | Ok(Received::Closed) => {
                let _ = shutdown.send(true);
                return;
            }
            Err(e) => {
                let _ = conns.send(Err(e)).await;
                let _ = shutdown.send(true);
                return;
            }
        }
    }
}

fn receive(fd: RawFd) -> io::Result<Received> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = cmsg_space!([RawFd; 4]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), flags)?;
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
    if len == 0 {
        return Ok(Received::Closed);
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("CONN", name)) => {
                if let Some(fd) = fds.pop() {
                    return Ok(Received::Conn(name.to_owned(), fd));
                }
            }
            Some(("SHUTDOWN", "1")) => return Ok(Received::Shutdown),
            _ => {}
        }
    }
    Ok(Received::Other)
}

/// Wraps a connection the manager handed over. From here on its close is
/// reported, also when this fails and the connection is closed at once.
fn into_stream(fd: OwnedFd, closes: &Arc<Closes>) -> io::Result<Stream> {
    let socket = match getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(addr) if addr.family() == Some(AddressFamily::Unix) => {
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(std))
                .map(Socket::Unix)
        }
        Ok(_) => {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(std))
                .map(Socket::Tcp)
        }
        Err(e) => Err(e.into()),
    };
    if socket.is_err() {
        closes.closed();
    }
    Ok(Stream {
        socket: socket?,
        closes: Arc::clone(closes),
    })
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
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
