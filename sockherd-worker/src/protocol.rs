//! The numbers and names of the worker protocol (`docs/protocol.md` in the
//! sockherd repository), defined once for both sides: the manager sets and
//! checks what the worker reads here. Plain constants, no tokio types, so
//! that the manager can depend on this crate with `default-features = false`
//! for this module alone.

use std::os::fd::RawFd;

/// The protocol version this crate speaks, and the only value of
/// [`SOCKHERD_PROTOCOL`] it accepts.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message either side may send on the channel, in bytes.
pub const MAX_MESSAGE: usize = 4096;

/// The descriptor a native worker finds its channel at.
pub const CHANNEL_FD: RawFd = 3;

/// The channel's descriptor number, in decimal ([`CHANNEL_FD`]).
pub const SOCKHERD_CHANNEL_FD: &str = "SOCKHERD_CHANNEL_FD";

/// The protocol version the manager speaks, in decimal ([`PROTOCOL_VERSION`]).
pub const SOCKHERD_PROTOCOL: &str = "SOCKHERD_PROTOCOL";

/// The worker's id, `0` … `N-1`: it belongs to the slot, so a replacement keeps it.
pub const SOCKHERD_WORKER_ID: &str = "SOCKHERD_WORKER_ID";

/// The app's name: `--name`, or the worker program's file name.
pub const SOCKHERD_APP: &str = "SOCKHERD_APP";

/// How often to send `WATCHDOG=1`, in µs; set only when the manager checks heartbeats.
pub const SOCKHERD_HEARTBEAT_USEC: &str = "SOCKHERD_HEARTBEAT_USEC";

/// The worker's id again, under the name PM2 gives it, for existing apps.
pub const NODE_APP_INSTANCE: &str = "NODE_APP_INSTANCE";
