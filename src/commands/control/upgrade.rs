//! `sockherd upgrade [APP]`: re-executes managers from their binary on disk
//! (D-Bus `Reexec()`, [`crate::reexec`]) and waits until each is back.
//!
//! A manager answers `Reexec()` just before it execs, or its connection
//! closes first; either way the call is under way. It is back when its name
//! is on the bus again with a new `ImageStartedUsec`. A busy manager (a
//! reload, scale or drain under way) is asked again for [`PATIENCE`]; one
//! that refuses (its binary cannot take over) or does not come back is an
//! error, one line each, and the command exits 1.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::client::Client;
use super::explain;
use crate::bus::error::Error;
use crate::cli::control::UpgradeArgs;
use crate::print::{errln, outln};

/// How long a busy manager is asked again, and a re-executing one waited for.
const PATIENCE: Duration = Duration::from_secs(30);

/// How often a re-executing manager is looked for.
const POLL: Duration = Duration::from_millis(20);

/// How often a busy one is asked again.
const BUSY_RETRY: Duration = Duration::from_millis(500);

pub(super) async fn run(args: UpgradeArgs) -> Result<ExitCode, String> {
    let client = Client::connect(&args.target).await?;
    let names = match &args.app {
        Some(app) => vec![client.resolve(app).await?],
        None => client.names().await?,
    };
    if names.is_empty() {
        outln!("no sockherd apps on {}", client.bus)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut code = ExitCode::SUCCESS;
    for name in names {
        match upgrade(&client, &name).await {
            Ok((app, line)) => outln!("{app}: {line}")?,
            Err(e) => {
                // As the user named it, or as the bus knows it.
                let shown = args.app.as_deref().unwrap_or(&name);
                errln!("sockherd: {shown}: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

/// Re-executes the manager at bus name `name`: its app and `OLD → NEW in N ms`.
async fn upgrade(client: &Client, name: &str) -> Result<(String, String), String> {
    let manager = client.proxy(name).await.map_err(|e| e.to_string())?;
    let app = manager.app().await.map_err(|e| e.to_string())?;
    let old = manager.version().await.map_err(|e| e.to_string())?;
    let before = manager
        .image_started_usec()
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        match manager.reexec().await {
            Ok(_) => break,
            Err(Error::Busy(_)) if start.elapsed() < PATIENCE => {
                tokio::time::sleep(BUSY_RETRY).await;
            }
            // The connection closed under the call: the exec went first.
            Err(Error::ZBus(zbus::Error::InputOutput(_) | zbus::Error::MethodError(..)))
                if !still_there(client, name, before).await =>
            {
                break
            }
            Err(e) => return Err(explain(e)),
        }
    }
    let asked = Instant::now();
    while asked.elapsed() < PATIENCE {
        tokio::time::sleep(POLL).await;
        let Ok(manager) = client.proxy(name).await else {
            continue;
        };
        let Ok(started) = manager.image_started_usec().await else {
            continue;
        };
        if started != before && started != 0 {
            let new = manager.version().await.map_err(|e| e.to_string())?;
            let took = asked.elapsed().as_millis();
            return Ok((app, format!("{old} → {new} in {took} ms")));
        }
    }
    Err(format!(
        "the manager did not come back re-executed within {}s; see its journal",
        PATIENCE.as_secs()
    ))
}

/// Whether the manager at `name` still runs the image that started at `before`.
async fn still_there(client: &Client, name: &str, before: u64) -> bool {
    match client.proxy(name).await {
        Ok(manager) => manager.image_started_usec().await.ok() == Some(before),
        Err(_) => false,
    }
}
