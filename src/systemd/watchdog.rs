//! The systemd watchdog: `WATCHDOG=1` heartbeats, sent only while the manager
//! really works.
//!
//! With `WatchdogSec=` systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`, the
//! process it is meant for) and kills the service when no `WATCHDOG=1` arrives
//! within that interval; `Restart=on-failure` then starts it again. A heartbeat
//! goes out every half interval, and only after two checks pass:
//! - the event loop turns: this task runs on it, so a blocked or stopped
//!   (SIGSTOP) manager sends nothing;
//! - the pool's loop turns: it must answer a [`Request::Ping`] within half an
//!   interval. A pool stuck in a busy loop or deadlocked on a channel fails this
//!   even though the runtime still schedules other tasks.
//!
//! Workers are not part of the check: a crashed worker is the pool's business
//! (restart, backoff, give up), not a reason to kill the whole service.
//!
//! A `WATCHDOG_USEC` that is not a positive number costs a warning and no
//! watchdog; the service keeps serving.

use std::rc::Rc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::oneshot;
use tokio::time::{timeout, MissedTickBehavior};

use super::notify::Notifier;
use crate::pool::report::{Handle, Request};
use crate::shutdown::Token;

/// Heartbeats are never sent more often than this, whatever the interval.
const MIN_PERIOD: Duration = Duration::from_millis(1);
/// Nor less often: a very long interval is still served by an hourly heartbeat.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// The watchdog interval systemd asked for, if any. Malformed values are
/// logged and ignored.
pub(crate) fn from_env() -> Option<Duration> {
    let usec = std::env::var_os("WATCHDOG_USEC")?;
    let pid = std::env::var_os("WATCHDOG_PID");
    let text = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
    match parse(
        &text(&usec),
        pid.as_deref().map(text).as_deref(),
        std::process::id(),
    ) {
        Ok(interval) => interval,
        Err(why) => {
            tracing::warn!(
                event = "watchdog-misconfigured",
                "{why}; no watchdog heartbeats"
            );
            None
        }
    }
}

/// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` as `sd_watchdog_enabled(3)` does: the
/// interval if it is meant for process `ours`, `None` if it is meant for
/// another one, an error if either value is malformed.
pub(crate) fn parse(usec: &str, pid: Option<&str>, ours: u32) -> Result<Option<Duration>, String> {
    let interval = match usec.parse::<u64>() {
        Ok(0) | Err(_) => {
            return Err(format!(
                "WATCHDOG_USEC={usec:?} is not a positive number of microseconds"
            ))
        }
        Ok(n) => Duration::from_micros(n),
    };
    match pid {
        None => Ok(Some(interval)),
        Some(pid) => match pid.parse::<u32>() {
            Ok(pid) if pid == ours => Ok(Some(interval)),
            Ok(pid) => {
                tracing::debug!("WATCHDOG_PID={pid} is not us ({ours}); no watchdog heartbeats");
                Ok(None)
            }
            Err(_) => Err(format!("WATCHDOG_PID={pid:?} is not a process id")),
        },
    }
}

