//! `sockherd logs APP [--worker N] [-f] [-n LINES] [--since TIME]`: the
//! app's journal, or one worker's, as `pm2 logs` shows it: the manager's
//! events and the workers' own lines interleaved by time, each with the
//! worker's id.
//!
//! It runs `journalctl -o json` with the matches that select the app
//! ([`matches`]) and prints each entry as one line ([`entry`]). Under
//! systemd a worker's lines are journal streams of its own, filed under the
//! app's unit with `SYSLOG_IDENTIFIER=<app>/<id>`; the manager's events
//! carry `SOCKHERD_APP` and `SOCKHERD_WORKER_ID`. Which unit the app runs in
//! is read from the manager's latest entry. An app with no entry at all does
//! not log to the journal (run by hand, `sockherd serve` logs to its own
//! stderr), and is told so.

mod entry;
mod matches;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};

use serde_json::Value;

use crate::cli::logs::{Lines, LogsArgs};
use crate::print::errln;

/// Lines shown when neither `-n` nor `--since` says: as many as `pm2 logs`.
const DEFAULT_LINES: u32 = 15;

/// Runs `sockherd logs`.
pub(crate) fn run(args: &LogsArgs) -> ExitCode {
    match logs(args) {
        Ok(code) => code,
        Err((code, e)) => {
            errln!("sockherd: {e}");
            code
        }
    }
}

/// A failure: the exit status, and the line that says why.
type Failure = (ExitCode, String);

fn logs(args: &LogsArgs) -> Result<ExitCode, Failure> {
    let journal = || {
        let mut command = Command::new("journalctl");
        if args.user {
            command.arg("--user");
        }
        command.args(["--no-pager", "--quiet"]);
        command
    };
    if let Some(since) = &args.since {
        let check = journal()
            .args(["--lines=0", "--since", since])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| missing(&e))?;
        if !check.success() {
            return Err((
                ExitCode::from(2),
                format!(
                    "--since {since:?}: journalctl cannot read it as a time \
                     (e.g. \"2026-05-01 12:00\", -1h, today, \"10 min ago\")"
                ),
            ));
        }
    }
    let unit = unit(&journal, args)?;
    let mut command = journal();
    command.args(["--output=json", "--all"]);
    if args.follow {
        command.arg("--follow");
    }
    match (args.lines, &args.since) {
        (Some(Lines::All), _) | (None, Some(_)) => {}
        (Some(Lines::Last(n)), _) => {
            command.arg(format!("--lines={n}"));
        }
        (None, None) => {
            command.arg(format!("--lines={DEFAULT_LINES}"));
        }
    }
    if let Some(since) = &args.since {
        command.args(["--since", since]);
    }
    command.args(matches::of(
        &args.app,
        args.worker,
        unit.as_deref(),
        args.user,
    ));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| missing(&e))?;
    let Some(stdout) = child.stdout.take() else {
        return Err((ExitCode::FAILURE, "journalctl has no output".into()));
    };
    let mut out = std::io::stdout().lock();
    let mut format = entry::Format::new(&args.app);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(text) = format.line(&entry) else {
            continue;
        };
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`sockherd logs app | head`): done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((ExitCode::FAILURE, format!("cannot print: {e}")));
            }
        }
    }
    match child.wait() {
        Ok(status) if status.success() => Ok(ExitCode::SUCCESS),
        Ok(status) => Err((ExitCode::FAILURE, format!("journalctl failed ({status})"))),
        Err(e) => Err((
            ExitCode::FAILURE,
            format!("cannot wait for journalctl: {e}"),
        )),
    }
}

/// The unit the app's manager logged from last (a `.service`), if any; an
/// app that never logged to the journal is an error, unless following.
fn unit(journal: &dyn Fn() -> Command, args: &LogsArgs) -> Result<Option<String>, Failure> {
    let app = &args.app;
    let out = journal()
        .args(["--output=json", "--lines=1"])
        .arg(format!("SOCKHERD_APP={app}"))
        .stderr(Stdio::null())
        .output()
        .map_err(|e| missing(&e))?;
    let latest: Option<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok());
    let field = if args.user {
        "_SYSTEMD_USER_UNIT"
    } else {
        "_SYSTEMD_UNIT"
    };
    match latest {
        Some(entry) => Ok(entry
            .get(field)
            .and_then(Value::as_str)
            .filter(|unit| unit.ends_with(".service"))
            .map(str::to_owned)),
        None if args.follow => {
            errln!(
                "sockherd: no journal entries of {app:?} yet; waiting for them (from {app}.service)"
            );
            Ok(Some(format!("{app}.service")))
        }
        None => {
            let journal = if args.user {
                "your journal"
            } else {
                "the journal"
            };
            Err((
                ExitCode::FAILURE,
                format!(
                    "{app:?} has no entries in {journal}: it does not log there. An app run \
                     by systemd (`sockherd unit`) does; one run by hand with `sockherd serve` \
                     logs to its own stderr (--log stderr), not to the journal. (Reading the \
                     system journal needs root or the group adm or systemd-journal.)"
                ),
            ))
        }
    }
}

/// Why journalctl could not be run.
fn missing(e: &std::io::Error) -> Failure {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound => "journalctl is not installed: `sockherd logs` reads the \
             journal, where apps run by systemd log; an app run by hand with `sockherd serve` \
             logs to its own stderr"
            .to_owned(),
        _ => format!("cannot run journalctl: {e}"),
    };
    (ExitCode::FAILURE, why)
}
