//! sockherd: a cluster manager that lives inside systemd.
//!
//! # The life of a connection
//!
//! systemd owns the listening sockets (`app.socket`) and starts the manager
//! with them on the first connection ([`activation`]); without systemd the
//! manager binds `--listen` addresses itself ([`listener`]). The manager forks a
//! pool of workers ([`spawn`], [`pool`]), each with its own channel, a
//! `SOCK_SEQPACKET` socketpair ([`channel`]). One task per socket accepts
//! ([`accept`]) and hands every connection to a ready worker chosen by the
//! dispatch [`policy`] (round-robin by default; least-conn, ip-hash), by
//! sending its fd over that channel ([`dispatch`]). The worker serves it; the
//! manager has already closed its own copy. Under `--policy none` the workers
//! inherit the sockets and accept by themselves ([`shared`]).
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
//! `sockherd serve` ([`cli`], [`config`], [`serve`]) checks its input, takes
//! its sockets and starts the pool. The pool ([`pool`]) owns every worker and
//! tells the rest of the manager what happens through [`report`]: systemd
//! hears `READY=1`, `STATUS=`, `RELOADING=1` and `STOPPING=1` ([`notify`]) and
//! `WATCHDOG=1` only while the pool's loop answers ([`watchdog`]); D-Bus
//! callers read properties and call `Scale` or `Reload` ([`bus`]), which the
//! `sockherd status|scale|reload|restart` commands wrap ([`control`]);
//! Prometheus scrapes it ([`metrics`], figures from [`usage`]). Logs go to the
//! journal with per-worker fields ([`journal`], [`output`]).
//!
//! SIGHUP, `systemctl reload` or D-Bus `Reload` roll the workers over, new
//! before old. SIGTERM or SIGINT ([`shutdown`]): stop accepting, drain every
//! worker in parallel, kill what is left at the kill timeout, exit 0. If every
//! slot gave up, the manager exits non-zero so systemd's restart policy takes
//! over. Its workers never outlive it, even when it is SIGKILLed.

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
pub mod policy;
pub mod pool;
pub mod report;
pub mod serve;
pub mod shared;
pub mod shutdown;
pub mod spawn;
pub mod transport;
pub mod unit;
pub mod usage;
pub mod watchdog;
pub mod worker;
