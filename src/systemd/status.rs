//! What systemd hears about the cluster: readiness, status, reloads, stops.
//!
//! Under `Type=notify` systemd waits for `READY=1` before it calls the service
//! started, shows the last `STATUS=` line in `systemctl status`, and treats
//! `RELOADING=1` … `READY=1` as a reload and `STOPPING=1` as the start of a
//! stop. This module turns what the pool reports ([`crate::pool::report`])
//! into those messages:
//! - `READY=1` once `--min-ready` workers (default: all) are ready, not before;
//! - `STATUS=` one human line, kept current: `4/4 workers ready · 120345
//!   connections · 2 restarts`, with what is wrong when something is
//!   (`worker 3 gave up after 16 restarts`). The connection count is asked of
//!   the pool every [`STATUS_REFRESH`], not counted per connection;
//! - `RELOADING=1` + `MONOTONIC_USEC=` when a rolling reload starts, `READY=1`
//!   when it ends (also when it failed: the previous workers keep serving, and
//!   the status line says so);
//! - `STOPPING=1` when the drain starts;
//! - `EXTEND_TIMEOUT_USEC=` while a start, reload or drain makes progress: each
//!   worker that becomes ready (or is started by a reload) buys one more ready
//!   timeout, and a drain gets what is left of its kill timeout. So
//!   `TimeoutStartSec=`/`TimeoutStopSec=` never cut a slow but healthy
//!   operation short, and still catch a stuck one.
//!
//! `MAINPID=` is never sent: the manager is the process systemd started and
//! stays so for its whole life (reloads replace workers, not the manager).

use std::rc::Rc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use super::notify::Notifier;
use crate::pool::report::{Event, Handle, PoolState, Request, Snapshot};
use crate::shutdown::Token;

/// How often the connection count in the status line is refreshed.
pub(crate) const STATUS_REFRESH: Duration = Duration::from_secs(1);

/// Added to every extension, for the time between a step finishing and
/// systemd hearing about it.
const EXTEND_MARGIN: Duration = Duration::from_secs(5);

/// What the notifier needs to know beyond what the pool reports.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Ready workers needed before `READY=1` (capped at the worker count).
    pub min_ready: u32,
    /// The bound on one worker becoming ready: what each step of a start or
    /// reload extends the timeout by.
    pub ready_timeout: Duration,
    /// The bound on a drain (the kill timeout and the time to reap what was
    /// killed): a stop extends the timeout by this.
    pub drain_timeout: Duration,
    /// The crash limit, to say after how many restarts a worker gave up.
    pub max_restarts: u32,
}

/// One thing to tell systemd; turned into a [`NotifyState`] when sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Ready,
    /// `RELOADING=1` with `MONOTONIC_USEC=` of the moment it is sent.
    Reloading,
    Stopping,
    Status(String),
    ExtendTimeout(Duration),
}

/// Sends `messages` as one datagram, so systemd sees e.g. `READY=1` and the
/// status line that explains it at once.
async fn send(notifier: &Notifier, messages: &[Message]) {
    let monotonic = if messages.contains(&Message::Reloading) {
        NotifyState::monotonic_usec_now().ok()
    } else {
        None
    };
    let mut states = Vec::with_capacity(messages.len() + 1);
    for message in messages {
        match message {
            Message::Ready => states.push(NotifyState::Ready),
            Message::Reloading => {
                states.push(NotifyState::Reloading);
                states.extend(monotonic.clone());
            }
            Message::Stopping => states.push(NotifyState::Stopping),
            Message::Status(line) => states.push(NotifyState::Status(line)),
            Message::ExtendTimeout(by) => states.push(NotifyState::ExtendTimeoutUsec(
                u32::try_from(by.as_micros()).unwrap_or(u32::MAX),
            )),
        }
    }
    notifier.send(&states).await;
}

