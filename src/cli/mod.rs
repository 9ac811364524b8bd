//! The command line: `sockherd serve` runs a cluster; `status`, `scale`,
//! `reload` and `restart` talk to one; `unit` writes the systemd units for
//! one; `completions` (and the hidden `manpage`) document them all.

pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod manual;
pub(crate) mod serve;
pub(crate) mod unit;
pub(crate) mod values;

use clap::{Parser, Subcommand};

use control::ControlCommand;
use manual::{CompletionsArgs, ManpageArgs};
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

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a pool of workers behind the listening sockets.
    Serve(Box<Serve>),
    #[command(flatten)]
    Control(ControlCommand),
    /// Internal: how a `--policy none` worker is started. Sets `LISTEN_PID`
    /// (and `WATCHDOG_PID`) to this process's pid, then execs COMMAND in place.
    #[command(name = crate::conn::shared::EXEC_LISTEN, hide = true)]
    ExecListen(ExecListen),
    /// Print the systemd units that run an app (NAME.socket, NAME.service), or install them.
    Unit(Box<UnitArgs>),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Write the man pages into a directory (packaging uses it).
    #[command(hide = true)]
    Manpage(ManpageArgs),
}
