//! The numbers and names of the worker protocol (`docs/protocol.md` in the
//! sockherd repository), defined once for both sides: the manager sets and
//! checks what the worker reads here. Plain constants, no tokio types, so
//! that the manager can depend on this crate with `default-features = false`
//! for this module alone.

use std::os::fd::RawFd;

/// The newest protocol version this crate speaks. It speaks every version
/// from [`FIRST_VERSION`] up to this one.
pub const PROTOCOL_VERSION: u32 = 2;

/// The version every conversation starts in, and so the value of
/// [`SOCKHERD_PROTOCOL`]: a worker speaks it until both sides have said that
/// they speak a later one (the manager in [`SOCKHERD_PROTOCOL_MAX`], the
/// worker with `PROTOCOL=<n>` beside its `READY=1`).
pub const FIRST_VERSION: u32 = 1;

/// The most connections one message of version 2 carries: the kernel's
/// limit on descriptors in one `SCM_RIGHTS` message (`SCM_MAX_FD`). A
/// worker receives with room for this many.
pub const MAX_CONNS_PER_MESSAGE: usize = 253;

/// The largest message either side may send on the channel, in bytes.
pub const MAX_MESSAGE: usize = 4096;

/// The descriptor a native worker finds its channel at.
pub const CHANNEL_FD: RawFd = 3;

/// The channel's descriptor number, in decimal ([`CHANNEL_FD`]).
pub const SOCKHERD_CHANNEL_FD: &str = "SOCKHERD_CHANNEL_FD";

/// The protocol version the conversation starts in, in decimal
/// ([`FIRST_VERSION`]); a worker that does not speak it refuses to start.
pub const SOCKHERD_PROTOCOL: &str = "SOCKHERD_PROTOCOL";

/// The newest protocol version the manager speaks, in decimal; unset means
/// [`SOCKHERD_PROTOCOL`]'s (a manager from before version 2).
pub const SOCKHERD_PROTOCOL_MAX: &str = "SOCKHERD_PROTOCOL_MAX";

/// The worker's id, `0` … `N-1`: it belongs to the slot, so a replacement keeps it.
pub const SOCKHERD_WORKER_ID: &str = "SOCKHERD_WORKER_ID";

/// The app's name: `--name`, or the worker program's file name.
pub const SOCKHERD_APP: &str = "SOCKHERD_APP";

/// How often to send `WATCHDOG=1`, in µs; set only when the manager checks heartbeats.
pub const SOCKHERD_HEARTBEAT_USEC: &str = "SOCKHERD_HEARTBEAT_USEC";

/// The worker's id again, under the name PM2 gives it, for existing apps.
pub const NODE_APP_INSTANCE: &str = "NODE_APP_INSTANCE";
