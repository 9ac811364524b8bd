//! `sockherd status|scale|reload|restart`: the command line's way to the
//! managers, over the same D-Bus interface anyone else uses ([`crate::bus`]).
//!
//! There is no private control socket: these commands find managers by their
//! well-known names (`io.sockherd.<app>`) on the system bus (the default, like
//! `systemctl`), the session bus (`--user`) or a bus at an address
//! (`--address`). Whatever a manager refuses is printed as one line and the
//! command exits non-zero; naming an app that is not there lists those that are.
//!
//! `status` shows PM2's columns. The CPU column is not part of the interface:
//! it is read from `/proc` when the worker runs on this host (its start time
//! there matches the one the manager reports), and is `-` otherwise.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde::Serialize;
use zbus::fdo::DBusProxy;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::bus::{bus_name, Bus, Error, ManagerProxy, WorkerRow, NAME_PREFIX};

/// The commands that talk to running managers.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show apps and their workers: every app on the bus, or one.
    Status(StatusArgs),
    /// Set the number of workers (N) or change it (+N, -N).
    Scale(ScaleArgs),
    /// Replace every worker with a fresh one, without dropping a connection.
    Reload(ReloadArgs),
    /// Replace one worker, the new one ready before the old one goes.
    Restart(RestartArgs),
}

/// Which bus the managers are on.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The system bus, where managers run as system services (the default).
    #[arg(long, conflicts_with_all = ["user", "address"])]
    pub system: bool,

    /// The session bus, for managers run with `--bus session`.
    #[arg(long, conflicts_with = "address")]
    pub user: bool,

    /// The bus at this address (e.g. unix:path=/run/x/bus).
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
}

impl Target {
    fn bus(&self) -> Bus {
        match (&self.address, self.user) {
            (Some(address), _) => Bus::Address(address.clone()),
            (None, true) => Bus::Session,
            (None, false) => Bus::System,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The app (its --name); every app on the bus when left out.
    pub app: Option<String>,

    /// Print JSON (an array of apps) instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The app (its --name).
    pub app: String,

    /// N workers, or +N / -N more or fewer.
    #[arg(allow_hyphen_values = true, value_name = "N|+N|-N")]
    pub count: ScaleTo,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The app (its --name).
    pub app: String,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// The app (its --name).
    pub app: String,

    /// The worker's id (the `id` column of `sockherd status`).
    pub id: u32,

    #[command(flatten)]
    pub target: Target,
}

/// The argument of `sockherd scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTo {
    /// `N`: exactly this many.
    Exactly(u32),
    /// `+N` or `-N`: this many more or fewer.
    By(i32),
}

impl FromStr for ScaleTo {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a worker count: expected N, +N or -N");
        match text.as_bytes().first() {
            Some(b'+' | b'-') => text.parse().map(ScaleTo::By).map_err(|_| bad()),
            _ => text.parse().map(ScaleTo::Exactly).map_err(|_| bad()),
        }
    }
}

