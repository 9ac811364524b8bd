//! The options of `sockherd unit`, each checked to be something a unit file
//! can carry as it is.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use nix::sys::signal::Signal;

use super::serve::NodeArgs;
use super::values::{parse_duration, parse_signal, parse_size, parse_workers};

/// The user (and group) the package creates for apps, and allows on the bus.
pub(crate) const DEFAULT_USER: &str = "sockherd";

/// `--log-rate-limit-burst`'s default: with the 10 s interval, 50,000 lines
/// per second on average, an access log at 50,000 requests per second.
pub(crate) const DEFAULT_LOG_BURST: u32 = 500_000;
/// `--log-rate-limit-interval`'s default.
pub(crate) const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `sockherd unit NAME --listen ADDR… -- COMMAND…`.
#[derive(Debug, Clone, Args)]
pub(crate) struct UnitArgs {
    /// The app's name: the units are NAME.socket and NAME.service, and the
    /// manager's --name, D-Bus name and journal field follow the unit name.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,

    /// Where the socket listens: PORT (every address, IPv4 and IPv6),
    /// IP:PORT, [IPv6]:PORT or an absolute Unix socket path. Repeatable.
    #[arg(long, value_name = "ADDR", required = true)]
    pub listen: Vec<Listen>,

    /// Number of workers; 0 means one per CPU.
    #[arg(long, short = 'w', value_name = "N", default_value_t = 0, value_parser = parse_workers)]
    pub workers: u32,

    /// How long a worker may take to finish its requests when asked to stop;
    /// systemd's TimeoutStopSec= is set 10 s above it.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub kill_timeout: Duration,

    /// The signal that asks a worker to stop (SIGINT for an app written for
    /// PM2); see `sockherd serve --kill-signal`.
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal)]
    pub kill_signal: Signal,

    /// The user the manager and its workers run as. The package's user
    /// `sockherd` may own the D-Bus names; a user of the app's own needs a
    /// line in the bus policy too (see docs/packaging.md).
    #[arg(long, value_name = "USER", default_value = DEFAULT_USER, value_parser = parse_account)]
    pub run_as: String,

    /// The group they run as (default: the user's own).
    #[arg(long, value_name = "GROUP", value_parser = parse_account)]
    pub run_group: Option<String>,

    /// The app's directory: the workers start there, so `-- node app.js` finds app.js.
    #[arg(long, value_name = "DIR", value_parser = parse_directory)]
    pub working_directory: Option<String>,

    /// An environment variable for the workers (e.g. PORT=8080). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub environment: Vec<EnvVar>,

    /// Members of this group may scale, reload and restart the app over
    /// D-Bus, like root and the app's user.
    #[arg(long, value_name = "GROUP", default_value = DEFAULT_USER, value_parser = parse_account)]
    pub control_group: String,

    /// The name workers receive with every connection (FileDescriptorName=).
    #[arg(long, value_name = "NAME", default_value = "http", value_parser = parse_fd_name)]
    pub fd_name: String,

    /// Replace a worker whose memory (RSS) exceeds SIZE (e.g. 512M), new
    /// before old (PM2's max_memory_restart).
    #[arg(long, value_name = "SIZE", value_parser = parse_max_memory)]
    pub max_memory: Option<String>,

    /// A new worker not ready within this is killed and restarted (the
    /// manager's default: 10s; PM2's listen_timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ready_timeout: Option<Duration>,

    /// Crashes of one worker within 5 minutes after which it gives up (the
    /// manager's default: 16; PM2's max_restarts).
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,

    /// journald's rate limit for the app (LogRateLimitIntervalSec=): past
    /// --log-rate-limit-burst lines within this interval, journald drops the
    /// app's lines until the interval ends, and logs how many. 0 turns the
    /// limit off. journald's own default (10000 lines per 30s) would drop most
    /// of an access log; see docs/systemd.md.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub log_rate_limit_interval: Duration,

    /// The lines per --log-rate-limit-interval journald takes from the app
    /// (LogRateLimitBurst=; journald raises it with the free disk space).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LOG_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub log_rate_limit_burst: u32,

    /// How the workers are talked to, as `sockherd serve` takes it.
    #[command(flatten)]
    pub node: NodeArgs,

    /// A TOML file with more `serve` settings (docs/config.md), re-read on
    /// every reload.
    #[arg(long, value_name = "FILE", value_parser = parse_absolute)]
    pub config: Option<String>,

    /// Forbid memory that is both writable and executable
    /// (MemoryDenyWriteExecute=yes), for ahead-of-time compiled workers.
    /// Refused for Node.js, whose V8 needs it, unless it runs `node --jitless`.
    #[arg(long)]
    pub deny_write_execute: bool,

    /// The sockherd binary the service runs (default: this one).
    #[arg(long, value_name = "PATH", value_parser = parse_absolute)]
    pub sockherd: Option<String>,

    /// Write the units to /etc/systemd/system and run `systemctl daemon-reload`.
    #[arg(long, conflicts_with = "output")]
    pub install: bool,

    /// Write the units into DIR (no daemon-reload), e.g. to check them with
    /// `systemd-analyze verify`.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Replace units that exist with different contents.
    #[arg(long)]
    pub force: bool,

    /// The worker command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// One `--listen`: what follows `ListenStream=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listen(pub String);

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with('/') {
            if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "{text:?}: a socket path may not contain spaces or control characters"
                ));
            }
            return Ok(Listen(text.to_owned()));
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u16>() {
                Ok(port) if port > 0 => Ok(Listen(port.to_string())),
                _ => Err(format!("{text:?}: a port is 1..=65535")),
            };
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() > 0 => Ok(Listen(addr.to_string())),
            Ok(_) => Err(format!("{text:?}: port 0 cannot be listened on by a unit")),
            Err(_) => Err(format!(
                "{text:?}: expected PORT, IP:PORT, [IPv6]:PORT or an absolute socket path"
            )),
        }
    }
}

/// One `--environment KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvVar {
    /// A shell-style name, so every program can read it.
    pub key: String,
    /// Anything printable; quoted when written.
    pub value: String,
}

impl FromStr for EnvVar {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))?;
        let valid_key = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(format!(
                "{key:?}: a variable name is letters, digits and _, not starting with a digit"
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!(
                "{key}: the value may not contain control characters"
            ));
        }
        Ok(EnvVar {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A unit name prefix systemd accepts and `%N` passes through unchanged.
fn parse_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 200
        && !text.starts_with(['.', '-'])
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: an app name is letters, digits, _ . - and :, at most 200, not starting with . or -"
        ))
    }
}

/// A user or group name as systemd accepts it in `User=`/`Group=`.
fn parse_account(text: &str) -> Result<String, String> {
    let valid = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && text.len() <= 31
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: a user or group name is letters, digits, _ and -, at most 31, starting with a letter or _"
        ))
    }
}

/// A size `sockherd serve --max-memory` takes, kept as written.
fn parse_max_memory(text: &str) -> Result<String, String> {
    parse_size(text)?;
    Ok(text.to_owned())
}

fn parse_fd_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 255
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: a socket name is letters, digits, _ . and -"
        ))
    }
}

/// An absolute path that can be written into a unit file as it is.
pub(crate) fn parse_absolute(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?}: must be an absolute path"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{text:?}: a path in a unit may not contain spaces or control characters"
        ));
    }
    Ok(text.to_owned())
}

fn parse_directory(text: &str) -> Result<String, String> {
    parse_absolute(text.trim_end_matches('/')).or_else(|e| {
        if text.chars().all(|c| c == '/') && !text.is_empty() {
            Ok("/".to_owned())
        } else {
            Err(e)
        }
    })
}
