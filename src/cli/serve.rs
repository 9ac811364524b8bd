//! The options of `sockherd serve`, and of the hidden `__exec-listen` that
//! starts a shared-accept worker.

use std::ffi::OsString;
use std::time::Duration;

use clap::Args;

use nix::sys::signal::Signal;

use super::values::{parse_duration, parse_heartbeat, parse_signal, parse_size, parse_workers};
use crate::bus::plan::BusArgs;
use crate::conn::node::ProtocolArg;
use crate::conn::policy::Policy;
use crate::log::Target;
use crate::sockets::listener::ListenAddr;

#[derive(Debug, Clone, Args)]
pub(crate) struct Serve {
    /// The app's name: D-Bus name, journal field SOCKHERD_APP, SOCKHERD_APP for workers.
    /// Defaults to the worker program's file name.
    #[arg(long)]
    pub name: Option<String>,

    /// Listen here when systemd passed no sockets: IP:PORT, [IPv6]:PORT, a
    /// Unix socket path, or udp:IP:PORT (a UDP socket, served under --policy
    /// none), optionally prefixed with NAME=. Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<ListenAddr>,

    /// Serve Prometheus metrics here (HTTP, path /metrics) when systemd passed
    /// no socket named `metrics`: IP:PORT, [IPv6]:PORT or a socket path.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<ListenAddr>,

    /// Who gets each connection: rr (round-robin), least-conn (fewest open
    /// connections), ip-hash (the same client address, the same worker) or
    /// none (every worker inherits the sockets and accepts by itself; see
    /// docs/policies.md).
    #[arg(long, value_enum, default_value_t = Policy::RoundRobin)]
    pub policy: Policy,

    /// Number of workers; 0 means one per CPU.
    #[arg(long, short = 'w', default_value_t = 0, value_parser = parse_workers)]
    pub workers: u32,

    /// `Scale` refuses to go above this many workers.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = parse_workers)]
    pub max_workers: u32,

    /// Workers that must be ready before systemd is told READY=1 (default: all of them).
    #[arg(long, value_name = "N")]
    pub min_ready: Option<u32>,

    /// Workers replaced at once during a rolling reload.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub reload_batch: u32,

    /// A new worker that has not reported ready within this is killed and restarted.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// How long a worker may take to finish after being asked to stop, before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub kill_timeout: Duration,

    /// The signal that asks a Node.js or `--policy none` worker to stop:
    /// SIGTERM, SIGINT (what PM2 sends), SIGQUIT, SIGHUP, SIGUSR2 or SIGWINCH.
    /// The app's handler runs with its servers still open and has the whole
    /// --kill-timeout.
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal)]
    pub kill_signal: Signal,

    /// Crashes of one worker slot within --restart-window after which it gives up.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_restarts: u32,

    /// The sliding window for --max-restarts.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub restart_window: Duration,

    /// A worker that has sent a heartbeat (WATCHDOG=1) and then none for this
    /// long is hung: it gets SIGABRT, then SIGKILL, and is replaced. Workers
    /// are told half of it in SOCKHERD_HEARTBEAT_USEC.
    #[arg(long, value_name = "DURATION", value_parser = parse_heartbeat)]
    pub heartbeat_timeout: Option<Duration>,

    /// Replace a worker whose memory (RSS) exceeds SIZE (e.g. 512M, 1G), new
    /// before old; kill it outright past twice SIZE. Sampled every second.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,

    /// A TOML file with any of these flags (see docs/config.md); re-read on
    /// every reload. What it sets wins over the flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Where logs go: the journal when run by systemd, stderr otherwise.
    #[arg(long, value_enum, default_value_t = Target::Auto)]
    pub log: Target,

    #[command(flatten)]
    pub bus: BusArgs,

    /// Log debug messages too.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// How workers are talked to (Node.js apps run unmodified).
    #[command(flatten)]
    pub node: NodeArgs,

    /// The worker command and its arguments (or `command` in --config).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The command-line options for Node.js workers.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeArgs {
    /// What the workers speak: auto, native, node (cluster) or node-ipc.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Auto)]
    pub protocol: ProtocolArg,

    /// Node.js workers: ready on `process.send('ready')` rather than on
    /// `listening` (PM2's wait_ready).
    #[arg(long)]
    pub wait_ready: bool,

    /// Node.js workers: send the message 'shutdown' when asking a worker to
    /// stop (PM2's shutdown_with_message).
    #[arg(long)]
    pub shutdown_message: bool,
}

/// The arguments of the hidden `__exec-listen` subcommand.
#[derive(Debug, Args)]
pub(crate) struct ExecListen {
    /// The worker program and its arguments, run with the pid we have.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}
