//! Asking the binary on disk whether it can take over, before anything is
//! handed to it: the `__reexec-check` handshake.
//!
//! The running image runs `<binary> __reexec-check <STATE_VERSION>`. A
//! binary that reads that state version prints its own version and exits 0;
//! one that does not says so and exits 1; one that cannot run at all (gone,
//! not executable, for another machine, hanging past [`PATIENCE`]) fails to.
//! Only an answer of 0 lets the re-exec go on; anything else is the
//! caller's error, and the manager keeps serving on its own code.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::image::STATE_VERSION;
use super::version::version;
use crate::pool::orphans;
use crate::print::{errln, outln};

/// The hidden subcommand.
const CHECK: &str = "__reexec-check";

/// How long the binary has to answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// The binary's side: can it read state `asked`?
pub(crate) fn answer(asked: u32) -> ExitCode {
    if asked != STATE_VERSION {
        errln!(
            "sockherd {}: cannot take over state version {asked}; this build reads version {STATE_VERSION}",
            version()
        );
        return ExitCode::FAILURE;
    }
    match outln!("{}", version()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The running image's side: asks `binary`, off the event loop. Its version
/// if it can take over, else why not, in one line.
pub(crate) async fn ask(binary: &Path) -> Result<String, String> {
    let path = binary.to_owned();
    let asked = tokio::task::spawn_blocking(move || {
        orphans::run_helper(
            std::process::Command::new(&path)
                .arg(CHECK)
                .arg(STATE_VERSION.to_string()),
            PATIENCE,
        )
    })
    .await
    .map_err(|e| format!("cannot ask {}: {e}", binary.display()))?;
    let shown = binary.display();
    match asked {
        Err(e) => Err(format!("cannot run {shown}: {e}")),
        Ok((status, out, _)) if status.success() && !out.trim().is_empty() => {
            Ok(out.trim().to_owned())
        }
        Ok((status, _, err)) => {
            let said = err.lines().next().unwrap_or("").trim().to_owned();
            Err(if said.is_empty() {
                format!("{shown} refused to take over ({status})")
            } else {
                format!("{shown} refused to take over: {said}")
            })
        }
    }
}
