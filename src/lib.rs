//! sockherd: a cluster manager that lives inside systemd.
//!
//! # The life of a connection
//!
//! systemd owns the listening sockets (`app.socket`) and starts the manager
//! with them on the first connection; without systemd the manager binds
//! `--listen` addresses itself ([`sockets`]). The manager forks a pool of
//! workers ([`pool`]), each with its own channel, a `SOCK_SEQPACKET`
//! socketpair. One task per socket accepts and hands every connection to a
//! ready worker chosen by the dispatch policy (round-robin by default;
//! least-conn, ip-hash), by sending its fd over that channel ([`conn`]). The
//! worker serves it; the manager has already closed its own copy. Under
//! `--policy none` the workers inherit the sockets and accept by themselves.
//!
//! Workers need not speak sockherd's protocol: an unmodified Node.js app runs
//! as cluster workers of the manager itself, which speaks Node's cluster IPC
//! ([`node`]); the connection path's transports are where the two meet.
//!
//! # The life of a worker
//!
//! A worker starts, says `READY=1` and joins the dispatch ring; it may send
//! `WATCHDOG=1` heartbeats and announce `STOPPING=1`. When it is chosen to go it
//! leaves the ring first, is sent `SHUTDOWN=1`, finishes what it has and exits;
//! past the kill timeout it is killed. When it crashes, its slot restarts it
//! under the same id after a growing delay, and gives up after too many
//! crashes in a window. `pool/worker.rs` draws the whole state machine.
//!
//! # The life of the manager
//!
//! `sockherd serve` ([`cli`], [`commands`]) checks its input, takes its
//! sockets and starts the pool. The pool owns every worker and tells the rest
//! of the manager what happens through its reports: systemd hears `READY=1`,
//! `STATUS=`, `RELOADING=1` and `STOPPING=1`, and `WATCHDOG=1` only while the
//! pool's loop answers ([`systemd`]); D-Bus callers read properties and call
//! `Scale` or `Reload` ([`bus`]), which the `sockherd
//! status|scale|reload|restart|monit` commands wrap; Prometheus scrapes it
//! ([`metrics`]). Logs go to the journal with per-worker fields ([`log`]).
//!
//! SIGHUP, `systemctl reload` or D-Bus `Reload` roll the workers over, new
//! before old. SIGUSR2, `sockherd upgrade` or D-Bus `Reexec` replace the
//! manager's own code and keep everything else ([`reexec`]). SIGTERM or SIGINT ([`signals`], [`shutdown`]): stop accepting,
//! drain every worker in parallel, kill what is left at the kill timeout,
//! exit 0. If every
//! slot gave up, the manager exits non-zero so systemd's restart policy takes
//! over. Its workers never outlive it, even when it is SIGKILLed.

mod bus;
mod cli;
mod commands;
mod conn;
mod log;
mod metrics;
mod pool;
mod print;
mod reexec;
mod shutdown;
mod signals;
mod sockets;
mod systemd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing::level_filters::LevelFilter;

use cli::{Cli, Command};
use commands::{control, import, logs, manual, monit, serve, unit};
use conn::shared::exec_listen;
use print::errln;

/// The `sockherd` binary: parse the command line, set up logging, run.
///
/// Every command runs on one single-threaded tokio runtime: the manager is one
/// event loop (no locks on the connection path, a few MiB of memory), and the
/// control commands need no more.
pub fn run() -> ExitCode {
    // `--version` shows the build label too, which is read at run time.
    let version: &'static str = Box::leak(reexec::version().into_boxed_str());
    let parsed = Cli::command()
        .version(version)
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        // Bad input is one line naming the problem, as for every other error.
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            errln!("sockherd: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!("sockherd: cannot start the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let prepared = match serve::prepare(&args) {
                Ok(prepared) => prepared,
                Err(e) => {
                    errln!("sockherd: {e}");
                    return ExitCode::from(2);
                }
            };
            let level = if args.verbose {
                LevelFilter::DEBUG
            } else {
                LevelFilter::INFO
            };
            match log::init(args.log, prepared.app(), level) {
                Ok(Some(warning)) => tracing::warn!("{warning}"),
                Ok(None) => {}
                Err(e) => {
                    errln!("sockherd: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let code = serve::run(prepared, &runtime);
            // The last lines (shutdown-finished, the workers' last words).
            log::flush();
            code
        }
        Command::Control(command) => control::run(command, &runtime),
        Command::Monit(args) => monit::run(&args, &runtime),
        Command::Logs(args) => logs::run(&args),
        Command::ExecListen(args) => exec_listen(args.command),
        Command::ReexecCheck(args) => reexec::answer_check(args.state),
        Command::Unit(args) => unit::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Completions(args) => manual::completions(&args),
        Command::Manpage(args) => manual::manpages(&args),
    }
}

/// The decoders a peer or a user can reach, exposed for the property tests
/// (`tests/hostile_input.rs`) and the fuzz targets (`fuzz/`). Not an API.
#[doc(hidden)]
pub mod decoders {
    /// `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`.
    pub mod activation {
        pub use crate::sockets::activation::{parse, Passed};
    }
    /// A native worker's messages.
    pub mod notice {
        pub use crate::conn::notice::{parse_notice, Notice};
        pub use crate::conn::protocol::MAX_MESSAGE;
    }
    /// The config file, and the values flags share with it.
    pub mod config {
        pub use crate::cli::config::parse;
        pub use crate::cli::values::{parse_duration, parse_size};
    }
    /// Node's IPC framing and its `listen()` requests.
    pub mod node {
        pub use crate::conn::node::listen::{describe, key, resolve, Answer};
        pub use crate::conn::node::wire::{internal_cmd, shown, Lines, MAX_MESSAGE};
    }
    pub use crate::bus::plan::bus_name;
    pub use crate::sockets::listener::{Kind, Local};
}
