//! What the keys that change something do: the same D-Bus calls as `sockherd
//! reload`, `scale` and `restart`, each on a task of its own so that the view
//! goes on while a reload takes its time. The outcome comes back as one line
//! for the view; a refusal (`AccessDenied` for a user who may only watch) is
//! such a line too, never an error that ends the view.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::bus::error::Error;
use crate::commands::control::client::Client;
use crate::commands::control::explain;

/// A change asked for with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Reload,
    ScaleBy(i32),
    RestartWorker(u32),
}

impl Change {
    /// What is under way, for the view while it is.
    pub(super) fn doing(self, app: &str) -> String {
        match self {
            Change::Reload => format!("{app}: reloading…"),
            Change::ScaleBy(delta) => format!("{app}: scaling by {delta:+}…"),
            Change::RestartWorker(id) => format!("{app}: replacing worker {id}…"),
        }
    }
}

/// How one change went, for the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outcome {
    pub app: String,
    pub text: String,
}

/// Starts `change` of the app owning `bus_name`; its outcome is sent to `done`.
pub(super) fn start(
    client: Arc<Client>,
    bus_name: String,
    app: String,
    change: Change,
    done: UnboundedSender<Outcome>,
) {
    tokio::spawn(async move {
        let text = match perform(&client, &bus_name, change).await {
            Ok(text) | Err(text) => text,
        };
        let _ = done.send(Outcome { app, text });
    });
}

async fn perform(client: &Client, bus_name: &str, change: Change) -> Result<String, String> {
    let manager = client.proxy(bus_name).await?;
    match change {
        Change::Reload => {
            manager.reload().await.map_err(refusal)?;
            let generation = manager.generation().await.map_err(|e| e.to_string())?;
            Ok(format!("reloaded: generation {generation} serves"))
        }
        Change::ScaleBy(delta) => {
            let count = manager.scale_by(delta).await.map_err(refusal)?;
            Ok(format!("scaled to {count} workers"))
        }
        Change::RestartWorker(id) => {
            manager.restart_worker(id).await.map_err(refusal)?;
            Ok(format!("worker {id} replaced"))
        }
    }
}

/// A refused or failed call as one line.
fn refusal(e: Error) -> String {
    match e {
        Error::AccessDenied(why) => format!("not allowed: {why}"),
        e => format!("refused: {}", explain(e)),
    }
}