/// Follows the pool and tells systemd, until the pool is gone or `stop` is
/// requested.
pub(crate) async fn run(pool: Handle, notifier: Rc<Notifier>, settings: Settings, mut stop: Token) {
    let mut snapshot = pool.snapshot.clone();
    let mut events = pool.events.subscribe();
    let mut tracker = Tracker::new(settings);
    let mut refresh = tokio::time::interval(STATUS_REFRESH);
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let woke = tokio::select! {
            biased;
            event = events.recv() => match event {
                Ok(event) => Woke::Event(event),
                // Missed some: the snapshot still tells where things stand.
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => Woke::Snapshot,
            },
            changed = snapshot.changed() => match changed {
                Ok(()) => Woke::Snapshot,
                // The pool is gone: everything it had to say was said.
                Err(_) => break,
            },
            _ = refresh.tick() => Woke::Refresh,
            _ = stop.requested() => break,
        };
        let connections = match woke {
            Woke::Refresh => pool.ask(Request::Connections).await.ok(),
            Woke::Event(_) | Woke::Snapshot => None,
        };
        // The snapshot first, always: whatever woke us may be about a state it
        // already shows, and the status line must never run ahead of it.
        let now = Instant::now();
        let mut messages = tracker.on_snapshot(&snapshot.borrow_and_update(), now);
        let current = snapshot.borrow().clone();
        match woke {
            Woke::Event(event) => messages.extend(tracker.on_event(&event, &current, now)),
            Woke::Refresh => {
                if let Some(connections) = connections {
                    messages.extend(tracker.on_connections(connections, &current));
                }
            }
            Woke::Snapshot => {}
        }
        send(&notifier, &messages).await;
    }
}

/// What woke the notifier.
enum Woke {
    Event(Event),
    Snapshot,
    Refresh,
}

/// What systemd has been told, and what it must be told next. Pure: fed the
/// pool's reports and the time, it returns the messages to send.
struct Tracker {
    settings: Settings,
    /// `READY=1` was sent: the start is over.
    ready_sent: bool,
    /// `RELOADING=1` was sent and its `READY=1` not yet.
    reloading: bool,
    /// `STOPPING=1` was sent; nothing else but status follows.
    stopping: bool,
    /// Ready workers at the last snapshot, to see a start progress.
    last_ready: u32,
    /// The generation of the last reload, if it failed; cleared by a successful one.
    failed_reload: Option<u32>,
    /// Connections dispatched so far, from the last status answer.
    connections: u64,
    /// When the drain is over at the latest (kill timeout + reap grace after it began).
    drain_deadline: Option<Instant>,
    /// The status line last sent, so an unchanged one is not sent again.
    last_status: String,
}

impl Tracker {
    fn new(settings: Settings) -> Tracker {
        Tracker {
            settings,
            ready_sent: false,
            reloading: false,
            stopping: false,
            last_ready: 0,
            failed_reload: None,
            connections: 0,
            drain_deadline: None,
            last_status: String::new(),
        }
    }

    /// One step of a start or reload: another ready timeout from now.
    fn step(&self) -> Message {
        Message::ExtendTimeout(self.settings.ready_timeout + EXTEND_MARGIN)
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        if snapshot.state == PoolState::Stopping {
            if !self.stopping {
                self.stopping = true;
                self.reloading = false;
                let drain = self.settings.drain_timeout;
                self.drain_deadline = Some(now + drain);
                out.push(Message::Stopping);
                out.push(Message::ExtendTimeout(drain + EXTEND_MARGIN));
            }
        } else if !self.stopping {
            let needed = self.settings.min_ready.min(snapshot.target).max(1);
            if !self.ready_sent {
                if snapshot.ready >= needed {
                    self.ready_sent = true;
                    out.push(Message::Ready);
                } else if snapshot.ready > self.last_ready && !hopeless(snapshot, needed) {
                    out.push(self.step());
                }
            }
            if self.ready_sent && snapshot.state == PoolState::Reloading && !self.reloading {
                self.reloading = true;
                out.push(Message::Reloading);
                out.push(self.step());
            }
        }
        self.last_ready = snapshot.ready;
        self.push_status(snapshot, &mut out);
        out
    }

    fn on_event(&mut self, event: &Event, snapshot: &Snapshot, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        match event {
            Event::Reloaded { generation, ok } => {
                self.failed_reload = if *ok { None } else { Some(*generation) };
                if self.ready_sent && !self.stopping {
                    if !self.reloading {
                        // Too quick to be seen in a snapshot: still a reload to systemd.
                        out.push(Message::Reloading);
                    }
                    self.reloading = false;
                    out.push(Message::Ready);
                    // The next reload may already be under way.
                    if snapshot.state == PoolState::Reloading {
                        self.reloading = true;
                        out.push(Message::Reloading);
                        out.push(self.step());
                    }
                }
            }
            Event::WorkerStarted { .. } if self.reloading => out.push(self.step()),
            Event::WorkerExited { .. } if self.stopping => {
                if let Some(left) = self
                    .drain_deadline
                    .and_then(|d| d.checked_duration_since(now))
                {
                    out.push(Message::ExtendTimeout(left + EXTEND_MARGIN));
                }
            }
            Event::WorkerStarted { .. } | Event::WorkerExited { .. } => {}
        }
        self.push_status(snapshot, &mut out);
        out
    }

