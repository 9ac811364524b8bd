//! Choosing where logs go, once at start: the journal under systemd, stderr
//! otherwise; then starting the log thread ([`super::pump`]) and the
//! formatting of the manager's events ([`super::events`]).
//!
//! The journal is used when stderr already is the journal (`JOURNAL_STREAM`
//! names our stderr, as systemd sets it) or when asked with `--log journal`,
//! and when its native socket can be reached; then workers also connect
//! journal streams of their own ([`super::stream`]). Plain lines on stderr
//! otherwise, which is what a terminal wants.

use std::os::fd::AsRawFd;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use super::events::{self, ToLogThread};
use super::native::Journal;
use super::sink::Sink;
use super::{pump, stream};

/// Where logs go, from `--log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// The journal if stderr is connected to it, stderr otherwise.
    Auto,
    Journal,
    Stderr,
}

/// Sets up logging for the manager of `app`. Returns a warning to log once
/// logging works, if the journal was wanted but could not be used; fails
/// only if the log thread cannot be started.
pub(crate) fn init(
    target: Target,
    app: &str,
    level: LevelFilter,
) -> Result<Option<String>, String> {
    let wants_journal = match target {
        Target::Journal => true,
        Target::Stderr => false,
        Target::Auto => stderr_is_journal(),
    };
    let (sink, warning) = if wants_journal {
        match Journal::connect() {
            Ok(journal) => (Sink::journal(journal, app), None),
            Err(e) => (
                Sink::stderr(app),
                Some(format!(
                    "cannot log to the journal ({e}); logging to stderr"
                )),
            ),
        }
    } else {
        (Sink::stderr(app), None)
    };
    let journal = sink.is_journal();
    pump::start(sink).map_err(|e| format!("cannot start the log thread: {e}"))?;
    if journal {
        stream::enable();
        tracing_subscriber::registry()
            .with(events::Journal::new(app).with_filter(level))
            .init();
    } else {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(ToLogThread)
            .with_target(false)
            .with_ansi(nix::unistd::isatty(std::io::stderr().as_raw_fd()).unwrap_or(false));
        tracing_subscriber::registry()
            .with(fmt.with_filter(level))
            .init();
    }
    Ok(warning)
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
