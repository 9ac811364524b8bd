//! Transports: how the manager talks to a worker, whatever the worker speaks.
//!
//! The pool and dispatch deal with every worker the same way; what differs is
//! the wire. A [`Transport`] is the manager's end of one worker's channel and
//! does the four things they need: offer a connection ([`Transport::offer`],
//! or [`Transport::send_conns`] for those it takes in batches),
//! report what the worker says as [`Notice`]s ([`Transport::recv`]), ask it to
//! stop ([`Transport::ask_to_stop`]), and nothing else. There are three:
//!
//! - [`Transport::Native`]: sockherd's own protocol ([`super::channel`]); a
//!   connection is handed over in one datagram (in version 2, every
//!   connection a wake-up has for it in one datagram) and the manager's
//!   copy is closed at once.
//! - [`Transport::Node`]: an unmodified Node.js app as a cluster worker or a
//!   plain `child_process` IPC child ([`super::node`]). It holds the connection
//!   until the app took it, takes one at a time, and hands connections back
//!   to dispatch when the app refuses them or dies holding one.
//! - [`Transport::Notify`]: a shared-accept worker (`--policy none`,
//!   [`super::shared`]). It accepts by itself, so it is never offered a
//!   connection; it talks `sd_notify` on a socket of its own and is asked to
//!   stop with SIGTERM.
//!
//! Which one a worker gets is the app's [`Protocol`], decided once at start-up.
//! [`Protocol::wire`] says what a new worker inherits; [`Transport::open`]
//! wraps the manager's end of it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use nix::sys::signal::Signal;
use nix::sys::socket::SockType;
use tokio::sync::Notify;

use super::carried::{Carried, CarriedProtocol};
use super::channel::{self, Channel, Reports, SendError};
use super::node;
use super::notice::{Garbage, Notice};
use super::peer::{Peer, Refused};
use super::protocol::{
    CHANNEL_FD, FIRST_VERSION, PROTOCOL_VERSION, SOCKHERD_CHANNEL_FD, SOCKHERD_PROTOCOL,
    SOCKHERD_PROTOCOL_MAX,
};
use super::shared::{self, Shared};
use super::socket::Socket;

/// What the workers of this app speak.
#[derive(Debug, Clone)]
pub(crate) enum Protocol {
    /// sockherd's own channel (`docs/protocol.md`).
    Native,
    /// Node.js IPC, as a cluster primary or as a `child_process` parent.
    Node(Rc<node::App>),
    /// `sd_notify` on a socket per worker; the workers share the listening
    /// sockets and accept by themselves (`--policy none`).
    Shared(Rc<Shared>),
}

/// What a new worker is given, and the manager's end of it.
pub(crate) struct Wiring {
    /// The manager's end, for [`Transport::open`].
    pub end: End,
    /// Descriptors the worker inherits at fd 3, 4, … in this order.
    pub inherit: Vec<RawFd>,
    /// Descriptors among `inherit` that the manager holds only until the
    /// worker has its copy (the worker's end of its channel).
    pub handed: Vec<OwnedFd>,
    /// Variables that tell the worker what it inherited.
    pub env: Vec<(&'static str, OsString)>,
    /// The worker must be told its own pid (`LISTEN_PID`), which only it can
    /// know: it is started through `sockherd __exec-listen`.
    pub own_pid: bool,
}

/// The manager's end of a worker's wiring.
pub(crate) enum End {
    /// A channel (native or Node.js): non-blocking, close-on-exec.
    Channel(OwnedFd),
    /// The worker's `NOTIFY_SOCKET`.
    Notify(shared::Inbox),
}

impl Protocol {
    /// Prepares what worker `id` inherits: its channel at fd 3 and the
    /// variables naming it, or the shared listening sockets and a notify socket.
    pub(crate) fn wire(&self, id: u32) -> io::Result<Wiring> {
        let (manager, worker, env) = match self {
            Protocol::Native => {
                let (manager, worker) = channel::pair(SockType::SeqPacket)?;
                let env = vec![
                    (SOCKHERD_CHANNEL_FD, CHANNEL_FD.to_string().into()),
                    (SOCKHERD_PROTOCOL, FIRST_VERSION.to_string().into()),
                    (SOCKHERD_PROTOCOL_MAX, PROTOCOL_VERSION.to_string().into()),
                ];
                (manager, worker, env)
            }
            Protocol::Node(app) => {
                // Node's IPC channel is a stream: libuv creates and expects one.
                let (manager, worker) = channel::pair(SockType::Stream)?;
                (manager, worker, app.worker_env(id, CHANNEL_FD))
            }
            Protocol::Shared(shared) => {
                let wiring = shared.wire(id)?;
                return Ok(Wiring {
                    end: End::Notify(wiring.inbox),
                    inherit: wiring.inherit,
                    handed: Vec::new(),
                    env: wiring.env,
                    own_pid: true,
                });
            }
        };
        Ok(Wiring {
            end: End::Channel(manager),
            inherit: vec![worker.as_raw_fd()],
            handed: vec![worker],
            env,
            own_pid: false,
        })
    }