/// Runs one command and prints its outcome; errors are one line on stderr.
pub fn run(command: Command, runtime: &tokio::runtime::Runtime) -> ExitCode {
    match runtime.block_on(execute(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sockherd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Status(args) => status(args).await,
        Command::Scale(args) => {
            let client = Client::connect(&args.target).await?;
            let manager = client.manager(&args.app).await?;
            let count = match args.count {
                ScaleTo::Exactly(count) => manager.scale(count).await.map(|()| count),
                ScaleTo::By(delta) => manager.scale_by(delta).await,
            }
            .map_err(|e| format!("{}: {}", args.app, explain(e)))?;
            println!("{}: {count} workers", args.app);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => {
            let client = Client::connect(&args.target).await?;
            let manager = client.manager(&args.app).await?;
            manager
                .reload()
                .await
                .map_err(|e| format!("{}: {}", args.app, explain(e)))?;
            let generation = manager
                .generation()
                .await
                .map_err(|e| format!("{}: {e}", args.app))?;
            println!("{}: reloaded, generation {generation}", args.app);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart(args) => {
            let client = Client::connect(&args.target).await?;
            let manager = client.manager(&args.app).await?;
            manager
                .restart_worker(args.id)
                .await
                .map_err(|e| format!("{}: {}", args.app, explain(e)))?;
            println!("{}: worker {} restarted", args.app, args.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A manager's error as one line: its message, and the error's name when it
/// is not one of sockherd's own.
fn explain(e: Error) -> String {
    match e {
        Error::InvalidArgs(m) | Error::Busy(m) | Error::AccessDenied(m) | Error::Failed(m) => m,
        Error::ZBus(zbus::Error::MethodError(name, Some(message), _)) => {
            format!("{message} ({name})")
        }
        Error::ZBus(e) => e.to_string(),
    }
}

/// A connection to one bus, and what is needed to find managers on it.
struct Client {
    /// Our own connection to the bus.
    connection: Connection,
    /// Which bus, for messages.
    bus: Bus,
}

impl Client {
    async fn connect(target: &Target) -> Result<Client, String> {
        let bus = target.bus();
        let builder = match &bus {
            Bus::System => zbus::connection::Builder::system(),
            Bus::Session => zbus::connection::Builder::session(),
            Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
        };
        let connection = async { builder?.build().await }
            .await
            .map_err(|e| format!("cannot connect to {bus}: {e}"))?;
        Ok(Client { connection, bus })
    }

    /// The well-known names of every manager on the bus, sorted.
    async fn names(&self) -> Result<Vec<String>, String> {
        let dbus = DBusProxy::new(&self.connection)
            .await
            .map_err(|e| format!("cannot talk to {}: {e}", self.bus))?;
        let mut names: Vec<String> = dbus
            .list_names()
            .await
            .map_err(|e| format!("cannot list the names on {}: {e}", self.bus))?
            .into_iter()
            .map(|name| name.to_string())
            .filter(|name| name.starts_with(NAME_PREFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The manager of `app` (its `--name`, or its full bus name), or an error
    /// that lists the apps there are.
    async fn manager(&self, app: &str) -> Result<ManagerProxy<'static>, String> {
        let name = self.resolve(app).await?;
        self.proxy(&name).await
    }

    /// The bus name of `app`'s manager, if it is on the bus.
    async fn resolve(&self, app: &str) -> Result<String, String> {
        let name = if app.starts_with(NAME_PREFIX) {
            app.to_owned()
        } else {
            bus_name(app)
        };
        let names = self.names().await?;
        if names.contains(&name) {
            return Ok(name);
        }
        let known: Vec<&str> = names
            .iter()
            .map(|name| name.trim_start_matches(NAME_PREFIX))
            .collect();
        Err(if known.is_empty() {
            format!("no app {app:?} on {}: no sockherd apps run there", self.bus)
        } else {
            format!(
                "no app {app:?} on {}; apps there: {}",
                self.bus,
                known.join(", ")
            )
        })
    }

    /// A proxy for the manager that owns `name`.
    async fn proxy(&self, name: &str) -> Result<ManagerProxy<'static>, String> {
        let destination =
            BusName::try_from(name.to_owned()).map_err(|e| format!("{name:?}: {e}"))?;
        ManagerProxy::builder(&self.connection)
            .destination(destination)
            .map_err(|e| format!("{name}: {e}"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| format!("{name}: {e}"))
    }
}

/// One app, as `status --json` prints it: the interface's properties in
/// snake case, and its worker processes.
#[derive(Debug, Serialize)]
struct AppStatus {
    /// `App`, the name as given to `--name`.
    app: String,
    /// `io.sockherd.<app>`, what other tools address it by.
    bus_name: String,
    state: String,
    /// Workers wanted.
    workers: u32,
    ready_workers: u32,
    policy: String,
    connections: u64,
    restarts: u32,
    generation: u32,
    /// `GaveUp`, as numbers.
    gave_up: Vec<u32>,
    /// `ListWorkers`, by id.
    processes: Vec<Process>,
}

/// One worker process, as `status --json` prints it.
#[derive(Debug, Serialize)]
struct Process {
    id: u32,
    pid: u32,
    state: String,
    restarts: u32,
    /// µs since the Unix epoch.
    started_usec: u64,
    /// Seconds since it started, by this host's clock.
    uptime_secs: u64,
    rss_bytes: u64,
    connections: u64,
    /// Average CPU use since the worker started; `null` when it runs elsewhere.
    cpu_percent: Option<f64>,
}

async fn status(args: StatusArgs) -> Result<ExitCode, String> {
    let client = Client::connect(&args.target).await?;
    let names = match &args.app {
        Some(app) => vec![client.resolve(app).await?],
        None => client.names().await?,
    };
    let mut apps = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for name in names {
        let app = async {
            let manager = client.proxy(&name).await?;
            read_status(&name, &manager)
                .await
                .map_err(|e| format!("{name}: {e}"))
        };
        match app.await {
            Ok(app) => apps.push(app),
            // A manager that went away meanwhile does not hide the others.
            Err(e) => {
                eprintln!("sockherd: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        let json = serde_json::to_string_pretty(&apps).map_err(|e| e.to_string())?;
        println!("{json}");
    } else if apps.is_empty() && code == ExitCode::SUCCESS {
        println!("no sockherd apps on {}", client.bus);
    } else {
        let blocks: Vec<String> = apps.iter().map(table).collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(code)
}

async fn read_status(name: &str, manager: &ManagerProxy<'_>) -> zbus::Result<AppStatus> {
    let rows: Vec<WorkerRow> = manager.list_workers().await.map_err(|e| match e {
        Error::ZBus(e) => e,
        e => zbus::Error::Failure(explain(e)),
    })?;
    let now_usec = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut rows = rows;
    rows.sort_by_key(|row| (row.id, row.started_usec));
    let processes = rows
        .into_iter()
        .map(|row| Process {
            cpu_percent: cpu_percent(row.pid, row.started_usec, now_usec),
            uptime_secs: now_usec.saturating_sub(row.started_usec) / 1_000_000,
            id: row.id,
            pid: row.pid,
            state: row.state,
            restarts: row.restarts,
            started_usec: row.started_usec,
            rss_bytes: row.rss_bytes,
            connections: row.connections,
        })
        .collect();
    Ok(AppStatus {
        app: manager.app().await?,
        bus_name: name.to_owned(),
        state: manager.state().await?,
        workers: manager.workers().await?,
        ready_workers: manager.ready_workers().await?,
        policy: manager.policy().await?,
        connections: manager.connections().await?,
        restarts: manager.restarts().await?,
        generation: manager.generation().await?,
        gave_up: manager
            .gave_up()
            .await?
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect(),
        processes,
    })
}

/// One app as text: a summary line, then a row per worker process.
fn table(app: &AppStatus) -> String {
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
    out
}

/// Average CPU use of `pid` since it started, if it is the process the
/// manager reported (same start time, to 2 s) and runs on this host.
fn cpu_percent(pid: u32, started_usec: u64, now_usec: u64) -> Option<f64> {
    let usage = crate::usage::of(pid)?;
    if usage.started_usec.abs_diff(started_usec) > 2_000_000 {
        return None;
    }
    let alive_usec = now_usec.checked_sub(started_usec).filter(|&u| u > 0)?;
    Some(usage.cpu_usec as f64 * 100.0 / alive_usec as f64)
}

/// `512B`, `3.4MiB`: one word, so the table splits on whitespace.
fn human_bytes(bytes: u64) -> String {
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
fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_arguments() {
        assert_eq!("4".parse(), Ok(ScaleTo::Exactly(4)));
        assert_eq!("+2".parse(), Ok(ScaleTo::By(2)));
        assert_eq!("-3".parse(), Ok(ScaleTo::By(-3)));
        assert!("x".parse::<ScaleTo>().is_err());
        assert!("-".parse::<ScaleTo>().is_err());
        assert!("4.5".parse::<ScaleTo>().is_err());
    }

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