    fn on_connections(&mut self, connections: u64, snapshot: &Snapshot) -> Vec<Message> {
        self.connections = connections;
        let mut out = Vec::new();
        self.push_status(snapshot, &mut out);
        out
    }

    /// Adds the status line if it changed since it was last sent, or if
    /// `READY=1` goes out: systemd then sees the line that explains it at once.
    fn push_status(&mut self, snapshot: &Snapshot, out: &mut Vec<Message>) {
        let line = self.status_line(snapshot);
        if line != self.last_status || out.contains(&Message::Ready) {
            self.last_status.clone_from(&line);
            out.push(Message::Status(line));
        }
    }

    /// `4/4 workers ready · 120345 connections · 2 restarts`, with the state
    /// in front when it is not plain running and what is wrong at the end.
    fn status_line(&self, s: &Snapshot) -> String {
        let counters = format!(
            "{} · {}",
            plural(self.connections, "connection"),
            plural(u64::from(s.restarts), "restart")
        );
        let mut line = match s.state {
            PoolState::Stopping => format!("stopping: draining workers · {counters}"),
            PoolState::Running => format!("{}/{} workers ready · {counters}", s.ready, s.target),
            PoolState::Starting | PoolState::Reloading | PoolState::Degraded => {
                let state = match s.state {
                    PoolState::Reloading => format!("reloading to generation {}", s.generation + 1),
                    other => other.to_string(),
                };
                format!(
                    "{state}: {}/{} workers ready · {counters}",
                    s.ready, s.target
                )
            }
        };
        match s.gave_up.as_slice() {
            [] => {}
            [id] => line.push_str(&format!(
                " · worker {id} gave up after {}",
                plural(u64::from(self.settings.max_restarts), "restart")
            )),
            ids => {
                let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                line.push_str(&format!(
                    " · workers {} gave up after {} each",
                    ids.join(", "),
                    plural(u64::from(self.settings.max_restarts), "restart")
                ));
            }
        }
        if let Some(generation) = self.failed_reload {
            line.push_str(&format!(
                " · reload to generation {generation} failed, generation {} still serving",
                s.generation
            ));
        }
        line
    }
}

