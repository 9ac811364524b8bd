//! sockherd: a cluster manager that lives inside systemd.
//!
//! # The life of a connection
//!
//! systemd owns the listening sockets (`app.socket`) and starts the manager
//! with them on the first connection ([`activation`]); without systemd the
//! manager binds `--listen` addresses itself ([`listener`]). The manager forks a
//! pool of workers ([`spawn`], [`pool`]), each with its own channel, a
//! `SOCK_SEQPACKET` socketpair ([`channel`]). One task per socket accepts
//! ([`accept`]) and hands every connection to the next ready worker, in
//! round-robin order, by sending its fd over that channel ([`dispatch`]). The
//! worker serves it; the manager has already closed its own copy.
//!
//! Workers need not speak sockherd's protocol: an unmodified Node.js app runs
//! as cluster workers of the manager itself, which speaks Node's cluster IPC
//! ([`node`]). [`transport`] is where the two meet.
//!
//! # The life of a worker
//!
//! A worker starts, says `READY=1` and joins the dispatch ring; it may send
//! `WATCHDOG=1` heartbeats and announce `STOPPING=1`. When it is chosen to go it
//! leaves the ring first, is sent `SHUTDOWN=1`, finishes what it has and exits;
//! past the kill timeout it is killed. When it crashes, its slot restarts it
//! under the same id after a growing delay, and gives up after too many
//! crashes in a window ([`backoff`]). [`worker`] draws the whole state machine.
//!
//! # The life of the manager
//!
//! SIGTERM or SIGINT ([`shutdown`]): stop accepting, drain every worker in
//! parallel, kill what is left at the kill timeout, exit 0. If every slot gave
//! up, the manager exits non-zero so systemd's restart policy takes over. Its
//! workers never outlive it, even when it is SIGKILLed. Logs go to the journal
//! with per-worker fields ([`journal`], [`output`]).

pub mod accept;
pub mod activation;
pub mod backoff;
pub mod bus;
pub mod channel;
pub mod cli;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod journal;
pub mod listener;
pub mod manual;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod output;
pub mod pool;
pub mod report;
pub mod serve;
pub mod shutdown;
pub mod spawn;
pub mod transport;
pub mod unit;
pub mod usage;
pub mod watchdog;
pub mod worker;
