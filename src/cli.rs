//! The command line: `sockherd serve` runs a cluster; `status`, `scale`,
//! `reload` and `restart` talk to one; `unit` writes the systemd units for
//! one; `completions` (and the hidden `manpage`) document them all.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::journal;
use crate::listener::ListenAddr;
use crate::node::NodeArgs;
use crate::policy::Policy;

#[derive(Debug, Parser)]
#[command(
    name = "sockherd",
    version,
    about = "A cluster manager that lives inside systemd"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pool of workers behind the listening sockets.
    Serve(Box<Serve>),
    #[command(flatten)]
    Control(crate::control::Command),
    /// Internal: how a `--policy none` worker is started. Sets `LISTEN_PID`
    /// (and `WATCHDOG_PID`) to this process's pid, then execs COMMAND in place.
    #[command(name = crate::shared::EXEC_LISTEN, hide = true)]
    ExecListen(ExecListen),
    /// Print the systemd units that run an app (NAME.socket, NAME.service), or install them.
    Unit(Box<crate::unit::UnitArgs>),
    /// Print a shell completion script.
    Completions(crate::manual::CompletionsArgs),
    /// Write the man pages into a directory (packaging uses it).
    #[command(hide = true)]
    Manpage(crate::manual::ManpageArgs),
}

/// The arguments of the hidden `__exec-listen` subcommand.
#[derive(Debug, Args)]
pub struct ExecListen {
    /// The worker program and its arguments, run with the pid we have.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, Args)]
pub struct Serve {
    /// The app's name: D-Bus name, journal field SOCKHERD_APP, SOCKHERD_APP for workers.
    /// Defaults to the worker program's file name.
    #[arg(long)]
    pub name: Option<String>,

    /// Listen here when systemd passed no sockets: IP:PORT, [IPv6]:PORT or a
    /// Unix socket path, optionally prefixed with NAME=. Repeatable.
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
    #[arg(long, short = 'w', default_value_t = 0)]
    pub workers: u32,

    /// `Scale` refuses to go above this many workers.
    #[arg(long, value_name = "N", default_value_t = 1024)]
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

    /// Crashes of one worker slot within --restart-window after which it gives up.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_restarts: u32,

    /// The sliding window for --max-restarts.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub restart_window: Duration,

    /// A worker that has sent a heartbeat (WATCHDOG=1) and then none for this
    /// long is hung: it gets SIGABRT, then SIGKILL, and is replaced. Workers
    /// are told half of it in SOCKHERD_HEARTBEAT_USEC.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,

    /// Replace a worker whose memory (RSS) exceeds SIZE (e.g. 512M, 1G), new
    /// before old; kill it outright past twice SIZE. Sampled every second.
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    pub max_memory: Option<u64>,

    /// A TOML file with any of these flags (see docs/config.md); re-read on
    /// every reload. What it sets wins over the flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Where logs go: the journal when run by systemd, stderr otherwise.
    #[arg(long, value_enum, default_value_t = journal::Target::Auto)]
    pub log: journal::Target,

    #[command(flatten)]
    pub bus: crate::bus::BusArgs,

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

/// Parses `250ms`, `5s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 5s, 2m"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("invalid duration {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
