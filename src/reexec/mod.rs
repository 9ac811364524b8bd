//! Upgrading the manager in place: the same process, new code.
//!
//! A package upgrade replaces the binary on disk; the running manager goes
//! on with the old code until it is told to re-exec (SIGUSR2, D-Bus
//! `Reexec()`, `sockherd upgrade`). Then it `execve`s the binary at its own
//! path, as the same process: the same PID, so systemd sees a reload
//! (`RELOADING=1` … `READY=1`) and nothing else, and the same children, so
//! every worker stays as it is — its process, its channel, its counters —
//! and the listening sockets are never closed: a connection arriving
//! meanwhile waits in the kernel's queue.
//!
//! The story in order: the new binary is asked whether it can take over
//! ([`check`]); the accept loops park and the pool is found steady
//! ([`trigger`]); the state is written to an [`image`] that crosses the exec
//! with every descriptor it names ([`exec`]); the next image reads it before
//! anything else, takes over the sockets, the pool and its workers
//! (`commands/serve.rs`), logs one line with how long it took, and tells
//! systemd it is ready. What version is running is [`version`].

mod check;
mod exec;
mod image;
mod trigger;
mod version;

pub(crate) use check::answer as answer_check;
pub(crate) use exec::release_signals;
pub(crate) use image::{monotonic_usec, Image};
pub(crate) use trigger::{channel, run, Carrier, Trigger};
pub(crate) use version::{image_started_usec, image_starts, version};
