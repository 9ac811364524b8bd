//! The `sockherd` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use sockherd::cli::{Cli, Command};
use sockherd::{control, journal, manual, serve, unit};
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let prepared = match serve::prepare(&args) {
                Ok(prepared) => prepared,
                Err(e) => {
                    eprintln!("sockherd: {e}");
                    return ExitCode::from(2);
                }
            };
            let level = if args.verbose {
                LevelFilter::DEBUG
            } else {
                LevelFilter::INFO
            };
            if let Some(warning) = journal::init(args.log, prepared.app(), level) {
                tracing::warn!("{warning}");
            }
            serve::run(prepared)
        }
        Command::Control(command) => control::run(command),
        Command::Unit(args) => unit::run(&args),
        Command::Completions(args) => manual::completions(&args),
        Command::Manpage(args) => manual::manpages(&args),
    }
}
