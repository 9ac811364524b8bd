//! The command line: `sockherd serve` runs a cluster; `status`, `scale`,
//! `reload` and `restart` talk to one, `monit` watches them live and `logs`
//! reads their journal; `unit` writes the systemd units for one, and
//! `import` those of a PM2 ecosystem file; `completions` (and the hidden
//! `manpage`) document them all.

pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod import;
pub(crate) mod logs;
pub(crate) mod manual;
pub(crate) mod monit;
pub(crate) mod serve;
pub(crate) mod unit;
pub(crate) mod values;

use clap::{Parser, Subcommand};

use control::ControlCommand;
use import::ImportArgs;
use logs::LogsArgs;
use manual::{CompletionsArgs, ManpageArgs};
use monit::MonitArgs;
use serve::{ExecListen, Serve};
use unit::UnitArgs;

#[derive(Debug, Parser)]
#[command(
    name = "sockherd",
    version,
    about = "A cluster manager that lives inside systemd"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The arguments of `__reexec-check`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReexecCheck {
    /// The state version the running manager would hand over.
    pub state: u32,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a pool of workers behind the listening sockets.
    Serve(Box<Serve>),
    #[command(flatten)]
    Control(ControlCommand),
    /// Watch apps live: workers, CPU, memory, connections, events; reload,
    /// scale and restart from the keyboard.
    Monit(MonitArgs),
    /// Print an app's log from the journal, or one worker's (`-f` follows).
    Logs(LogsArgs),
    /// Internal: how a `--policy none` worker is started. Sets `LISTEN_PID`
    /// (and `WATCHDOG_PID`) to this process's pid, then execs COMMAND in place.
    #[command(name = crate::conn::shared::EXEC_LISTEN, hide = true)]
    ExecListen(ExecListen),
    /// Internal: asked by a running manager before it re-executes this
    /// binary: can it take over state version STATE? Prints the version.
    #[command(name = "__reexec-check", hide = true)]
    ReexecCheck(ReexecCheck),
    /// Print the systemd units that run an app (NAME.socket, NAME.service), or install them.
    Unit(Box<UnitArgs>),
    /// Print the units of every app in a PM2 ecosystem file, or install them.
    Import(Box<ImportArgs>),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Write the man pages into a directory (packaging uses it).
    #[command(hide = true)]
    Manpage(ManpageArgs),
}
