//! Logging: to the journal with structured fields under systemd, to stderr otherwise.
//!
//! Under systemd the manager's events and its workers' lines go straight to
//! journald (through `tracing-journald`), each with fields a user can filter on:
//! `SOCKHERD_APP`, `SOCKHERD_EVENT` (`worker-started`, `worker-exited`,
//! `worker-gave-up`, …), `SOCKHERD_WORKER_ID`, `SOCKHERD_WORKER_PID`,
//! `SOCKHERD_EXIT_CODE`/`SOCKHERD_EXIT_SIGNAL`. Every tracing field `foo` becomes
//! `SOCKHERD_FOO`. Priorities follow syslog: error 3, warning 4, info 6, debug 7.
//!
//! The journal is used when stderr already is the journal (`JOURNAL_STREAM`
//! names our stderr, as systemd sets it) or when asked with `--log journal`;
//! plain lines on stderr otherwise, which is what a terminal wants.

use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Where logs go, from `--log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// The journal if stderr is connected to it, stderr otherwise.
    Auto,
    Journal,
    Stderr,
}

/// Which of a worker's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// What [`init`] chose, needed to format worker lines.
enum Sink {
    Journal,
    Stderr { app: String },
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sets up logging for the manager of `app`. Returns a warning to log once
/// logging works, if the journal was wanted but could not be used.
pub(crate) fn init(target: Target, app: &str, level: LevelFilter) -> Option<String> {
    let wants_journal = match target {
        Target::Journal => true,
        Target::Stderr => false,
        Target::Auto => stderr_is_journal(),
    };
    let mut warning = None;
    if wants_journal {
        match journald_layer(app) {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(layer.with_filter(level))
                    .init();
                let _ = SINK.set(Sink::Journal);
                return None;
            }
            Err(e) => {
                warning = Some(format!(
                    "cannot log to the journal ({e}); logging to stderr"
                ))
            }
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(nix::unistd::isatty(std::io::stderr().as_raw_fd()).unwrap_or(false));
    tracing_subscriber::registry()
        .with(fmt.with_filter(level))
        .init();
    let _ = SINK.set(Sink::Stderr {
        app: app.to_owned(),
    });
    warning
}

fn journald_layer(app: &str) -> std::io::Result<tracing_journald::Layer> {
    let mut priorities = tracing_journald::PriorityMappings::new();
    priorities.info = tracing_journald::Priority::Informational;
    priorities.debug = tracing_journald::Priority::Debug;
    Ok(tracing_journald::layer()?
        .with_field_prefix(Some("SOCKHERD".to_owned()))
        .with_syslog_identifier(app.to_owned())
        .with_priority_mappings(priorities)
        .with_custom_fields([("SOCKHERD_APP", app.as_bytes())]))
}

/// `JOURNAL_STREAM=<dev>:<inode>` names the stream systemd connected to our
/// stderr; it only counts if stderr is still that stream.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino)
}

/// Logs one line of a worker's output.
pub(crate) fn worker_line(stream: Stream, id: u32, pid: u32, line: &str) {
    match SINK.get() {
        Some(Sink::Journal) => match stream {
            Stream::Stdout => {
                tracing::info!(target: "worker", worker_id = id, worker_pid = pid, stream = "stdout", "{line}")
            }
            Stream::Stderr => {
                tracing::error!(target: "worker", worker_id = id, worker_pid = pid, stream = "stderr", "{line}")
            }
        },
        Some(Sink::Stderr { app }) => eprintln!("{app}[{id}]: {line}"),
        None => eprintln!("[{id}]: {line}"),
    }
}
