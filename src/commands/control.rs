//! `sockherd status|scale|reload|restart|upgrade`: the command line's way to the
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

pub(super) mod client;
pub(super) mod table;
mod upgrade;

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use client::Client;
use table::{cpu_percent, table, AppStatus, Process};

use crate::bus::error::Error;
use crate::bus::interface::{ManagerProxy, WorkerRow};
use crate::cli::control::{ControlCommand, ScaleTo, StatusArgs};
use crate::print::{errln, outln};

/// Runs one command and prints its outcome; errors are one line on stderr.
pub(crate) fn run(command: ControlCommand, runtime: &tokio::runtime::Runtime) -> ExitCode {
    match runtime.block_on(execute(command)) {
        Ok(code) => code,
        Err(e) => {
            errln!("sockherd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: ControlCommand) -> Result<ExitCode, String> {
    match command {
        ControlCommand::Status(args) => status(args).await,
        ControlCommand::Scale(args) => {
            let client = Client::connect(&args.target).await?;
            let manager = client.manager(&args.app).await?;
            let count = match args.count {
                ScaleTo::Exactly(count) => manager.scale(count).await.map(|()| count),
                ScaleTo::By(delta) => manager.scale_by(delta).await,
            }
            .map_err(|e| format!("{}: {}", args.app, explain(e)))?;
            outln!("{}: {count} workers", args.app)?;
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Reload(args) => {
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
            outln!("{}: reloaded, generation {generation}", args.app)?;
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Restart(args) => {
            let client = Client::connect(&args.target).await?;
            let manager = client.manager(&args.app).await?;
            manager
                .restart_worker(args.id)
                .await
                .map_err(|e| format!("{}: {}", args.app, explain(e)))?;
            outln!("{}: worker {} restarted", args.app, args.id)?;
            Ok(ExitCode::SUCCESS)
        }
        ControlCommand::Upgrade(args) => upgrade::run(args).await,
    }
}

/// A manager's error as one line: its message, and the error's name when it
/// is not one of sockherd's own.
pub(super) fn explain(e: Error) -> String {
    match e {
        Error::InvalidArgs(m) | Error::Busy(m) | Error::AccessDenied(m) | Error::Failed(m) => m,
        Error::ZBus(zbus::Error::MethodError(name, Some(message), _)) => {
            format!("{message} ({name})")
        }
        Error::ZBus(e) => e.to_string(),
    }
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
                errln!("sockherd: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        let json = serde_json::to_string_pretty(&apps).map_err(|e| e.to_string())?;
        outln!("{json}")?;
    } else if apps.is_empty() && code == ExitCode::SUCCESS {
        outln!("no sockherd apps on {}", client.bus)?;
    } else {
        let blocks: Vec<String> = apps.iter().map(table).collect();
        crate::print::stdout(format_args!("{}", blocks.join("\n")))?;
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
        version: manager.version().await?,
        image_started_usec: manager.image_started_usec().await?,
        processes,
    })
}