    /// The protocol as the next image rebuilds it.
    pub(crate) fn carry(&self) -> CarriedProtocol {
        match self {
            Protocol::Native => CarriedProtocol::Native,
            Protocol::Node(app) => app.carry(),
            Protocol::Shared(_) => CarriedProtocol::Shared,
        }
    }

    /// The name shown in logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Node(app) => app.mode_name(),
            Protocol::Shared(_) => "sd_notify, shared accept",
        }
    }
}

/// The manager's end of one worker's channel.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    Native(Rc<Channel>),
    Node(Rc<node::Link>),
    Notify(Rc<shared::Watch>),
}

impl Transport {
    /// Wraps the manager's end of a freshly spawned worker's wiring. A Node.js
    /// worker is matched against the listening `sockets` and wakes accept
    /// loops through `capacity` when it can take a connection again.
    pub(crate) fn open(
        protocol: &Protocol,
        end: End,
        peer: Peer,
        sockets: &[Rc<Socket>],
        capacity: &Rc<Notify>,
    ) -> io::Result<Transport> {
        match (protocol, end) {
            (Protocol::Native, End::Channel(fd)) => {
                Ok(Transport::Native(Rc::new(Channel::new(fd)?)))
            }
            (Protocol::Node(app), End::Channel(fd)) => {
                Ok(Transport::Node(Rc::new(node::Link::new(
                    Rc::clone(app),
                    fd,
                    peer,
                    sockets.to_vec(),
                    Rc::clone(capacity),
                )?)))
            }
            (Protocol::Shared(_), End::Notify(inbox)) => {
                Ok(Transport::Notify(Rc::new(shared::Watch::new(inbox, peer))))
            }
            _ => Err(io::Error::other(
                "the worker was wired for another protocol",
            )),
        }
    }

    /// What the next image of the manager needs to go on with this worker
    /// (a re-exec, [`super::carried`]), or why it cannot be carried now.
    pub(crate) fn carry(&self) -> Result<Carried, String> {
        match self {
            Transport::Native(channel) => Ok(channel.carry()),
            Transport::Node(link) => link.carry(),
            Transport::Notify(watch) => Ok(watch.carry()),
        }
    }

    /// The transport an earlier image carried, over descriptors this image
    /// inherited and owns from now on.
    pub(crate) fn adopt(
        protocol: &Protocol,
        carried: Carried,
        peer: Peer,
        sockets: &[Rc<Socket>],
        capacity: &Rc<Notify>,
    ) -> io::Result<Transport> {
        // SAFETY: the fd was inherited across the exec for this transport
        // alone, and nothing else in this image owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(carried.fd()) };
        match (protocol, carried) {
            (
                Protocol::Native,
                Carried::Native {
                    version,
                    told_each,
                    wanted_each,
                    ..
                },
            ) => Ok(Transport::Native(Rc::new(Channel::adopt(
                owned,
                version,
                told_each,
                wanted_each,
            )?))),
            (
                Protocol::Node(app),
                Carried::Node {
                    servers,
                    seq,
                    ready,
                    shim,
                    ..
                },
            ) => Ok(Transport::Node(Rc::new(node::Link::adopt(
                Rc::clone(app),
                owned,
                (servers, seq, ready, shim),
                peer,
                sockets.to_vec(),
                Rc::clone(capacity),
            )?))),
            (Protocol::Shared(_), Carried::Notify { path, .. }) => Ok(Transport::Notify(Rc::new(
                shared::Watch::new(shared::Inbox::adopt(owned, path)?, peer),
            ))),
            _ => Err(io::Error::other(
                "the worker was carried for another protocol",
            )),
        }
    }

    /// Whether connections for it are gathered and handed over together
    /// ([`Transport::send_conns`]) rather than offered one by one
    /// ([`Transport::offer`]): a native channel's are.
    pub(crate) fn batches(&self) -> bool {
        matches!(self, Transport::Native(_))
    }

