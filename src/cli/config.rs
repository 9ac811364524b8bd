//! The config file (`--config FILE`, TOML): the settings a reload re-reads.
//!
//! Every key is the long name of a `sockherd serve` flag, and means the same:
//!
//! ```toml
//! command = ["/srv/app/server", "--port-from-env"]   # the worker command
//! workers = 4
//! kill-timeout = "10s"
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
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::values::{parse_duration, parse_size};
use crate::conn::policy::Policy;

/// The file's contents; every key optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Config {
    pub command: Option<Vec<String>>,
    pub workers: Option<u32>,
    pub max_workers: Option<u32>,
    pub kill_timeout: Option<String>,
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
    pub ready_timeout: Option<Duration>,
    pub max_restarts: Option<u32>,
    pub restart_window: Option<Duration>,
    pub reload_batch: Option<u32>,
    pub max_memory: Option<u64>,
    pub heartbeat_timeout: Option<Duration>,
    pub policy: Option<Policy>,
}

/// Reads and checks a config file. Errors name the file and the problem.
pub(crate) fn load(path: &Path) -> Result<Overrides, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
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
        ready_timeout: duration("ready-timeout", &config.ready_timeout)?,
        max_restarts: config.max_restarts,
        restart_window: duration("restart-window", &config.restart_window)?,
        reload_batch: config.reload_batch,
        max_memory: config
            .max_memory
            .as_deref()
            .map(|v| parse_size(v).map_err(|e| format!("max-memory: {e}")))
            .transpose()?,
        heartbeat_timeout: duration("heartbeat-timeout", &config.heartbeat_timeout)?,
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
            max-memory = "512M"
            heartbeat-timeout = "30s"
            policy = "ip-hash"
            "#,
        )
        .unwrap();
        assert_eq!(o.workers, Some(4));
        assert_eq!(o.kill_timeout, Some(Duration::from_secs(10)));
        assert_eq!(o.max_memory, Some(512 << 20));
        assert_eq!(o.command.unwrap().len(), 2);
        assert_eq!(o.policy, Some(Policy::IpHash));
    }

    #[test]
    fn refuses_bad_files() {
        for bad in [
            "workers = 0",
            "wokers = 3",
            "kill-timeout = 5",
            "kill-timeout = \"soon\"",
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
