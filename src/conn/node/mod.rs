//! Node.js workers: the manager as the cluster primary of unmodified apps.
//!
//! `sockherd serve -- node app.js` runs `app.js` as Node cluster workers with no
//! Node primary in between: the manager speaks Node's own IPC protocol (JSON
//! lines on an `AF_UNIX` stream socketpair, fds by `SCM_RIGHTS`; see
//! `docs/node.md`). Each worker is started with `NODE_CHANNEL_FD=3`,
//! `NODE_CHANNEL_SERIALIZATION_MODE=json` and, in cluster mode,
//! `NODE_UNIQUE_ID`, which makes Node route the app's `server.listen()` to us.
//!
//! The app's `listen(port)` becomes a `queryServer`, answered in round-robin
//! mode: the manager owns the listening sockets (systemd's or `--listen`), so it
//! matches the request to one of them by port and address ([`listen`]) and
//! never binds anything itself. A worker then receives connections only from
//! the sockets it listens on, each as a `newconn` handle, one at a time, and
//! the manager keeps its copy until the app says it took it; a refused
//! connection, or one held by a worker that died, is dispatched again.
//!
//! Two modes ([`Mode`]): `cluster` for apps that call `listen()` (the usual
//! case, detected from the command), and `ipc` for apps written against the
//! documented `child_process` API, which receive each connection as a
//! `net.Socket` in `process.on('message', (m, socket) => …)`.
//!
//! [`wire`] holds the message formats and framing, [`listen`] the socket
//! matching, [`Link`] one worker's channel at run time.

mod app;
mod carry;
mod link;
pub(crate) mod listen;
mod messages;
mod shim;
mod stop;
pub(crate) mod wire;

pub(crate) use app::{mode, App, Mode, ProtocolArg};
pub(crate) use link::Link;
pub(crate) use shim::Shim;
