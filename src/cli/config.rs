//! The config file (`--config FILE`, TOML): the settings a reload re-reads.
//!
//! Every key is the long name of a `sockherd serve` flag, and means the same:
//!
//! ```toml
//! command = ["/srv/app/server", "--port-from-env"]   # the worker command
//! workers = 4
//! kill-timeout = "10s"
//! kill-signal = "SIGINT"
//! ready-timeout = "10s"
//! max-restarts = 16
//! restart-window = "5m"
//! reload-batch = 1
//! max-memory = "512M"
//! heartbeat-timeout = "30s"
//! policy = "least-conn"
//! ```
//!
//! **The file wins over flags.** Flags in `ExecStart=` are the defaults; the
//! file is what an operator edits before `systemctl reload`, so what it says
//! must take effect. The listening sockets and the app's name are not in the file: they cannot
//! change without a restart. Nor can `policy` change between `none` and the
//! others: that moves the manager into or out of the connection path. A file that does not parse fails the reload and
//! the running workers keep serving.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use nix::sys::signal::Signal;

use super::values::{parse_duration, parse_heartbeat, parse_signal, parse_size, parse_workers};
use crate::conn::policy::Policy;

/// The file's contents; every key optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Config {
    pub command: Option<Vec<String>>,
    pub workers: Option<u32>,
    pub max_workers: Option<u32>,
    pub kill_timeout: Option<String>,
    pub kill_signal: Option<String>,
    pub ready_timeout: Option<String>,
    pub max_restarts: Option<u32>,
    pub restart_window: Option<String>,
    pub reload_batch: Option<u32>,
    pub max_memory: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub policy: Option<String>,
}

/// Settings a config file can carry, after parsing units.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overrides {
    pub command: Option<Vec<OsString>>,
    pub workers: Option<u32>,
    pub max_workers: Option<u32>,
    pub kill_timeout: Option<Duration>,
    pub kill_signal: Option<Signal>,
    pub ready_timeout: Option<Duration>,
    pub max_restarts: Option<u32>,
    pub restart_window: Option<Duration>,
    pub reload_batch: Option<u32>,
    pub max_memory: Option<u64>,
    pub heartbeat_timeout: Option<Duration>,
    pub policy: Option<Policy>,
}

/// The largest config file read; a real one is a few hundred bytes.
pub const MAX_SIZE: usize = 64 * 1024;

/// Reads a config file's text: a regular file of at most [`MAX_SIZE`]. It
/// is opened without waiting, so a FIFO or a device named by mistake is an
/// error, never a read that blocks or never ends.
pub fn read(path: &Path) -> Result<String, String> {
    let fail = |why: String| format!("cannot read config {}: {why}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("it is not a regular file".into()));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_SIZE as u64) as usize);
    file.take(MAX_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() > MAX_SIZE {
        return Err(fail(format!("it is larger than {} KiB", MAX_SIZE / 1024)));
    }
    String::from_utf8(bytes).map_err(|_| fail("it is not UTF-8".into()))
}

/// Reads and checks a config file. Errors name the file and the problem.
pub(crate) fn load(path: &Path) -> Result<Overrides, String> {
    let text = read(path)?;
    parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

/// Parses a config file's text. Pure, for tests and fuzzing.
pub fn parse(text: &str) -> Result<Overrides, String> {
    let config: Config = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let duration = |key: &str, value: &Option<String>| -> Result<Option<Duration>, String> {
        value
            .as_deref()
            .map(|v| parse_duration(v).map_err(|e| format!("{key}: {e}")))
            .transpose()
    };
    if config.command.as_ref().is_some_and(|c| c.is_empty()) {
        return Err("command: must name a program".into());
    }
    if config.workers == Some(0) {
        return Err("workers: must be at least 1".into());
    }
    for (key, count) in [
        ("workers", config.workers),
        ("max-workers", config.max_workers),
    ] {
        if let Some(count) = count {
            parse_workers(&count.to_string()).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    if config.reload_batch == Some(0) {
        return Err("reload-batch: must be at least 1".into());
    }
    Ok(Overrides {
        command: config
            .command
            .map(|c| c.into_iter().map(OsString::from).collect()),
        workers: config.workers,
        max_workers: config.max_workers,
        kill_timeout: duration("kill-timeout", &config.kill_timeout)?,
        kill_signal: config
            .kill_signal
            .as_deref()
            .map(|v| parse_signal(v).map_err(|e| format!("kill-signal: {e}")))
            .transpose()?,
        ready_timeout: duration("ready-timeout", &config.ready_timeout)?,
        max_restarts: config.max_restarts,
        restart_window: duration("restart-window", &config.restart_window)?,
        reload_batch: config.reload_batch,
        max_memory: config
            .max_memory
            .as_deref()
            .map(|v| parse_size(v).map_err(|e| format!("max-memory: {e}")))
            .transpose()?,
        heartbeat_timeout: config
            .heartbeat_timeout
            .as_deref()
            .map(|v| parse_heartbeat(v).map_err(|e| format!("heartbeat-timeout: {e}")))
            .transpose()?,
        policy: config
            .policy
            .as_deref()
            .map(|p| p.parse().map_err(|e| format!("policy: {e}")))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let o = parse(
            r#"
            command = ["/bin/app", "--x"]
            workers = 4
            kill-timeout = "10s"
            kill-signal = "INT"
            max-memory = "512M"
            heartbeat-timeout = "30s"
            policy = "ip-hash"
            "#,
        )
        .unwrap();
        assert_eq!(o.workers, Some(4));
        assert_eq!(o.kill_timeout, Some(Duration::from_secs(10)));
        assert_eq!(o.kill_signal, Some(Signal::SIGINT));
        assert_eq!(o.max_memory, Some(512 << 20));
        assert_eq!(o.command.unwrap().len(), 2);
        assert_eq!(o.policy, Some(Policy::IpHash));
    }

    #[test]
    fn only_a_regular_file_of_bounded_size_is_read() {
        let dir = std::env::temp_dir().join(format!("sockherd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Nobody writes to the FIFO: a read would wait forever.
        let refused = read(&fifo).expect_err("a FIFO");
        assert!(refused.contains("not a regular file"), "{refused}");
        let refused = read(Path::new("/dev/zero")).expect_err("a device");
        assert!(refused.contains("not a regular file"), "{refused}");
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_SIZE + 1]).unwrap();
        let refused = read(&big).expect_err("too big");
        assert!(refused.contains("larger than"), "{refused}");
        let fine = dir.join("fine.toml");
        std::fs::write(&fine, "workers = 2\n").unwrap();
        assert_eq!(read(&fine), Ok("workers = 2\n".to_owned()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn huge_durations_in_the_file_are_refused() {
        let refused = parse("kill-timeout = \"10000000000000000000\"").expect_err("too long");
        assert!(refused.contains("kill-timeout"), "{refused}");
        assert!(parse("heartbeat-timeout = \"10ms\"").is_err());
    }

    #[test]
    fn refuses_bad_files() {
        for bad in [
            "workers = 0",
            "wokers = 3",
            "kill-timeout = 5",
            "kill-timeout = \"soon\"",
            "kill-signal = \"SIGKILL\"",
            "kill-signal = 15",
            "max-memory = \"lots\"",
            "command = []",
            "workers = -1",
            "policy = \"random\"",
            "policy = 1",
            "[",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
