//! Be a sockherd worker.
//!
//! A sockherd manager accepts connections on the app's listening sockets and
//! hands each one to a worker over the worker's channel (fd 3,
//! `SOCKHERD_CHANNEL_FD`). This crate is the worker's side of that channel for
//! tokio servers: [`Listener::from_env`] takes the channel, and
//! [`Listener::accept`] yields each connection as a [`Connection`], which is
//! [`AsyncRead`](tokio::io::AsyncRead) + [`AsyncWrite`](tokio::io::AsyncWrite)
//! like the tokio [`TcpStream`](tokio::net::TcpStream) or
//! [`UnixStream`](tokio::net::UnixStream) it wraps — much as
//! `tokio::net::TcpListener::accept` would. With the `axum` feature the
//! listener goes straight into `axum::serve` (below).
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
//! ```no_run
//! # async fn serve() -> std::io::Result<()> {
//! let listener = sockherd_worker::Listener::from_env()?;
//! listener.ready()?;
//! while let Some(conn) = listener.accept().await? {
//!     // conn.socket_name(), conn.peer_addr()?, and read and write it.
//!     tokio::spawn(async move { drop(conn) });
//! }
//! # Ok(()) }
//! ```
//!
//! # One owner of the channel
//!
//! [`Listener::from_env`] succeeds once per process: the channel has one
//! owner, as a descriptor must. A second call fails with
//! [`ErrorKind::AlreadyExists`](std::io::ErrorKind::AlreadyExists), also after
//! the first listener was dropped (its descriptor is closed by then, and the
//! number may already belong to something else). Before it takes the
//! descriptor it checks it: it must be an open `SOCK_SEQPACKET` socket, and
//! `SOCKHERD_PROTOCOL` must name a version this crate speaks
//! ([`protocol::FIRST_VERSION`] to [`protocol::PROTOCOL_VERSION`]). It then
//! speaks the newest version both sides speak (`SOCKHERD_PROTOCOL_MAX`:
//! version 2 with a manager that offers it, version 1 with an older one), and
//! says so with [`Listener::ready`]. If a check fails, the descriptor is left
//! as it was, open and not owned. [`Listener::from_fd`] takes a channel
//! you own instead (a test's socket pair, say).
//!
//! # Closes are reported
//!
//! Every [`Connection`] reports its own close when it is dropped (`CLOSED=1`,
//! sent before the socket is closed, so the client cannot come back with a
//! new connection before the manager knows; `CLOSED=<n>` for several when the
//! channel was full), which is how the manager's `least-conn` policy knows how
//! many connections each worker holds. Under the other policies the manager
//! only counts them, says so (protocol version 2), and the reports are
//! gathered and sent at most a second late. Nothing is asked of the app for
//! that but to drop connections it is done with.
//!
//! [`Connection::into_tcp`] and [`Connection::into_unix`] hand out the tokio
//! stream itself together with a [`CloseReport`], which sends the report
//! when it is dropped. Reporting at once instead would make a worker holding
//! long-lived streams (WebSockets, long polls) count as idle and attract
//! connections it is too busy for; not reporting would count it busy for
//! ever. Keep the report for as long as the stream is open — in the same
//! struct, say, declared before the stream so that it reports first.
//!
//! # axum
//!
//! With the `axum` feature, [`Listener`] is an `axum::serve::Listener`
//! (axum 0.8) whose address type is [`PeerAddr`], which handlers get as
//! `ConnectInfo<PeerAddr>` when the app is served with
//! `into_make_service_with_connect_info::<PeerAddr>()`:
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn serve(app: axum::Router) -> std::io::Result<()> {
//! let listener = sockherd_worker::Listener::from_env()?;
//! listener.ready()?;
//! let shutdown = listener.shutdown_signal();
//! axum::serve(listener, app).with_graceful_shutdown(shutdown).await
//! # }
//! ```
//!
//! In this order: [`Listener::ready`] and [`Listener::shutdown_signal`] need
//! the listener, which `axum::serve` then takes. Connections are handed over
//! only after `READY=1`, and wait in the channel until axum accepts them.
//! After the manager's shutdown request no connection comes: `accept` then
//! stays pending for ever, and only the shutdown signal ends `axum::serve`, so
//! pass it to `with_graceful_shutdown` (without it the worker keeps running
//! until the manager kills it at `--kill-timeout`). `accept` never fails: a
//! connection whose client has already reset it is dropped (and reported) and
//! the next one taken; after an error of the worker's own (out of
//! descriptors) it pauses 100 ms, as axum's own listeners do, and goes on.
//!
//! The wire protocol is in the sockherd repository's `docs/protocol.md`; its
//! numbers and names are in [`protocol`].

#[cfg(feature = "axum")]
mod axum;
mod channel;
mod connection;
pub mod protocol;

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use connection::Closes;
pub use connection::{CloseReport, Connection, PeerAddr};
pub use protocol::PROTOCOL_VERSION;

/// Connections read from the channel but not yet accepted. Small on purpose:
/// while it is full the channel fills, and the manager sends new connections
/// to other workers.
const QUEUE: usize = 16;

/// How long [`Listener::shutdown_signal`] waits, once every connection is
/// accepted, for the newest ones to be read from.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Whether this process has taken its channel with [`Listener::from_env`].
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The worker's end of its channel to the manager.
pub struct Listener {
    /// The channel, for messages to the manager.
    channel: Arc<AsyncFd<OwnedFd>>,
    /// The protocol version to speak: the newest both sides speak.
    version: u32,
    /// Connections read by the reader task, in the order they were sent.
    incoming: Mutex<mpsc::Receiver<io::Result<Connection>>>,
    /// Turns true when the manager asks us to shut down.
    shutdown: watch::Receiver<bool>,
    /// Turns true when `accept` has returned its last connection.
    drained: watch::Sender<bool>,
    /// How many connections nobody has read from yet.
    unread: Arc<watch::Sender<usize>>,
    /// Reads the channel; stopped when the listener is dropped.
    reader: JoinHandle<()>,
    /// Sends heartbeats when the manager asks for them; stopped on drop.
    heartbeat: Option<JoinHandle<()>>,
    /// Reports closed connections (`CLOSED=<n>`); stopped on drop.
    closes: JoinHandle<()>,
}

impl Listener {
    /// Takes the channel the manager gave this process
    /// (`SOCKHERD_CHANNEL_FD`), and sends heartbeats if it asks for them
    /// (`SOCKHERD_HEARTBEAT_USEC`). Must be called inside a tokio runtime.
    ///
    /// Succeeds once per process; see [the crate docs](crate#one-owner-of-the-channel)
    /// for what is checked first. A failed check leaves the descriptor as it
    /// was.
    pub fn from_env() -> io::Result<Listener> {
        use protocol::{SOCKHERD_CHANNEL_FD, SOCKHERD_HEARTBEAT_USEC};
        let taken = || {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the sockherd channel was already taken: call Listener::from_env once per process",
            )
        };
        if TAKEN.load(Ordering::Acquire) {
            return Err(taken());
        }
        let value = std::env::var(SOCKHERD_CHANNEL_FD).map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{SOCKHERD_CHANNEL_FD} is not set: run this program under `sockherd serve`"
                ),
            )
        })?;
        let fd: RawFd = value.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{SOCKHERD_CHANNEL_FD}={value:?} is not a descriptor number"),
            )
        })?;
        let version = negotiate(
            std::env::var_os(protocol::SOCKHERD_PROTOCOL),
            std::env::var_os(protocol::SOCKHERD_PROTOCOL_MAX),
        )?;
        channel::check(fd, &format!("{SOCKHERD_CHANNEL_FD}={fd}"))?;
        in_runtime()?;
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(taken());
        }
        // SAFETY: the manager gave this descriptor to this process alone, it
        // was just checked to be an open seqpacket socket, and TAKEN makes
        // this the only place that ever takes it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let heartbeat = std::env::var(SOCKHERD_HEARTBEAT_USEC)
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(Duration::from_micros);
        Listener::start(owned, heartbeat, version)
    }

    /// Takes a channel you own: one end of a `SOCK_SEQPACKET` socket pair
    /// whose other end speaks for the manager (a test can play the manager
    /// this way), in protocol version 1. Reads no environment and sends no
    /// heartbeats by itself. Must be called inside a tokio runtime. On error
    /// the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        Listener::from_fd_speaking(fd, protocol::FIRST_VERSION)
    }

    /// Like [`Listener::from_fd`], for a manager that speaks protocol
    /// versions up to `manager_max` (its `SOCKHERD_PROTOCOL_MAX`): the
    /// listener speaks the newest version both speak, and says so with its
    /// `READY=1` (`PROTOCOL=2`).
    pub fn from_fd_speaking(fd: OwnedFd, manager_max: u32) -> io::Result<Listener> {
        channel::check(
            fd.as_raw_fd(),
            &format!("the channel (fd {})", fd.as_raw_fd()),
        )?;
        in_runtime()?;
        Listener::start(
            fd,
            None,
            manager_max.clamp(protocol::FIRST_VERSION, PROTOCOL_VERSION),
        )
    }

    /// Starts the listener's tasks on a checked channel.
    fn start(fd: OwnedFd, heartbeat: Option<Duration>, version: u32) -> io::Result<Listener> {
        let raw = fd.as_raw_fd();
        nix::fcntl::fcntl(
            raw,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        nix::fcntl::fcntl(
            raw,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let channel = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?);
        let (conn_tx, conn_rx) = mpsc::channel(QUEUE);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let closes = Arc::new(Closes::new(Arc::clone(&channel)));
        let unread = Arc::new(watch::Sender::new(0));
        let reader = tokio::spawn(read_channel(
            Arc::clone(&channel),
            conn_tx,
            shutdown_tx,
            Arc::clone(&closes),
            Arc::clone(&unread),
        ));
        let heartbeat = heartbeat.map(|every| tokio::spawn(beat(Arc::clone(&channel), every)));
        Ok(Listener {
            channel,
            version,
            incoming: Mutex::new(conn_rx),
            shutdown: shutdown_rx,
            drained: watch::Sender::new(false),
            unread,
            reader,
            heartbeat,
            closes: tokio::spawn(connection::report_closes(closes)),
        })
    }

    /// The next connection; `None` once the manager asked this worker to shut
    /// down and every connection handed over before that has been returned
    /// (or once the manager is gone).
    ///
    /// An error is about one connection, which is already closed and
    /// reported (say the process is out of descriptors): call `accept` again
    /// for the next. An error reading the channel itself comes once, and
    /// `None` after it.
    pub async fn accept(&self) -> io::Result<Option<Connection>> {
        match self.incoming.lock().await.recv().await {
            Some(next) => next.map(Some),
            None => {
                self.drained.send_replace(true);
                Ok(None)
            }
        }
    }

    /// Resolves once the manager has asked this worker to shut down
    /// (connections handed over before that may still wait in
    /// [`Listener::accept`]).
    pub async fn shutdown_requested(&self) {
        let mut shutdown = self.shutdown.clone();
        let _ = shutdown.wait_for(|asked| *asked).await;
    }

    /// Whether the manager has asked this worker to shut down.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A future that owns what it needs, for axum's
    /// `with_graceful_shutdown`: it resolves once the manager has asked this
    /// worker to shut down, [`Listener::accept`] has returned every
    /// connection handed over before that (it returned `None`), and every
    /// accepted connection has been read from — or 1 s after that, for a
    /// client that connects and sends nothing. So a connection handed over
    /// just before the shutdown request still gets its first request served,
    /// rather than being taken for idle and closed. Connections turned into
    /// plain streams ([`Connection::into_tcp`]) are not waited for. It also
    /// resolves when the listener is dropped.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut drained = self.drained.subscribe();
        let mut unread = self.unread.subscribe();
        async move {
            let _ = drained.wait_for(|drained| *drained).await;
            let _ = tokio::time::timeout(FIRST_REQUEST_GRACE, unread.wait_for(|n| *n == 0)).await;
        }
    }

    /// Tells the manager this worker accepts connections now, and which
    /// protocol version it speaks when that is not the first.
    pub fn ready(&self) -> io::Result<()> {
        if self.version > protocol::FIRST_VERSION {
            self.notify(&format!("READY=1\nPROTOCOL={}", self.version))
        } else {
            self.notify("READY=1")
        }
    }

    /// The protocol version this listener speaks with its manager: the
    /// newest that both speak.
    pub fn protocol_version(&self) -> u32 {
        self.version
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
        channel::send(&self.channel, message)
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channel", &self.channel.get_ref().as_raw_fd())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
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

/// The version to speak, from `SOCKHERD_PROTOCOL` (the version the manager
/// starts in: this crate must speak it) and `SOCKHERD_PROTOCOL_MAX` (the
/// newest the manager speaks; unset, the same): the newest both speak.
fn negotiate(
    first: Option<std::ffi::OsString>,
    max: Option<std::ffi::OsString>,
) -> io::Result<u32> {
    use protocol::{FIRST_VERSION, SOCKHERD_PROTOCOL};
    let speaks = FIRST_VERSION..=PROTOCOL_VERSION;
    let Some(value) = first else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{SOCKHERD_PROTOCOL} is not set: this worker speaks sockherd protocol {FIRST_VERSION} to {PROTOCOL_VERSION}; run it under `sockherd serve`"),
        ));
    };
    let first = match value.to_str().and_then(|v| v.parse::<u32>().ok()) {
        Some(v) if speaks.contains(&v) => v,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{SOCKHERD_PROTOCOL}={:?}: this worker speaks sockherd protocol {FIRST_VERSION} to {PROTOCOL_VERSION} only",
                    value.to_string_lossy()
                ),
            ))
        }
    };
    // A maximum that is not a number, or below the first version, says
    // nothing more than the first version does.
    let max = max
        .and_then(|v| v.to_str()?.parse::<u32>().ok())
        .map_or(first, |max| max.max(first));
    if max > PROTOCOL_VERSION {
        return Ok(PROTOCOL_VERSION);
    }
    Ok(max)
}

