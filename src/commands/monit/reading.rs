//! One look at the managers on the bus, every second: each one's properties
//! and its workers (`ListWorkerDetails`), and which connection owns its
//! name, so that its signals can be told apart from the others'.
//!
//! Each manager gets [`PATIENCE`] to answer: one that is stopped or
//! swamped shows as not answering, and the others are read all the same. A
//! manager older than `ListWorkerDetails` is read with `ListWorkers`, without
//! open connections and CPU time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zbus::fdo::DBusProxy;
use zbus::names::BusName;

use crate::bus::error::Error;
use crate::bus::interface::ManagerProxy;
use crate::bus::plan::bus_name;
use crate::commands::control::client::Client;

/// How long one manager may take to answer a reading.
const PATIENCE: Duration = Duration::from_secs(2);

/// One look at every manager watched.
#[derive(Debug)]
pub(super) struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// The managers, by bus name; an error when the bus could not be listed.
    pub apps: Result<Vec<AppReading>, String>,
}

/// One manager.
#[derive(Debug, Clone)]
pub(super) struct AppReading {
    /// `io.sockherd.<app>`.
    pub name: String,
    /// The unique name of the connection that owns it, which its signals
    /// come from.
    pub owner: Option<String>,
    /// What it said, or why it did not answer.
    pub data: Result<AppData, String>,
}

/// A manager's properties and workers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AppData {
    pub app: String,
    pub policy: String,
    pub generation: u32,
    /// Workers wanted.
    pub workers: u32,
    pub ready: u32,
    /// Connections dispatched since the manager started.
    pub connections: u64,
    pub restarts: u32,
    pub state: String,
    pub gave_up: Vec<u32>,
    /// By id, then start time.
    pub processes: Vec<Process>,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Process {
    pub id: u32,
    pub pid: u32,
    pub state: String,
    pub restarts: u32,
    pub started_usec: u64,
    pub rss_bytes: u64,
    /// Connections handed to it.
    pub connections: u64,
    /// Of those, still open; `None` from a manager that does not say.
    pub open: Option<u64>,
    /// CPU time used, µs; `None` from a manager that does not say.
    pub cpu_usec: Option<u64>,
}

/// Reads the managers on one bus: every one, or the one of `app`.
pub(super) struct Reader {
    client: Arc<Client>,
    /// The bus name of the one app watched.
    only: Option<String>,
    proxies: HashMap<String, ManagerProxy<'static>>,
}

impl Reader {
    pub(super) fn new(client: Arc<Client>, only: Option<&str>) -> Reader {
        Reader {
            client,
            only: only.map(bus_name_of),
            proxies: HashMap::new(),
        }
    }

    /// Reads every manager watched.
    pub(super) async fn read(&mut self) -> Reading {
        let apps = match self.client.names().await {
            Ok(names) => {
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|name| self.only.as_ref().map_or(true, |only| only == name))
                    .collect();
                self.proxies.retain(|name, _| names.contains(name));
                let mut apps = Vec::with_capacity(names.len());
                for name in names {
                    apps.push(self.read_app(name).await);
                }
                Ok(apps)
            }
            Err(e) => Err(e),
        };
        Reading {
            at: Instant::now(),
            apps,
        }
    }

    async fn read_app(&mut self, name: String) -> AppReading {
        let owner = self.owner(&name).await;
        let data = match self.proxy(&name).await {
            Ok(proxy) => match tokio::time::timeout(PATIENCE, data(&proxy)).await {
                Ok(Ok(data)) => Ok(data),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("not answering within {}s", PATIENCE.as_secs())),
            },
            Err(e) => Err(e),
        };
        AppReading { name, owner, data }
    }

    async fn proxy(&mut self, name: &str) -> Result<ManagerProxy<'static>, String> {
        if let Some(proxy) = self.proxies.get(name) {
            return Ok(proxy.clone());
        }
        let proxy = self.client.proxy(name).await?;
        self.proxies.insert(name.to_owned(), proxy.clone());
        Ok(proxy)
    }

    async fn owner(&self, name: &str) -> Option<String> {
        let dbus = DBusProxy::new(self.client.connection()).await.ok()?;
        let name = BusName::try_from(name).ok()?;
        let owner = tokio::time::timeout(PATIENCE, dbus.get_name_owner(name))
            .await
            .ok()?
            .ok()?;
        Some(owner.to_string())
    }
}

/// `app` as a bus name (it may be one already).
fn bus_name_of(app: &str) -> String {
    if app.starts_with(crate::bus::plan::NAME_PREFIX) {
        app.to_owned()
    } else {
        bus_name(app)
    }
}

/// Everything one manager says about itself.
async fn data(proxy: &ManagerProxy<'_>) -> zbus::Result<AppData> {
    let mut processes = workers(proxy).await?;
    processes.sort_by_key(|p| (p.id, p.started_usec));
    Ok(AppData {
        app: proxy.app().await?,
        policy: proxy.policy().await?,
        generation: proxy.generation().await?,
        workers: proxy.workers().await?,
        ready: proxy.ready_workers().await?,
        connections: proxy.connections().await?,
        restarts: proxy.restarts().await?,
        state: proxy.state().await?,
        gave_up: proxy
            .gave_up()
            .await?
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect(),
        processes,
    })
}

/// The workers, from `ListWorkerDetails`, or `ListWorkers` on a manager
/// that does not have it.
async fn workers(proxy: &ManagerProxy<'_>) -> zbus::Result<Vec<Process>> {
    let failed = |e: Error| match e {
        Error::ZBus(e) => e,
        e => zbus::Error::Failure(crate::commands::control::explain(e)),
    };
    match proxy.list_worker_details().await {
        Ok(rows) => Ok(rows
            .into_iter()
            .map(|w| Process {
                id: w.id,
                pid: w.pid,
                state: w.state,
                restarts: w.restarts,
                started_usec: w.started_usec,
                rss_bytes: w.rss_bytes,
                connections: w.connections,
                open: Some(w.open),
                cpu_usec: Some(w.cpu_usec),
            })
            .collect()),
        Err(Error::ZBus(zbus::Error::MethodError(name, _, _)))
            if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
        {
            let rows = proxy.list_workers().await.map_err(failed)?;
            Ok(rows
                .into_iter()
                .map(|w| Process {
                    id: w.id,
                    pid: w.pid,
                    state: w.state,
                    restarts: w.restarts,
                    started_usec: w.started_usec,
                    rss_bytes: w.rss_bytes,
                    connections: w.connections,
                    open: None,
                    cpu_usec: None,
                })
                .collect())
        }
        Err(e) => Err(failed(e)),
    }
}
