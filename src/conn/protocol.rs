//! The native protocol's constants (`docs/protocol.md`), defined once for the
//! manager and the worker crate: the manager sets what `sockherd-worker`
//! reads, so both take them from `sockherd_worker::protocol`.

pub use sockherd_worker::protocol::{
    CHANNEL_FD, FIRST_VERSION, MAX_CONNS_PER_MESSAGE, MAX_MESSAGE, NODE_APP_INSTANCE,
    PROTOCOL_VERSION, SOCKHERD_APP, SOCKHERD_CHANNEL_FD, SOCKHERD_HEARTBEAT_USEC,
    SOCKHERD_PROTOCOL, SOCKHERD_PROTOCOL_MAX, SOCKHERD_WORKER_ID,
};