/// Sends a heartbeat every half `interval` while the pool answers pings.
/// Ends when the pool is gone or `stop` is requested.
pub(crate) async fn run(pool: Handle, notifier: Rc<Notifier>, interval: Duration, mut stop: Token) {
    let period = (interval / 2).clamp(MIN_PERIOD, MAX_PERIOD);
    tracing::info!(
        event = "watchdog-enabled",
        "watchdog: heartbeat every {} ms (WatchdogSec={} ms)",
        period.as_millis(),
        interval.as_millis()
    );
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stuck = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.requested() => return,
        }
        let (reply, answer) = oneshot::channel();
        // A queue of requests so long that the ping waits counts as no answer.
        let asked = async {
            pool.requests
                .send(Request::Ping(reply))
                .await
                .map_err(|_| ())?;
            answer.await.map_err(|_| ())
        };
        match timeout(period, asked).await {
            Ok(Ok(())) => {
                if stuck {
                    tracing::info!(event = "watchdog-recovered", "the pool answers again");
                    stuck = false;
                }
                notifier.send(&[NotifyState::Watchdog]).await;
            }
            // The pool dropped the request: it is gone.
            Ok(Err(_)) => return,
            Err(_) => {
                if !stuck {
                    tracing::warn!(
                        event = "watchdog-withheld",
                        "the pool did not answer a ping within {} ms; withholding the watchdog heartbeat",
                        period.as_millis()
                    );
                    stuck = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use tokio::sync::{broadcast, mpsc, watch};

    use super::*;
    use crate::pool::report::{PoolState, Snapshot};
    use crate::shutdown::Shutdown;

    /// A pool handle whose requests the test sees, and a socket standing in for systemd.
    fn rig(name: &str) -> (Handle, mpsc::Receiver<Request>, UnixDatagram, Notifier) {
        let path = std::env::temp_dir().join(format!("sockherd-wd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).expect("bind");
        systemd.set_nonblocking(true).expect("nonblocking");
        let notifier = Notifier::connect(path.as_os_str()).expect("connect");
        let _ = std::fs::remove_file(&path);
        let (requests, asked) = mpsc::channel(8);
        let (_, snapshot) = watch::channel(Snapshot {
            app: "app".into(),
            target: 1,
            ready: 1,
            state: PoolState::Running,
            restarts: 0,
            generation: 1,
            gave_up: Vec::new(),
            policy: "rr".into(),
        });
        let (events, _) = broadcast::channel(4);
        let handle = Handle {
            requests,
            snapshot,
            events,
        };
        (handle, asked, systemd, notifier)
    }

    fn heartbeats(systemd: &UnixDatagram) -> usize {
        let mut buf = [0u8; 64];
        let mut beats = 0;
        while let Ok(n) = systemd.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1\n");
            beats += 1;
        }
        beats
    }

    #[tokio::test(flavor = "current_thread")]
    async fn heartbeats_while_the_pool_answers() {
        let (handle, mut asked, systemd, notifier) = rig("answers");
        let pool = async {
            while let Some(request) = asked.recv().await {
                if let Request::Ping(reply) = request {
                    let _ = reply.send(());
                }
            }
        };
        let stage = Shutdown::new();
        let watchdog = run(
            handle,
            Rc::new(notifier),
            Duration::from_millis(100),
            stage.token(),
        );
        let _ = timeout(Duration::from_millis(330), async {
            tokio::join!(pool, watchdog);
        })
        .await;
        let beats = heartbeats(&systemd);
        assert!(
            (4..=8).contains(&beats),
            "one per 50 ms over 330 ms: {beats}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_pool_gets_no_heartbeat() {
        let (handle, mut asked, systemd, notifier) = rig("stuck");
        // Takes the pings and never answers, like a pool loop that stopped turning.
        let pool = async {
            let mut held = Vec::new();
            while let Some(request) = asked.recv().await {
                held.push(request);
            }
        };
        let stage = Shutdown::new();
        let watchdog = run(
            handle,
            Rc::new(notifier),
            Duration::from_millis(100),
            stage.token(),
        );
        let _ = timeout(Duration::from_millis(330), async {
            tokio::join!(pool, watchdog);
        })
        .await;
        assert_eq!(heartbeats(&systemd), 0);
    }

    #[test]
    fn values() {
        let s = |secs| Ok(Some(Duration::from_secs(secs)));
        assert_eq!(parse("2000000", None, 7), s(2));
        assert_eq!(parse("2000000", Some("7"), 7), s(2));
        assert_eq!(parse("2000000", Some("8"), 7), Ok(None));
        assert!(parse("garbage", None, 7).is_err());
        assert!(parse("0", None, 7).is_err());
        assert!(parse("-5", None, 7).is_err());
        assert!(parse("", None, 7).is_err());
        assert!(parse("2000000", Some("me"), 7).is_err());
    }
}
