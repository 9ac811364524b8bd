//! Restart policy: exponential backoff between restarts, and the crash-loop limit.
//!
//! Every unexpected exit counts, however long the worker ran (PM2 only counts
//! exits under `min_uptime`, so an app that crashes every few seconds loops
//! forever). The limit is a sliding window: more than `max_restarts` crashes
//! within `window` and the slot gives up. Between restarts the delay grows
//! ×1.5 from 100 ms up to 15 s, and starts again from nothing once a worker has
//! stayed up for [`STABLE_UPTIME`].
//!
//! The defaults fit together: a worker that dies at start-up is restarted 16
//! times with delays adding up to about 70 s, so it gives up in under two
//! minutes; one that dies every few seconds crosses 16 crashes in the 5-minute
//! window as well.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The first non-zero delay.
const BASE_DELAY: Duration = Duration::from_millis(100);
/// Growth factor of the delay.
const FACTOR: f64 = 1.5;
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(15);
/// Uptime after which a crash is not part of a streak: the next restart is immediate.
pub(crate) const STABLE_UPTIME: Duration = Duration::from_secs(30);

/// The crash-loop limit, from `--max-restarts` and `--restart-window`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub max_restarts: u32,
    pub window: Duration,
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start a replacement after this delay.
    RestartAfter(Duration),
    /// Too many crashes in the window: leave the slot empty.
    GiveUp,
}

/// The crash history of one worker slot.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// When each crash within the window happened, oldest first.
    crashes: VecDeque<Instant>,
    /// Consecutive crashes of workers that were not up for long: the backoff exponent.
    streak: u32,
    /// Restarts since the manager started, for status and D-Bus.
    pub restarts: u32,
}

impl History {
    /// Records an unexpected exit of a worker that had been up for `uptime`.
    pub(crate) fn crashed(&mut self, now: Instant, uptime: Duration, limit: Limit) -> Verdict {
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > limit.window)
        {
            self.crashes.pop_front();
        }
        self.crashes.push_back(now);
        if self.crashes.len() > limit.max_restarts as usize {
            return Verdict::GiveUp;
        }
        if uptime >= STABLE_UPTIME {
            self.streak = 0;
        }
        let delay = delay_for(self.streak);
        self.streak += 1;
        self.restarts += 1;
        Verdict::RestartAfter(delay)
    }

    /// Crashes currently inside the window.
    pub(crate) fn recent(&self) -> usize {
        self.crashes.len()
    }
}

/// A slot's crash history as a re-exec carries it: each crash's age, the
/// streak and the restart count.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct CarriedHistory {
    crash_ages: Vec<Duration>,
    streak: u32,
    restarts: u32,
}

impl History {
    /// The history as of `now`, for the next image.
    pub(crate) fn carry(&self, now: Instant) -> CarriedHistory {
        CarriedHistory {
            crash_ages: self
                .crashes
                .iter()
                .map(|t| now.duration_since(*t))
                .collect(),
            streak: self.streak,
            restarts: self.restarts,
        }
    }

    /// The history an earlier image carried, its crashes as old as they were.
    pub(crate) fn adopt(carried: CarriedHistory, now: Instant) -> History {
        History {
            crashes: carried
                .crash_ages
                .iter()
                .filter_map(|age| now.checked_sub(*age))
                .collect(),
            streak: carried.streak,
            restarts: carried.restarts,
        }
    }
}

fn delay_for(streak: u32) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let grown = BASE_DELAY.as_secs_f64() * FACTOR.powi(streak as i32 - 1);
    Duration::from_secs_f64(grown).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Limit = Limit {
        max_restarts: 16,
        window: Duration::from_secs(300),
    };

    /// Simulates a worker that lives `uptime` each time; returns the time until give-up.
    fn time_to_give_up(uptime: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut now = start;
        let mut history = History::default();
        for _ in 0..1000 {
            now += uptime;
            match history.crashed(now, uptime, DEFAULT) {
                Verdict::GiveUp => return Some(now - start),
                Verdict::RestartAfter(d) => now += d,
            }
        }
        None
    }

    #[test]
    fn crash_at_start_gives_up_within_two_minutes() {
        let t = time_to_give_up(Duration::from_millis(50)).expect("gives up");
        assert!(t < Duration::from_secs(120), "{t:?}");
    }

    #[test]
    fn crash_every_few_seconds_gives_up_too() {
        assert!(time_to_give_up(Duration::from_secs(5)).is_some());
    }

    #[test]
    fn rare_crashes_never_give_up() {
        assert!(time_to_give_up(Duration::from_secs(60)).is_none());
    }

    #[test]
    fn delay_grows_and_resets_after_stable_uptime() {
        let mut h = History::default();
        let now = Instant::now();
        let short = Duration::from_millis(10);
        assert_eq!(
            h.crashed(now, short, DEFAULT),
            Verdict::RestartAfter(Duration::ZERO)
        );
        assert_eq!(
            h.crashed(now, short, DEFAULT),
            Verdict::RestartAfter(BASE_DELAY)
        );
        assert_eq!(
            h.crashed(now, short, DEFAULT),
            Verdict::RestartAfter(Duration::from_millis(150))
        );
        assert_eq!(
            h.crashed(now, STABLE_UPTIME, DEFAULT),
            Verdict::RestartAfter(Duration::ZERO)
        );
        assert_eq!(h.restarts, 4);
    }
}
