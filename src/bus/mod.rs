//! The manager on D-Bus: `io.sockherd.<app>`, object `/io/sockherd/Manager`,
//! interface `io.sockherd.Manager1` (reference: `docs/dbus.md`).
//!
//! It is a thin translation layer over [`crate::pool::report`]: property
//! reads come from the pool's snapshot, `PropertiesChanged` is emitted
//! whenever that snapshot changes, the `WorkerStarted`/`WorkerExited`/`Reloaded`
//! signals are the pool's events, and every method is one request
//! ([`interface`], served by [`service`]). Nothing here owns state of its own.
//!
//! Which bus: `--bus system|session|none`, or `--bus auto` (the default), which
//! takes the system bus when running as a systemd system service, the session
//! bus when one is advertised, and no bus otherwise ([`plan`]). The bus is the
//! control plane only: when it cannot be reached the manager logs it (a warning
//! in auto mode, an error when the bus was asked for) and keeps serving
//! connections.
//!
//! Anyone may read; only root, the manager's own user and members of
//! `--control-group` may call the methods that change something ([`access`]).
//! The bus policy in `packaging/dbus/io.sockherd.conf` adds the other half:
//! only root and the package's user `sockherd` may own `io.sockherd.*` on the
//! system bus.

pub(crate) mod access;
pub(crate) mod error;
pub(crate) mod interface;
pub(crate) mod plan;
pub(crate) mod service;
