//! The native protocol's constants, shared by the manager's channel and its
//! parser of what workers say (`docs/protocol.md`).

/// The fd number of the channel in every worker (`SOCKHERD_CHANNEL_FD`), and
/// of the first listening socket of a shared-accept worker
/// (`SD_LISTEN_FDS_START`).
pub(crate) const CHANNEL_FD: i32 = 3;

/// The version of the protocol described in `docs/protocol.md`, given to
/// workers as `SOCKHERD_PROTOCOL`.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// The largest message either side may send. A worker that sends a larger one
/// is misbehaving; we read one byte more than this to notice.
pub const MAX_MESSAGE: usize = 4096;