/// Too many slots gave up for `needed` workers ever to be ready: the start
/// makes no more progress, and its timeout should not be extended.
fn hopeless(snapshot: &Snapshot, needed: u32) -> bool {
    let alive = snapshot
        .target
        .saturating_sub(snapshot.gave_up.len() as u32);
    alive < needed
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min_ready: u32) -> Settings {
        Settings {
            min_ready,
            ready_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(7),
            max_restarts: 16,
        }
    }

    fn snap(state: PoolState, ready: u32, target: u32) -> Snapshot {
        Snapshot {
            app: "app".into(),
            target,
            ready,
            state,
            restarts: 0,
            generation: 1,
            gave_up: Vec::new(),
            policy: "rr".into(),
        }
    }

    fn has(out: &[Message], wanted: &Message) -> bool {
        out.contains(wanted)
    }

    fn status(out: &[Message]) -> Option<&str> {
        out.iter().find_map(|m| match m {
            Message::Status(s) => Some(s.as_str()),
            _ => None,
        })
    }

    #[test]
    fn ready_waits_for_min_ready_and_is_sent_once() {
        let now = Instant::now();
        let mut t = Tracker::new(settings(3));
        let out = t.on_snapshot(&snap(PoolState::Starting, 0, 4), now);
        assert!(!has(&out, &Message::Ready));
        assert_eq!(
            status(&out),
            Some("starting: 0/4 workers ready · 0 connections · 0 restarts")
        );
        let out = t.on_snapshot(&snap(PoolState::Starting, 2, 4), now);
        assert!(!has(&out, &Message::Ready));
        assert!(has(&out, &Message::ExtendTimeout(Duration::from_secs(15))));
        let out = t.on_snapshot(&snap(PoolState::Starting, 3, 4), now);
        assert!(has(&out, &Message::Ready));
        let out = t.on_snapshot(&snap(PoolState::Running, 4, 4), now);
        assert!(!has(&out, &Message::Ready));
        assert_eq!(
            status(&out),
            Some("4/4 workers ready · 0 connections · 0 restarts")
        );
    }

    #[test]
    fn min_ready_is_capped_at_the_worker_count() {
        let mut t = Tracker::new(settings(8));
        let out = t.on_snapshot(&snap(PoolState::Running, 2, 2), Instant::now());
        assert!(has(&out, &Message::Ready));
    }

    #[test]
    fn a_start_that_cannot_finish_is_not_extended() {
        let mut t = Tracker::new(settings(4));
        let mut s = snap(PoolState::Starting, 1, 4);
        s.gave_up = vec![3];
        let out = t.on_snapshot(&s, Instant::now());
        assert!(!out.iter().any(|m| matches!(m, Message::ExtendTimeout(_))));
        assert_eq!(
            status(&out),
            Some("starting: 1/4 workers ready · 0 connections · 0 restarts · worker 3 gave up after 16 restarts")
        );
    }

    #[test]
    fn reload_is_bracketed_by_reloading_and_ready() {
        let now = Instant::now();
        let mut t = Tracker::new(settings(2));
        t.on_snapshot(&snap(PoolState::Running, 2, 2), now);
        let reloading = snap(PoolState::Reloading, 2, 2);
        let out = t.on_snapshot(&reloading, now);
        assert!(has(&out, &Message::Reloading));
        assert_eq!(
            status(&out),
            Some("reloading to generation 2: 2/2 workers ready · 0 connections · 0 restarts")
        );
        let out = t.on_event(&Event::WorkerStarted { id: 0, pid: 9 }, &reloading, now);
        assert!(has(&out, &Message::ExtendTimeout(Duration::from_secs(15))));
        let mut done = snap(PoolState::Running, 2, 2);
        done.generation = 2;
        // The end shows in the snapshot before the event arrives.
        t.on_snapshot(&done, now);
        let out = t.on_event(
            &Event::Reloaded {
                generation: 2,
                ok: true,
            },
            &done,
            now,
        );
        assert_eq!(out[0], Message::Ready);
        assert!(!has(&out, &Message::Reloading));
        assert_eq!(
            status(&out),
            Some("2/2 workers ready · 0 connections · 0 restarts"),
            "READY=1 always carries the status line"
        );
    }

    #[test]
    fn a_failed_reload_still_ends_with_ready_and_is_shown() {
        let now = Instant::now();
        let mut t = Tracker::new(settings(1));
        t.on_snapshot(&snap(PoolState::Running, 1, 1), now);
        t.on_snapshot(&snap(PoolState::Reloading, 1, 1), now);
        let out = t.on_event(
            &Event::Reloaded {
                generation: 2,
                ok: false,
            },
            &snap(PoolState::Running, 1, 1),
            now,
        );
        assert!(has(&out, &Message::Ready));
        assert_eq!(
            status(&out),
            Some("1/1 workers ready · 0 connections · 0 restarts · reload to generation 2 failed, generation 1 still serving")
        );
    }

    #[test]
    fn a_reload_too_quick_to_see_is_still_reported() {
        let now = Instant::now();
        let mut t = Tracker::new(settings(1));
        t.on_snapshot(&snap(PoolState::Running, 1, 1), now);
        let out = t.on_event(
            &Event::Reloaded {
                generation: 2,
                ok: true,
            },
            &snap(PoolState::Running, 1, 1),
            now,
        );
        assert_eq!(out[..2], [Message::Reloading, Message::Ready]);
    }

    #[test]
    fn stopping_extends_by_the_drain_bound() {
        let now = Instant::now();
        let mut t = Tracker::new(settings(1));
        t.on_snapshot(&snap(PoolState::Running, 1, 1), now);
        let stopping = snap(PoolState::Stopping, 0, 1);
        let out = t.on_snapshot(&stopping, now);
        assert_eq!(out[0], Message::Stopping);
        assert!(has(&out, &Message::ExtendTimeout(Duration::from_secs(12))));
        assert_eq!(
            status(&out),
            Some("stopping: draining workers · 0 connections · 0 restarts")
        );
        let later = now + Duration::from_secs(3);
        let exited = Event::WorkerExited {
            id: 0,
            pid: 9,
            status: 0,
            reason: "drained".into(),
        };
        let out = t.on_event(&exited, &stopping, later);
        assert!(has(&out, &Message::ExtendTimeout(Duration::from_secs(9))));
        // Nothing but the status after STOPPING=1.
        assert!(!has(&t.on_snapshot(&stopping, later), &Message::Stopping));
    }

    #[test]
    fn status_counts_and_problems() {
        let mut t = Tracker::new(settings(4));
        let mut s = snap(PoolState::Degraded, 2, 4);
        s.restarts = 1;
        s.gave_up = vec![1, 3];
        let out = t.on_connections(1, &s);
        assert_eq!(
            status(&out),
            Some("degraded: 2/4 workers ready · 1 connection · 1 restart · workers 1, 3 gave up after 16 restarts each")
        );
        assert!(
            t.on_connections(1, &s).is_empty(),
            "unchanged lines are not resent"
        );
    }
}
