//! `sockherd __exec-listen`: how a shared-accept worker learns its own pid.
//!
//! `LISTEN_PID` must name the worker, whose pid is known only after `fork`;
//! the worker is started through this binary, which sets it to its own pid
//! and `exec`s the worker program in place (see [`super`] for why).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use crate::print::errln;

/// The hidden subcommand that sets `LISTEN_PID` and execs the worker.
pub(crate) const EXEC_LISTEN: &str = "__exec-listen";

/// `sockherd __exec-listen -- PROGRAM ARGS…`: sets `LISTEN_PID` (and
/// `WATCHDOG_PID` when `WATCHDOG_USEC` is set) to this process's pid and
/// execs PROGRAM in its place. Returns only if that fails.
pub(crate) fn exec_listen(command: Vec<OsString>) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        errln!("sockherd {EXEC_LISTEN}: no command");
        return ExitCode::from(2);
    };
    let pid = std::process::id().to_string();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env("LISTEN_PID", &pid);
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        cmd.env("WATCHDOG_PID", &pid);
    }
    let error = cmd.exec();
    errln!(
        "sockherd {EXEC_LISTEN}: cannot run {}: {error}",
        Path::new(program).display()
    );
    ExitCode::from(127)
}