    /// Offers `conn`, accepted on `socket`, without waiting, to a transport
    /// that does not batch. On success the transport owns it; otherwise it
    /// comes back with the reason.
    pub(crate) fn offer(&self, conn: OwnedFd, socket: &Socket) -> Result<(), (OwnedFd, Refused)> {
        match self {
            Transport::Node(link) => link.offer(conn, socket),
            // It accepts on the listening sockets by itself; a native
            // channel is handed its connections by `send_conns`.
            Transport::Notify(_) | Transport::Native(_) => Err((conn, Refused::NotListening)),
        }
    }

    /// Hands `fds`, accepted on `socket`, to a transport that batches,
    /// without waiting; no more than `socket.batch` of them. Returns how many
    /// it took, from the first on, and why it did not take the next. The
    /// caller keeps (and closes) its copies either way.
    pub(crate) fn send_conns(&self, fds: &[RawFd], socket: &Socket) -> (usize, Option<Refused>) {
        match self {
            Transport::Native(channel) => match channel.send_conns(fds, &socket.message) {
                (sent, None) => (sent, None),
                (sent, Some(SendError::WouldBlock)) => (sent, Some(Refused::Busy)),
                (sent, Some(SendError::Gone)) => (sent, Some(Refused::Gone)),
            },
            Transport::Node(_) | Transport::Notify(_) => (0, Some(Refused::NotListening)),
        }
    }

    /// Tells the worker whether the policy goes by its closes (least-conn),
    /// so that it reports each at once, or only counts them, so that it may
    /// gather them: a native worker of protocol version 2 is told; the
    /// others report the same either way.
    pub(crate) fn need_closes(&self, now: bool) {
        if let Transport::Native(channel) = self {
            channel.set_reports(if now { Reports::Each } else { Reports::Lazy });
        }
    }

    /// Asks the worker to finish what it has and exit; the pool kills it at
    /// the kill timeout if it does not. A native worker is asked on its
    /// channel (`SHUTDOWN=1`); a Node.js or shared-accept worker gets
    /// `signal` (`--kill-signal`), as the app expects from its process manager.
    pub(crate) fn ask_to_stop(&self, signal: Signal) {
        match self {
            // A full channel means the worker is not reading: it gets the kill timeout.
            Transport::Native(channel) => {
                let _ = channel.try_send(b"SHUTDOWN=1");
            }
            Transport::Node(link) => node::Link::ask_to_stop(link, signal),
            Transport::Notify(watch) => watch.ask_to_stop(signal),
        }
    }

    /// What "ready" means for this worker, and what a slow starter needs:
    /// said when it misses `--ready-timeout`.
    pub(crate) fn ready_hint(&self) -> &'static str {
        match self {
            Transport::Native(_) => {
                "a worker is ready when it says READY=1 on its channel; one that starts \
                 slower needs a longer --ready-timeout"
            }
            Transport::Node(link) => link.ready_hint(),
            Transport::Notify(_) => {
                "a shared-accept worker is ready when it sends READY=1 to its \
                 NOTIFY_SOCKET; one that starts slower needs a longer --ready-timeout"
            }
        }
    }

    /// Whether a stop may reach the worker as a signal (`--kill-signal`):
    /// not a native worker, which is asked on its channel.
    pub(crate) fn stops_by_signal(&self) -> bool {
        !matches!(self, Transport::Native(_))
    }

    /// How many connections a stopping worker still holds, when that can be
    /// known: a native worker reports every close (`CLOSED=`), so `counted`
    /// (handed over, not reported closed) is right; a Node.js worker's shim
    /// counts its servers' connections while it stops; a shared-accept
    /// worker's connections are its own.
    pub(crate) fn holding(&self, counted: u64) -> Option<u64> {
        match self {
            Transport::Native(_) => Some(counted),
            Transport::Node(link) => link.open_reported(),
            Transport::Notify(_) => None,
        }
    }

    /// The next thing the worker said that the pool cares about. `Ok(None)`
    /// when the worker closed its end (it exited).
    pub(crate) async fn recv(&self) -> io::Result<Option<Result<Notice, Garbage>>> {
        match self {
            Transport::Native(channel) => channel.recv().await,
            Transport::Node(link) => link.recv().await,
            Transport::Notify(watch) => watch.recv().await,
        }
    }
}
