//! What `sockherd status` prints: one block per app, a row per worker process,
//! in PM2's columns; or the same as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::super::local_time::timestamp;
use crate::pool::usage;

/// One app, as `status --json` prints it: the interface's properties in
/// snake case, and its worker processes.
#[derive(Debug, Serialize)]
pub(super) struct AppStatus {
    /// `App`, the name as given to `--name`.
    pub app: String,
    /// `io.sockherd.<app>`, what other tools address it by.
    pub bus_name: String,
    pub state: String,
    /// Workers wanted.
    pub workers: u32,
    pub ready_workers: u32,
    pub policy: String,
    pub connections: u64,
    pub restarts: u32,
    pub generation: u32,
    /// `GaveUp`, as numbers.
    pub gave_up: Vec<u32>,
    /// `Version`: the manager's.
    pub version: String,
    /// `ImageStartedUsec`: when its running image started (its start, or
    /// its last re-exec), µs since the Unix epoch.
    pub image_started_usec: u64,
    /// `ListWorkers`, by id.
    pub processes: Vec<Process>,
}

/// One worker process, as `status --json` prints it.
#[derive(Debug, Serialize)]
pub(super) struct Process {
    pub id: u32,
    pub pid: u32,
    pub state: String,
    pub restarts: u32,
    /// µs since the Unix epoch.
    pub started_usec: u64,
    /// Seconds since it started, by this host's clock.
    pub uptime_secs: u64,
    pub rss_bytes: u64,
    pub connections: u64,
    /// Average CPU use since the worker started; `null` when it runs elsewhere.
    pub cpu_percent: Option<f64>,
}

/// One app as text: a summary line, then a row per worker process.
pub(super) fn table(app: &AppStatus) -> String {
    let mut out = format!(
        "{} ({}): {}, {}/{} workers ready, generation {}, {} restarts, {} connections\n",
        app.app,
        app.bus_name,
        app.state,
        app.ready_workers,
        app.workers,
        app.generation,
        app.restarts,
        app.connections
    );
    if !app.gave_up.is_empty() {
        let ids: Vec<String> = app.gave_up.iter().map(u32::to_string).collect();
        let _ = writeln!(out, "gave up: workers {}", ids.join(", "));
    }
    let header = [
        "id",
        "pid",
        "state",
        "↺",
        "cpu",
        "mem",
        "connections",
        "uptime",
    ];
    let rows: Vec<[String; 8]> = app
        .processes
        .iter()
        .map(|p| {
            [
                p.id.to_string(),
                p.pid.to_string(),
                p.state.clone(),
                p.restarts.to_string(),
                p.cpu_percent
                    .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
                human_bytes(p.rss_bytes),
                p.connections.to_string(),
                human_duration(p.uptime_secs),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header.map(str::to_owned)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    let _ = writeln!(
        out,
        "manager: {}, image started {}",
        app.version,
        timestamp(app.image_started_usec)
    );
    out
}

/// Average CPU use of `pid` since it started, if it is the process the
/// manager reported (same start time, to 2 s) and runs on this host.
pub(super) fn cpu_percent(pid: u32, started_usec: u64, now_usec: u64) -> Option<f64> {
    let usage = usage::of(pid)?;
    if usage.started_usec.abs_diff(started_usec) > 2_000_000 {
        return None;
    }
    let alive_usec = now_usec.checked_sub(started_usec).filter(|&u| u > 0)?;
    Some(usage.cpu_usec as f64 * 100.0 / alive_usec as f64)
}

/// `512B`, `3.4MiB`: one word, so the table splits on whitespace.
pub(in crate::commands) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// `42s`, `5m`, `3h`, `2d`, as PM2 shows uptime.
pub(in crate::commands) fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 400 * 1024), "3.4MiB");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(3 * 3600 + 5), "3h");
        assert_eq!(human_duration(2 * 86_400), "2d");
    }

    #[test]
    fn cpu_of_this_process() {
        let pid = std::process::id();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        // A start time far from the real one: another process, another host.
        assert_eq!(cpu_percent(pid, now - 3_600_000_000 * 1000, now), None);
    }

    #[test]
    fn table_layout() {
        let app = AppStatus {
            app: "hello".into(),
            bus_name: "io.sockherd.hello".into(),
            state: "running".into(),
            workers: 1,
            ready_workers: 1,
            policy: "rr".into(),
            connections: 7,
            restarts: 0,
            generation: 1,
            gave_up: vec![],
            version: "0.1.0 (2)".into(),
            image_started_usec: 0,
            processes: vec![Process {
                id: 0,
                pid: 4242,
                state: "ready".into(),
                restarts: 0,
                started_usec: 0,
                uptime_secs: 65,
                rss_bytes: 2048,
                connections: 7,
                cpu_percent: None,
            }],
        };
        let text = table(&app);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "id  pid   state  ↺  cpu  mem     connections  uptime"
        );
        assert_eq!(lines[2], "0   4242  ready  0  -    2.0KiB  7            1m");
    }
}
