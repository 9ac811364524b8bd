//! What the screen shows, kept between readings: the apps and their
//! workers, with the rates that take two readings (connections per second,
//! each worker's CPU share); the selected row; the latest events; the
//! outcome of the last key that changed something.
//!
//! Events come from the managers' signals ([`super::heard`]), and one more
//! is read off the readings: a worker that is `ready` now and was not at
//! the reading before. Nothing here talks to the bus or the terminal, so all
//! of it is tested as it is.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::heard::Heard;
use super::reading::{AppData, AppReading, Reading};

/// The most events kept.
const EVENTS: usize = 200;
/// CPU shares are taken over about this long: the manager reads `/proc` at
/// most once a second, so over one second a share could be a reading old.
const CPU_WINDOW: Duration = Duration::from_secs(3);

/// One line of the events pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Event {
    /// µs since the epoch.
    pub at_usec: u64,
    pub app: String,
    pub text: String,
}

/// One app as shown.
#[derive(Debug, Clone)]
pub(super) struct AppView {
    pub reading: AppReading,
    /// Connections per second since the reading before.
    pub rate: Option<f64>,
    /// Each worker process's CPU share, by pid, in percent of one CPU.
    pub cpu: HashMap<u32, f64>,
}

impl AppView {
    /// The app's name: `App`, or the bus name while it does not answer.
    pub(super) fn app(&self) -> &str {
        match &self.reading.data {
            Ok(data) => &data.app,
            Err(_) => self
                .reading
                .name
                .trim_start_matches(crate::bus::plan::NAME_PREFIX),
        }
    }
}

/// A row of the list: an app, or one of its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Row {
    /// The app at this index.
    App(usize),
    /// The app's worker process at this index.
    Worker(usize, usize),
}

/// What is selected, so that it stays selected as rows come and go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selected {
    App(String),
    Worker { app: String, id: u32, pid: u32 },
}

/// What one `r`, `+`, `-` or `R` is about: the app (bus name and name) and,
/// for `R`, the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub bus_name: String,
    pub app: String,
    pub worker: Option<u32>,
}

/// The whole screen's state.
#[derive(Debug)]
pub(super) struct View {
    /// Which bus, for the title.
    pub bus: String,
    pub apps: Vec<AppView>,
    /// Why the bus could not be read, if it could not.
    pub error: Option<String>,
    /// Newest last.
    pub events: VecDeque<Event>,
    /// The last key's outcome, or what is under way.
    pub status: Option<String>,
    /// No reading yet.
    pub waiting: bool,
    selected: Option<Selected>,
    /// Per bus name, the reading before: when, and its connection count.
    before: HashMap<String, (Instant, u64)>,
    /// Per pid, CPU time readings within [`CPU_WINDOW`], oldest first.
    cpu_samples: HashMap<u32, VecDeque<(Instant, u64)>>,
}

impl View {
    pub(super) fn new(bus: String) -> View {
        View {
            bus,
            apps: Vec::new(),
            error: None,
            events: VecDeque::new(),
            status: None,
            waiting: true,
            selected: None,
            before: HashMap::new(),
            cpu_samples: HashMap::new(),
        }
    }

