//! The values flags and the config file share: durations and sizes, read the
//! same way wherever they appear.

use std::time::Duration;

use nix::sys::signal::Signal;

/// The most workers one manager runs: each costs descriptors (a channel, two
/// output pipes) and a slot of memory; a machine that needs more runs more
/// managers.
pub const MAX_WORKERS: u32 = 4096;

/// Parses a worker count: 0 (one per CPU) to [`MAX_WORKERS`].
pub fn parse_workers(text: &str) -> Result<u32, String> {
    let count: u32 = text
        .parse()
        .map_err(|_| format!("invalid worker count {text:?}: expected a number"))?;
    if count > MAX_WORKERS {
        return Err(format!(
            "{count} workers is more than the most a manager runs ({MAX_WORKERS})"
        ));
    }
    Ok(count)
}

/// The longest duration any flag or config key takes: timers are set from
/// them, and a week is past anything a timeout or window should be.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest `--heartbeat-timeout`: workers are told to beat at half of
/// it, and a faster beat is a flood, not a health check.
pub const MIN_HEARTBEAT: Duration = Duration::from_secs(1);

/// Parses `250ms`, `5s`, `2m`, `1h`, `1d`, or plain seconds, up to
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 5s, 2m"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be ms, s, m, h or d"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| {
            format!(
                "invalid duration {text:?}: at most 7d ({}s)",
                MAX_DURATION.as_secs()
            )
        })
}

/// Parses a `--heartbeat-timeout`: a duration of at least [`MIN_HEARTBEAT`].
pub fn parse_heartbeat(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < MIN_HEARTBEAT {
        return Err(format!(
            "heartbeat timeout {text:?} is too short: at least 1s"
        ));
    }
    Ok(timeout)
}

/// Parses `512M`, `1G`, `300MiB`, `65536` (bytes). K/M/G are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. 512M or 1G"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("invalid size {text:?}: unit must be K, M or G")),
    };
    value
        .checked_mul(scale)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("invalid size {text:?}"))
}

/// The signals a worker may be asked to stop with: those that servers take
/// as "finish and exit". The rest would do nothing (SIGCHLD, SIGCONT), could
/// not be handled (SIGKILL, SIGSTOP), or mean something else to the app
/// (SIGUSR1 starts Node's debugger).
const STOP_SIGNALS: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Parses a `--kill-signal`: `SIGINT`, `INT` or `int`, one of
/// [`STOP_SIGNALS`].
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    STOP_SIGNALS
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = STOP_SIGNALS.iter().map(|s| s.as_str()).collect();
            format!(
                "invalid stop signal {text:?}: expected one of {}",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_past_the_maximum_are_refused_not_overflowed() {
        assert_eq!(parse_duration("7d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("168h"), Ok(MAX_DURATION));
        for huge in [
            "10000000000000000000",
            "604801",
            "8d",
            "1e400",
            "inf",
            "NaN",
        ] {
            let refused = parse_duration(huge).expect_err(huge);
            assert!(!refused.contains('\n'), "one line: {refused}");
        }
        assert!(parse_duration("10000000000000000000")
            .unwrap_err()
            .contains("at most 7d"));
    }

    #[test]
    fn heartbeats_are_at_least_a_second() {
        assert_eq!(parse_heartbeat("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_heartbeat("999ms").is_err());
        assert!(parse_heartbeat("0").is_err());
        assert!(parse_heartbeat("8d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("300MiB"), Ok(300 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn stop_signals_by_name() {
        assert_eq!(parse_signal("SIGINT"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("int"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigquit"), Ok(Signal::SIGQUIT));
        for refused in ["SIGKILL", "STOP", "USR1", "15", "", "SIG", "TERM "] {
            let why = parse_signal(refused).expect_err(refused);
            assert!(why.contains("SIGTERM, SIGINT"), "{why}");
        }
    }
}
