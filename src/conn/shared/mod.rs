//! Shared accept (`--policy none`): the workers accept, the manager only watches.
//!
//! Every worker inherits the listening sockets exactly as systemd would pass
//! them to a service: at fd 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and
//! `LISTEN_PID` set, the last to the *worker's* pid, as `sd_listen_fds(3)`
//! checks. Each worker gets a `NOTIFY_SOCKET` of its own, an `AF_UNIX`
//! datagram socket the manager reads ([`inbox`]): `READY=1`, `WATCHDOG=1`,
//! `STOPPING=1` and `STATUS=` from an unmodified `sd_notify` speaker become
//! its readiness, heartbeat and going-away, as on the native channel (the
//! format is the same, so [`crate::conn::notice::parse_notice`] reads both). Any
//! socket-activation-aware server runs this way unmodified, and the manager is
//! out of the connection path: no accept loops run for these sockets.
//!
//! **`LISTEN_PID`.** The worker's pid is known only after `fork`, and
//! `std::process::Command` builds the child's environment before it forks, so
//! `setenv` in `pre_exec` would change a copy nobody uses. The worker is
//! therefore started through this very binary: `/proc/self/exe __exec-listen
//! -- PROGRAM ARGS…` ([`exec_listen`]) sets `LISTEN_PID` (and
//! `WATCHDOG_PID`, when heartbeats are checked) to its own pid and `exec`s the
//! program in place: the same process, so the pid is right, and the process
//! group, parent-death signal and inherited descriptors set up by
//! [`crate::pool::spawn`] all survive. The alternatives were worse: building `envp`
//! and calling `execve` by hand inside `pre_exec` would duplicate (and
//! silently bypass) everything `Command` does with the environment.
//! `/proc/self/exe` still names our binary after a package upgrade replaced
//! the file on disk. The cost is one extra `exec` per worker start.
//!
//! **Stopping.** A shared-accept worker has no channel to be asked on: it gets
//! SIGTERM, as systemd would send it, and SIGKILL at the kill timeout.
//!
//! **Blocking sockets.** The listening sockets are put in blocking mode here.
//! `O_NONBLOCK` lives on the open file description that systemd, the manager
//! and every worker share; a manager that dispatched before may have set it,
//! and a worker that accepts in blocking mode (Python's `socket.accept()`)
//! would then get `EAGAIN` instead of a connection.

mod exec_listen;
mod inbox;
mod sockets;
mod watch;

pub(crate) use exec_listen::{exec_listen, EXEC_LISTEN};
pub(crate) use inbox::Inbox;
pub(crate) use sockets::Shared;
pub(crate) use watch::Watch;