    /// Takes in a new reading.
    pub(super) fn update(&mut self, reading: Reading) {
        let at = reading.at;
        let apps = match reading.apps {
            Ok(apps) => {
                self.error = None;
                apps
            }
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let mut views = Vec::with_capacity(apps.len());
        let mut alive = Vec::new();
        for reading in apps {
            let previous = self
                .apps
                .iter()
                .find(|a| a.reading.name == reading.name)
                .and_then(|a| a.reading.data.clone().ok());
            let mut view = AppView {
                rate: None,
                cpu: HashMap::new(),
                reading,
            };
            if let Ok(data) = &view.reading.data {
                let name = view.reading.name.clone();
                if let Some((then, count)) = self.before.insert(name, (at, data.connections)) {
                    let seconds = at.duration_since(then).as_secs_f64();
                    if seconds > 0.0 {
                        view.rate = Some(data.connections.saturating_sub(count) as f64 / seconds);
                    }
                }
                for process in &data.processes {
                    alive.push(process.pid);
                    if let Some(share) = self.cpu_share(process.pid, process.cpu_usec, at) {
                        view.cpu.insert(process.pid, share);
                    }
                }
                if let Some(old) = &previous {
                    self.newly_ready(old, data);
                }
            }
            views.push(view);
        }
        self.cpu_samples.retain(|pid, _| alive.contains(pid));
        self.before
            .retain(|name, _| views.iter().any(|v| &v.reading.name == name));
        self.apps = views;
        self.waiting = false;
        if self.selected.is_none() || self.index().is_none() {
            self.selected = self.rows().first().map(|row| self.key(row));
        }
    }

    /// A worker's CPU share over the last few readings.
    fn cpu_share(&mut self, pid: u32, cpu_usec: Option<u64>, at: Instant) -> Option<f64> {
        let samples = self.cpu_samples.entry(pid).or_default();
        samples.push_back((at, cpu_usec?));
        while samples.len() > 2 && at.duration_since(samples[1].0) >= CPU_WINDOW {
            samples.pop_front();
        }
        let (first_at, first) = *samples.front()?;
        let (last_at, last) = *samples.back()?;
        let seconds = last_at.duration_since(first_at).as_secs_f64();
        (seconds > 0.0).then(|| last.saturating_sub(first) as f64 / seconds / 1e4)
    }

    /// Events for the workers that became ready since the reading before.
    fn newly_ready(&mut self, old: &AppData, new: &AppData) {
        for process in &new.processes {
            let was_ready = old
                .processes
                .iter()
                .any(|p| p.pid == process.pid && p.state == "ready");
            if process.state == "ready" && !was_ready {
                self.event(
                    &new.app,
                    format!("worker {} ready (pid {})", process.id, process.pid),
                );
            }
        }
    }

    /// Takes in what the manager owning `sender` said.
    pub(super) fn heard(&mut self, sender: &str, heard: Vec<Heard>) {
        let Some(app) = self
            .apps
            .iter()
            .find(|a| a.reading.owner.as_deref() == Some(sender))
        else {
            return;
        };
        let name = app.app().to_owned();
        let gave_up_before = match &app.reading.data {
            Ok(data) => data.gave_up.clone(),
            Err(_) => Vec::new(),
        };
        for heard in heard {
            let text = match heard {
                Heard::Started { id, pid } => format!("worker {id} started (pid {pid})"),
                Heard::Exited { id, pid, reason } => {
                    format!("worker {id} exited (pid {pid}): {reason}")
                }
                Heard::Reloaded {
                    generation,
                    ok: true,
                } => {
                    format!("reloaded: generation {generation} serves")
                }
                Heard::Reloaded {
                    generation,
                    ok: false,
                } => format!(
                    "reload to generation {generation} failed: rolled back, the old workers serve"
                ),
                Heard::Scaled(count) => format!("scaled to {count} workers"),
                Heard::State(state) => match state.as_str() {
                    "reloading" => "reload started".to_owned(),
                    "stopping" => "stopping: draining the workers".to_owned(),
                    _ => continue,
                },
                Heard::GaveUp(ids) => {
                    let new: Vec<String> = ids
                        .iter()
                        .filter(|id| !gave_up_before.contains(id))
                        .map(u32::to_string)
                        .collect();
                    if new.is_empty() {
                        continue;
                    }
                    format!(
                        "worker {} gave up: crashed too often (--max-restarts)",
                        new.join(", ")
                    )
                }
            };
            self.event(&name, text);
        }
    }

    /// Adds an event, now.
    pub(super) fn event(&mut self, app: &str, text: String) {
        let at_usec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.events.push_back(Event {
            at_usec,
            app: app.to_owned(),
            text,
        });
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    /// Every row, in order.
    pub(super) fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (i, app) in self.apps.iter().enumerate() {
            rows.push(Row::App(i));
            if let Ok(data) = &app.reading.data {
                rows.extend((0..data.processes.len()).map(|j| Row::Worker(i, j)));
            }
        }
        rows
    }

    /// The index of the selected row.
    pub(super) fn index(&self) -> Option<usize> {
        let selected = self.selected.as_ref()?;
        let rows = self.rows();
        rows.iter()
            .position(|row| &self.key(row) == selected)
            .or_else(|| match selected {
                // The selected worker went: its app's row.
                Selected::Worker { app, .. } => rows
                    .iter()
                    .position(|row| self.key(row) == Selected::App(app.clone())),
                Selected::App(_) => None,
            })
    }

    /// Moves the selection `by` rows, within the list.
    pub(super) fn select(&mut self, by: isize) {
        let rows = self.rows();
        if rows.is_empty() {
            return;
        }
        let at = self.index().unwrap_or(0) as isize;
        let to = (at + by).clamp(0, rows.len() as isize - 1) as usize;
        self.selected = Some(self.key(&rows[to]));
    }

    /// What the keys act on.
    pub(super) fn target(&self) -> Option<Target> {
        let row = self.rows().get(self.index()?)?.clone();
        let (i, worker) = match row {
            Row::App(i) => (i, None),
            Row::Worker(i, j) => {
                let data = self.apps[i].reading.data.as_ref().ok()?;
                (i, Some(data.processes.get(j)?.id))
            }
        };
        let app = self.apps.get(i)?;
        Some(Target {
            bus_name: app.reading.name.clone(),
            app: app.app().to_owned(),
            worker,
        })
    }

    fn key(&self, row: &Row) -> Selected {
        match *row {
            Row::App(i) => Selected::App(self.apps[i].reading.name.clone()),
            Row::Worker(i, j) => {
                let app = &self.apps[i];
                let process = app
                    .reading
                    .data
                    .as_ref()
                    .ok()
                    .and_then(|data| data.processes.get(j));
                Selected::Worker {
                    app: app.reading.name.clone(),
                    id: process.map_or(0, |p| p.id),
                    pid: process.map_or(0, |p| p.pid),
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::commands::monit::reading::Process;

    /// An app `name` with workers of (id, pid, state, cpu µs), having
    /// dispatched `connections`.
    pub(in crate::commands::monit) fn app(
        name: &str,
        connections: u64,
        workers: &[(u32, u32, &str, u64)],
    ) -> AppReading {
        AppReading {
            name: format!("io.sockherd.{name}"),
            owner: Some(format!(":1.{}", name.len())),
            data: Ok(AppData {
                app: name.to_owned(),
                policy: "rr".into(),
                generation: 1,
                workers: workers.len() as u32,
                ready: workers.iter().filter(|w| w.2 == "ready").count() as u32,
                connections,
                restarts: 0,
                state: "running".into(),
                gave_up: vec![],
                processes: workers
                    .iter()
                    .map(|&(id, pid, state, cpu)| Process {
                        id,
                        pid,
                        state: state.into(),
                        restarts: 0,
                        started_usec: 0,
                        rss_bytes: 3 << 20,
                        connections: 5,
                        open: Some(1),
                        cpu_usec: Some(cpu),
                    })
                    .collect(),
            }),
        }
    }

    #[test]
    fn rates_take_two_readings() {
        let mut view = View::new("the system bus".into());
        let start = Instant::now();
        view.update(Reading {
            at: start,
            apps: Ok(vec![app("web", 100, &[(0, 10, "ready", 0)])]),
        });
        assert_eq!(view.apps[0].rate, None);
        assert_eq!(view.apps[0].cpu.get(&10), None);
        view.update(Reading {
            at: start + Duration::from_secs(2),
            apps: Ok(vec![app("web", 130, &[(0, 10, "ready", 500_000)])]),
        });
        assert_eq!(view.apps[0].rate, Some(15.0));
        assert_eq!(view.apps[0].cpu.get(&10), Some(&25.0));
    }

    #[test]
    fn ready_workers_and_signals_become_events() {
        let mut view = View::new("bus".into());
        let at = Instant::now();
        view.update(Reading {
            at,
            apps: Ok(vec![app("web", 0, &[(0, 10, "starting", 0)])]),
        });
        view.update(Reading {
            at,
            apps: Ok(vec![app("web", 0, &[(0, 10, "ready", 0)])]),
        });
        view.heard(
            ":1.3",
            vec![Heard::Scaled(4), Heard::State("running".into())],
        );
        view.heard(":1.99", vec![Heard::Scaled(9)]);
        view.heard(
            ":1.3",
            vec![Heard::Reloaded {
                generation: 2,
                ok: false,
            }],
        );
        let texts: Vec<&str> = view.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "worker 0 ready (pid 10)",
                "scaled to 4 workers",
                "reload to generation 2 failed: rolled back, the old workers serve"
            ]
        );
    }

    #[test]
    fn the_selection_follows_its_worker() {
        let mut view = View::new("bus".into());
        let at = Instant::now();
        let two = || app("web", 0, &[(0, 10, "ready", 0), (1, 11, "ready", 0)]);
        view.update(Reading {
            at,
            apps: Ok(vec![two()]),
        });
        assert_eq!(view.index(), Some(0));
        view.select(2);
        assert_eq!(view.target().and_then(|t| t.worker), Some(1));
        view.select(5);
        assert_eq!(view.index(), Some(2));
        // Another app appears before it: the selection stays on worker 1.
        view.update(Reading {
            at,
            apps: Ok(vec![app("api", 0, &[(0, 20, "ready", 0)]), two()]),
        });
        assert_eq!(view.index(), Some(4));
        let target = view.target().expect("a target");
        assert_eq!((target.app.as_str(), target.worker), ("web", Some(1)));
        // Worker 1 goes: its app is selected.
        view.update(Reading {
            at,
            apps: Ok(vec![app("web", 0, &[(0, 10, "ready", 0)])]),
        });
        assert_eq!(view.target().map(|t| t.worker), Some(None));
    }
}