/// Fails unless called inside a tokio runtime, which the listener's tasks need.
fn in_runtime() -> io::Result<()> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| {
            io::Error::other("a sockherd Listener needs a tokio runtime: create it inside one")
        })
}

async fn beat(channel: Arc<AsyncFd<OwnedFd>>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if channel::send(&channel, "WATCHDOG=1").is_err() {
            return;
        }
    }
}

/// The worker id the manager gave us (`SOCKHERD_WORKER_ID`), if any.
pub fn worker_id() -> Option<u32> {
    std::env::var(protocol::SOCKHERD_WORKER_ID)
        .ok()?
        .parse()
        .ok()
}

/// Reads the channel until the manager asks us to shut down or goes away,
/// queueing each connection for [`Listener::accept`].
async fn read_channel(
    channel: Arc<AsyncFd<OwnedFd>>,
    conns: mpsc::Sender<io::Result<Connection>>,
    shutdown: watch::Sender<bool>,
    closes: Arc<Closes>,
    unread: Arc<watch::Sender<usize>>,
) {
    let mut inbox = channel::Inbox::new();
    loop {
        let received = match channel.readable().await {
            Ok(mut guard) => match guard.try_io(|fd| inbox.receive(fd.get_ref().as_raw_fd())) {
                Ok(result) => result,
                Err(_would_block) => continue,
            },
            Err(e) => Err(e),
        };
        match received {
            Ok(channel::Received::Message(message)) => {
                if let Some(reports) = message.reports {
                    closes.set_reports(reports);
                }
                for (name, fd) in message.conns {
                    let conn = match fd {
                        Ok(fd) => Connection::new(fd, name, &closes, &unread),
                        Err(e) => {
                            // The manager counted it as handed over.
                            closes.closed();
                            Err(e)
                        }
                    };
                    if conns.send(conn).await.is_err() {
                        return;
                    }
                }
                // No more connections will come.
                if message.shutdown {
                    let _ = shutdown.send(true);
                    return;
                }
            }
            // The manager is gone: no more connections will come.
            Ok(channel::Received::Closed) => {
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

#[cfg(test)]
mod tests {
    use super::negotiate;

    fn speak(first: Option<&str>, max: Option<&str>) -> Option<u32> {
        negotiate(first.map(Into::into), max.map(Into::into)).ok()
    }

    #[test]
    fn speaks_the_newest_version_both_sides_speak() {
        // A manager from before version 2 sets no maximum.
        assert_eq!(speak(Some("1"), None), Some(1));
        assert_eq!(speak(Some("1"), Some("2")), Some(2));
        // A newer manager: this crate's newest.
        assert_eq!(speak(Some("1"), Some("9")), Some(2));
        // A maximum that says nothing usable is the first version.
        assert_eq!(speak(Some("1"), Some("two")), Some(1));
        assert_eq!(speak(Some("2"), Some("1")), Some(2));
        // A first version this crate does not speak is refused.
        assert_eq!(speak(Some("3"), Some("3")), None);
        assert_eq!(speak(Some("0"), None), None);
        assert_eq!(speak(None, Some("2")), None);
    }
}
