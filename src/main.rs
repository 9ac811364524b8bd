//! The `sockherd` binary: parse the command line, set up logging, run.
//!
//! Every command runs on one single-threaded tokio runtime: the manager is one
//! event loop (no locks on the connection path, a few MiB of memory), and the
//! control commands need no more.

use std::process::ExitCode;

use clap::Parser;
use sockherd::cli::{Cli, Command};
use sockherd::{control, journal, manual, serve, shared, unit};
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        // Bad input is one line naming the problem, as for every other error.
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("sockherd: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sockherd: cannot start the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
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
            serve::run(prepared, &runtime)
        }
        Command::Control(command) => control::run(command, &runtime),
        Command::ExecListen(args) => shared::exec_listen(args.command),
        Command::Unit(args) => unit::run(&args),
        Command::Completions(args) => manual::completions(&args),
        Command::Manpage(args) => manual::manpages(&args),
    }
}
