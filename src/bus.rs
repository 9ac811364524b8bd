//! The manager on D-Bus: `io.sockherd.<app>`, object `/io/sockherd/Manager`,
//! interface `io.sockherd.Manager1` (reference: `docs/dbus.md`).
//!
//! This module is a thin translation layer over [`crate::report`]: property
//! reads come from the pool's [`Snapshot`], `PropertiesChanged` is emitted
//! whenever that snapshot changes, the `WorkerStarted`/`WorkerExited`/`Reloaded`
//! signals are the pool's [`Event`]s, and every method is one [`Request`].
//! Nothing here owns state of its own.
//!
//! Which bus: `--bus system|session|none`, or `--bus auto` (the default), which
//! takes the system bus when running as a systemd system service, the session
//! bus when one is advertised, and no bus otherwise ([`plan`]). The bus is the
//! control plane only: when it cannot be reached the manager logs it (a warning
//! in auto mode, an error when the bus was asked for) and keeps serving
//! connections.
//!
//! Anyone may read; only root, the manager's own user and members of
//! `--control-group` may call the methods that change something (`Access`).
//! The bus policy in `packaging/dbus/io.sockherd.conf` adds the other half:
//! only root and the package's user `sockherd` may own `io.sockherd.*` on the
//! system bus.

use std::collections::HashMap;
use std::fmt;

use clap::Args;
use nix::unistd::{geteuid, getgrouplist, Group, User};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::spawn_local;
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};
use zbus::message::Header;
use zbus::names::{InterfaceName, WellKnownName};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{Type, Value};
use zbus::{interface, Connection};

use crate::report::{Event, Handle, Request, RequestError, Snapshot};

/// The object every manager serves.
pub const PATH: &str = "/io/sockherd/Manager";
/// The interface on [`PATH`].
pub const INTERFACE: &str = "io.sockherd.Manager1";
/// Every manager's well-known name starts with this; the app's name follows.
pub const NAME_PREFIX: &str = "io.sockherd.";

/// `--bus`: which bus the manager serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BusKind {
    /// The system bus when run as a systemd system service, else the session
    /// bus if there is one, else none.
    Auto,
    System,
    Session,
    /// No D-Bus at all.
    None,
}

/// The D-Bus options of `sockherd serve`.
#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// Which bus to serve the control interface on.
    #[arg(long, value_enum, default_value_t = BusKind::Auto)]
    pub bus: BusKind,

    /// Connect to the bus at this address (e.g. unix:path=/run/x/bus) instead
    /// of the system or session bus.
    #[arg(long, value_name = "ADDRESS")]
    pub bus_address: Option<String>,

    /// Members of this group may scale, reload and restart, like root and the
    /// manager's own user.
    #[arg(long, value_name = "NAME")]
    pub control_group: Option<String>,
}

/// A bus to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
    Address(String),
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bus::System => f.write_str("the system bus"),
            Bus::Session => f.write_str("the session bus"),
            Bus::Address(address) => write!(f, "the bus at {address}"),
        }
    }
}

/// What the manager will do on D-Bus, decided before anything starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where to connect; `None` means no D-Bus.
    pub bus: Option<Bus>,
    /// Why this bus, for the log line that says what was picked.
    pub why: String,
    /// The bus was asked for by name: failing to use it is an error rather
    /// than a warning.
    pub explicit: bool,
    /// `io.sockherd.<app>`.
    pub name: String,
    /// `--control-group`.
    pub control_group: Option<String>,
}

/// Decides the bus from the options and the environment. Errors are one line.
pub fn plan(args: &BusArgs, app: &str) -> Result<Plan, String> {
    let user_bus = || {
        std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|dir| std::path::Path::new(&dir).join("bus").exists())
    };
    choose(
        args,
        app,
        |key| std::env::var(key).ok().filter(|v| !v.is_empty()),
        geteuid().as_raw(),
        user_bus,
    )
}

/// [`plan`] with its inputs passed in, so every rule can be tested.
fn choose(
    args: &BusArgs,
    app: &str,
    env: impl Fn(&str) -> Option<String>,
    uid: u32,
    user_bus: impl Fn() -> bool,
) -> Result<Plan, String> {
    let (bus, why, explicit) = match (&args.bus_address, args.bus) {
        (Some(_), BusKind::None) => {
            return Err("--bus-address and --bus none contradict each other".into())
        }
        (Some(address), _) => (
            Some(Bus::Address(address.clone())),
            "--bus-address".to_owned(),
            true,
        ),
        (None, BusKind::None) => (None, "--bus none".to_owned(), true),
        (None, BusKind::System) => (Some(Bus::System), "--bus system".to_owned(), true),
        (None, BusKind::Session) => (Some(Bus::Session), "--bus session".to_owned(), true),
        (None, BusKind::Auto) => {
            let (bus, why) = if env("INVOCATION_ID").is_some() && uid == 0 {
                (
                    Some(Bus::System),
                    "running as a systemd system service (INVOCATION_ID set, uid 0)",
                )
            } else if env("DBUS_SYSTEM_BUS_ADDRESS").is_some() {
                (Some(Bus::System), "DBUS_SYSTEM_BUS_ADDRESS is set")
            } else if env("DBUS_SESSION_BUS_ADDRESS").is_some() {
                (Some(Bus::Session), "DBUS_SESSION_BUS_ADDRESS is set")
            } else if env("INVOCATION_ID").is_some() && user_bus() {
                (
                    Some(Bus::Session),
                    "running as a systemd user service with a user bus",
                )
            } else {
                (
                    None,
                    "not a systemd system service and no session bus advertised",
                )
            };
            (bus, format!("--bus auto: {why}"), false)
        }
    };
    let name = bus_name(app);
    if bus.is_some() {
        WellKnownName::try_from(name.as_str())
            .map_err(|e| format!("cannot use {name:?} as a D-Bus name: {e}"))?;
    }
    if args.control_group.as_deref() == Some("") {
        return Err("--control-group needs a group name".into());
    }
    Ok(Plan {
        bus,
        why,
        explicit,
        name,
        control_group: args.control_group.clone(),
    })
}

/// The well-known name of `app`'s manager: `io.sockherd.` and the app's name
/// with every character outside `[A-Za-z0-9_]` turned into `_`, and a `_` put
/// in front of a leading digit (or of nothing, for an empty name), because a
/// D-Bus name element may not start with a digit.
pub fn bus_name(app: &str) -> String {
    let mut element: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if element.is_empty() || element.starts_with(|c: char| c.is_ascii_digit()) {
        element.insert(0, '_');
    }
    format!("{NAME_PREFIX}{element}")
}

/// Starts the D-Bus service in the background, as the plan says. It never
/// stops the manager: failures are logged and the manager goes on serving.
pub fn start(plan: Plan, pool: Handle) {
    let Some(bus) = plan.bus.clone() else {
        tracing::info!("D-Bus: not used ({})", plan.why);
        return;
    };
    tracing::info!("D-Bus: serving {} on {bus} ({})", plan.name, plan.why);
    spawn_local(async move {
        // Subscribed before connecting so no event is lost in between.
        let events = pool.events.subscribe();
        let connection = match connect(&bus, &plan, pool.clone()).await {
            Ok(connection) => connection,
            Err(e) => {
                if plan.explicit {
                    tracing::error!(
                        event = "dbus-failed",
                        "D-Bus: cannot serve {} on {bus}: {e}; going on without D-Bus",
                        plan.name
                    );
                } else {
                    tracing::warn!(
                        event = "dbus-failed",
                        "D-Bus: cannot serve {} on {bus}: {e}; going on without D-Bus",
                        plan.name
                    );
                }
                return;
            }
        };
        tracing::info!(event = "dbus-ready", "D-Bus: {} is ready", plan.name);
        forward(&connection, pool, events).await;
    });
}

/// Connects, serves the object, then takes the name (so the name never
/// points at a half-ready service). The name is not queued for and not taken
/// from another owner: two managers of the same app is a mistake to report.
async fn connect(bus: &Bus, plan: &Plan, pool: Handle) -> Result<Connection, String> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
    }
    .map_err(|e| e.to_string())?;
    let connection = builder.build().await.map_err(|e| e.to_string())?;
    if let Some(group) = &plan.control_group {
        if matches!(Group::from_name(group), Ok(None)) {
            tracing::warn!("D-Bus: --control-group {group}: no such group; only root and the manager's user may control it");
        }
    }
    let manager = Manager {
        pool,
        access: Access {
            own_uid: geteuid().as_raw(),
            control_group: plan.control_group.clone(),
        },
    };
    connection
        .object_server()
        .at(PATH, manager)
        .await
        .map_err(|e| e.to_string())?;
    let reply = connection
        .request_name_with_flags(plan.name.as_str(), RequestNameFlags::DoNotQueue.into())
        .await
        .map_err(|e| match e {
            zbus::Error::NameTaken => format!("{} is owned by another process", plan.name),
            e => format!("cannot own {}: {e}", plan.name),
        })?;
    match reply {
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => Ok(connection),
        RequestNameReply::Exists | RequestNameReply::InQueue => Err(format!(
            "{} is owned by another process (another manager with the same --name?)",
            plan.name
        )),
    }
}

/// Turns snapshot changes into `PropertiesChanged` and pool events into
/// signals, until the pool is gone.
async fn forward(
    connection: &Connection,
    pool: Handle,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) {
    let emitter = match SignalEmitter::new(connection, PATH) {
        Ok(emitter) => emitter,
        Err(e) => {
            tracing::error!("D-Bus: cannot emit signals: {e}");
            return;
        }
    };
    let mut snapshot = pool.snapshot.clone();
    let mut last = snapshot.borrow_and_update().clone();
    loop {
        tokio::select! {
            changed = snapshot.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = snapshot.borrow_and_update().clone();
                let changes = changed_properties(&last, &now);
                last = now;
                if changes.is_empty() {
                    continue;
                }
                let changes: HashMap<&str, Value<'_>> = changes.into_iter().collect();
                let interface = InterfaceName::from_static_str_unchecked(INTERFACE);
                if let Err(e) =
                    zbus::fdo::Properties::properties_changed(&emitter, interface, changes, (&[]).into()).await
                {
                    tracing::debug!("D-Bus: cannot emit PropertiesChanged: {e}");
                }
            }
            event = events.recv() => {
                let sent = match event {
                    Ok(Event::WorkerStarted { id, pid }) => Manager::worker_started(&emitter, id, pid).await,
                    Ok(Event::WorkerExited { id, pid, status, reason }) => {
                        Manager::worker_exited(&emitter, id, pid, status, &reason).await
                    }
                    Ok(Event::Reloaded { generation, ok }) => Manager::reloaded(&emitter, generation, ok).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!("D-Bus: {missed} worker events were not signalled (too many at once)");
                        Ok(())
                    }
                    Err(RecvError::Closed) => return,
                };
                if let Err(e) = sent {
                    tracing::debug!("D-Bus: cannot emit a signal: {e}");
                }
            }
        }
    }
}

/// The properties whose values differ between two snapshots, with their new
/// values. `Connections` is never here: it changes with every connection and
/// is read on demand.
fn changed_properties(old: &Snapshot, new: &Snapshot) -> Vec<(&'static str, Value<'static>)> {
    let mut changes = Vec::new();
    if old.app != new.app {
        changes.push(("App", Value::from(new.app.clone())));
    }
    if old.target != new.target {
        changes.push(("Workers", Value::from(new.target)));
    }
    if old.ready != new.ready {
        changes.push(("ReadyWorkers", Value::from(new.ready)));
    }
    if old.state != new.state {
        changes.push(("State", Value::from(new.state.as_str())));
    }
    if old.policy != new.policy {
        changes.push(("Policy", Value::from(new.policy.clone())));
    }
    if old.restarts != new.restarts {
        changes.push(("Restarts", Value::from(new.restarts)));
    }
    if old.generation != new.generation {
        changes.push(("Generation", Value::from(new.generation)));
    }
    if old.gave_up != new.gave_up {
        changes.push(("GaveUp", Value::from(gave_up(new))));
    }
    changes
}

/// `GaveUp`: the ids of the slots that gave up, as decimal strings (the
/// interface's `as` signature).
fn gave_up(snapshot: &Snapshot) -> Vec<String> {
    snapshot.gave_up.iter().map(u32::to_string).collect()
}

/// A D-Bus error reply: `io.sockherd.Error.<variant>` with a human message.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.sockherd.Error", impl_display = true)]
pub enum Error {
    /// A failure of D-Bus itself (only ever seen by clients).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The arguments were refused; nothing changed.
    InvalidArgs(String),
    /// Something else is under way (a reload); try again after it.
    Busy(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// It was tried and did not work.
    Failed(String),
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::InvalidArgs(m) => Error::InvalidArgs(m),
            RequestError::Busy(m) => Error::Busy(m),
            RequestError::Failed(m) => Error::Failed(m),
        }
    }
}

/// One row of `ListWorkers`, signature `(uusuttt)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct WorkerRow {
    pub id: u32,
    pub pid: u32,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// Restarts of this worker's slot after crashes.
    pub restarts: u32,
    /// Start time, µs since the Unix epoch.
    pub started_usec: u64,
    pub rss_bytes: u64,
    /// Connections dispatched to this process.
    pub connections: u64,
}

/// Who may call the mutating methods.
#[derive(Debug, Clone)]
struct Access {
    /// The manager's own user: it could signal the manager anyway, and on a
    /// session bus it is the only user there is.
    own_uid: u32,
    /// `--control-group`, looked up at each call so membership changes apply
    /// without a restart.
    control_group: Option<String>,
}

impl Access {
    /// Lets the call through (and logs who made it) or says why not.
    async fn check(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        method: &str,
    ) -> Result<(), Error> {
        let sender = header
            .sender()
            .ok_or_else(|| Error::AccessDenied("the call has no sender".into()))?;
        let dbus = DBusProxy::builder(connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| Error::Failed(format!("cannot ask the bus who is calling: {e}")))?;
        let uid = dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| Error::Failed(format!("cannot ask the bus who {sender} is: {e}")))?;
        if uid == 0 || uid == self.own_uid {
            tracing::info!(event = "dbus-call", "D-Bus: {method} from uid {uid}");
            return Ok(());
        }
        if let Some(group) = &self.control_group {
            let lookup = group.clone();
            let member = tokio::task::spawn_blocking(move || in_group(uid, &lookup))
                .await
                .map_err(|e| Error::Failed(format!("group lookup failed: {e}")))?;
            match member {
                Ok(true) => {
                    tracing::info!(
                        event = "dbus-call",
                        "D-Bus: {method} from uid {uid} (group {group})"
                    );
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("D-Bus: {e}"),
            }
        }
        let mut allowed = vec!["root".to_owned()];
        if self.own_uid != 0 {
            allowed.push(format!("uid {}", self.own_uid));
        }
        if let Some(group) = &self.control_group {
            allowed.push(format!("members of group {group}"));
        }
        tracing::warn!(
            event = "dbus-denied",
            "D-Bus: refused {method} from uid {uid} ({sender})"
        );
        let allowed = match allowed.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(Error::AccessDenied(format!(
            "uid {uid} may not call {method}: only {allowed} may change this app"
        )))
    }
}

/// Whether `uid` is in `group`, counting its primary group and every
/// supplementary one the system's user database knows.
fn in_group(uid: u32, group: &str) -> Result<bool, String> {
    let Some(group) =
        Group::from_name(group).map_err(|e| format!("cannot look up group {group}: {e}"))?
    else {
        return Ok(false);
    };
    let Some(user) =
        User::from_uid(uid.into()).map_err(|e| format!("cannot look up uid {uid}: {e}"))?
    else {
        return Ok(false);
    };
    if user.gid == group.gid {
        return Ok(true);
    }
    let name = std::ffi::CString::new(user.name.clone())
        .map_err(|_| format!("user name of uid {uid} is not a C string"))?;
    let groups = getgrouplist(&name, user.gid)
        .map_err(|e| format!("cannot list the groups of {}: {e}", user.name))?;
    Ok(groups.contains(&group.gid))
}

/// Logs a mutating call's refusal (the pool logs what it does) and turns
/// the pool's answer into the reply.
fn answer<T>(call: &str, result: Result<T, RequestError>) -> Result<T, Error> {
    if let Err(e) = &result {
        tracing::info!(event = "dbus-refused", "D-Bus: {call} refused: {e}");
    }
    result.map_err(Error::from)
}

/// The object at [`PATH`]. `Send + Sync`: it holds only the pool's handle.
struct Manager {
    /// The pool: its snapshot answers the properties, its requests carry the methods.
    pool: Handle,
    /// Who may call the methods that change something.
    access: Access,
}

#[interface(
    name = "io.sockherd.Manager1",
    proxy(default_path = "/io/sockherd/Manager", gen_blocking = false)
)]
impl Manager {
    /// Sets the number of workers; returns once the new ones are ready or the
    /// removed ones have drained.
    async fn scale(
        &self,
        count: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let call = format!("Scale({count})");
        self.access.check(connection, &header, &call).await?;
        let result = self.pool.ask(|reply| Request::Scale(count, reply)).await;
        answer(&call, result).map(drop)
    }

    /// Changes the number of workers by `delta`; returns the new number.
    async fn scale_by(
        &self,
        delta: i32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<u32, Error> {
        let call = format!("ScaleBy({delta})");
        self.access.check(connection, &header, &call).await?;
        let result = self.pool.ask(|reply| Request::ScaleBy(delta, reply)).await;
        answer(&call, result)
    }

    /// Replaces every worker, a batch at a time; returns once done.
    async fn reload(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let call = "Reload()";
        self.access.check(connection, &header, call).await?;
        let result = self.pool.ask(Request::Reload).await;
        answer(call, result).map(drop)
    }

    /// Replaces one worker, the new one ready before the old one goes.
    async fn restart_worker(
        &self,
        id: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), Error> {
        let call = format!("RestartWorker({id})");
        self.access.check(connection, &header, &call).await?;
        let result = self
            .pool
            .ask(|reply| Request::RestartWorker(id, reply))
            .await;
        answer(&call, result)
    }

    /// Every worker process: id, pid, state, restarts, start time (µs since
    /// the epoch), RSS bytes, connections dispatched.
    async fn list_workers(&self) -> Result<Vec<WorkerRow>, Error> {
        let status = self.pool.ask(Request::Status).await?;
        Ok(status
            .workers
            .into_iter()
            .map(|w| WorkerRow {
                id: w.id,
                pid: w.pid,
                state: w.state,
                restarts: w.restarts,
                started_usec: w.started_usec,
                rss_bytes: w.rss_bytes,
                connections: w.connections,
            })
            .collect())
    }

    /// The app's name (`--name`).
    #[zbus(property)]
    fn app(&self) -> String {
        self.pool.snapshot.borrow().app.clone()
    }

    /// Workers wanted.
    #[zbus(property)]
    fn workers(&self) -> u32 {
        self.pool.snapshot.borrow().target
    }

    /// Workers taking connections now.
    #[zbus(property)]
    fn ready_workers(&self) -> u32 {
        self.pool.snapshot.borrow().ready
    }

    /// `starting`, `running`, `reloading`, `degraded` or `stopping`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.pool.snapshot.borrow().state.as_str().to_owned()
    }

    /// The dispatch policy: `rr`, `least-conn`, `ip-hash` or `none` (shared accept).
    #[zbus(property)]
    fn policy(&self) -> String {
        self.pool.snapshot.borrow().policy.clone()
    }

    /// Connections dispatched since the manager started. Changes with every
    /// connection, so no change signal.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn connections(&self) -> zbus::fdo::Result<u64> {
        self.pool
            .ask(Request::Connections)
            .await
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// Restarts after crashes, over all workers, since the manager started.
    #[zbus(property)]
    fn restarts(&self) -> u32 {
        self.pool.snapshot.borrow().restarts
    }

    /// Bumped by every successful reload; starts at 1.
    #[zbus(property)]
    fn generation(&self) -> u32 {
        self.pool.snapshot.borrow().generation
    }

    /// The ids (decimal) of workers that crashed too often and gave up.
    #[zbus(property)]
    fn gave_up(&self) -> Vec<String> {
        gave_up(&self.pool.snapshot.borrow())
    }

    /// A worker process started (`id` is its slot).
    #[zbus(signal)]
    async fn worker_started(emitter: &SignalEmitter<'_>, id: u32, pid: u32) -> zbus::Result<()>;

    /// A worker process exited: `status` is its exit code or the negated
    /// signal number; `reason` says why in words.
    #[zbus(signal)]
    async fn worker_exited(
        emitter: &SignalEmitter<'_>,
        id: u32,
        pid: u32,
        status: i32,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A reload finished, to `generation`; `ok` false means it was rolled back.
    #[zbus(signal)]
    async fn reloaded(emitter: &SignalEmitter<'_>, generation: u32, ok: bool) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::PoolState;

    fn args(bus: BusKind, address: Option<&str>) -> BusArgs {
        BusArgs {
            bus,
            bus_address: address.map(str::to_owned),
            control_group: None,
        }
    }

    fn auto(vars: &[(&str, &str)], uid: u32, user_bus: bool) -> Option<Bus> {
        let env = |key: &str| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        choose(&args(BusKind::Auto, None), "app", env, uid, || user_bus)
            .map(|plan| {
                assert!(!plan.explicit);
                plan.bus
            })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names() {
        assert_eq!(bus_name("hello"), "io.sockherd.hello");
        assert_eq!(bus_name("my-app.v2"), "io.sockherd.my_app_v2");
        assert_eq!(bus_name("9lives"), "io.sockherd._9lives");
        assert_eq!(bus_name(""), "io.sockherd._");
        assert_eq!(bus_name("héllo"), "io.sockherd.h_llo");
        assert_eq!(bus_name("Snake_Case9"), "io.sockherd.Snake_Case9");
    }

    #[test]
    fn auto_choice() {
        assert_eq!(auto(&[("INVOCATION_ID", "x")], 0, false), Some(Bus::System));
        assert_eq!(
            auto(
                &[
                    ("INVOCATION_ID", "x"),
                    ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/a")
                ],
                0,
                true
            ),
            Some(Bus::System)
        );
        assert_eq!(
            auto(&[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/s")], 1000, false),
            Some(Bus::System)
        );
        assert_eq!(
            auto(&[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/a")], 0, false),
            Some(Bus::Session)
        );
        assert_eq!(
            auto(&[("INVOCATION_ID", "x")], 1000, true),
            Some(Bus::Session)
        );
        assert_eq!(auto(&[("INVOCATION_ID", "x")], 1000, false), None);
        assert_eq!(auto(&[], 0, true), None);
    }

    #[test]
    fn explicit_choice() {
        let none = |_: &str| None;
        let plan = choose(&args(BusKind::Session, None), "a", none, 0, || false).unwrap();
        assert_eq!((plan.bus, plan.explicit), (Some(Bus::Session), true));
        let plan = choose(&args(BusKind::None, None), "a", none, 0, || false).unwrap();
        assert_eq!(plan.bus, None);
        let plan = choose(
            &args(BusKind::System, Some("unix:path=/x")),
            "a",
            none,
            0,
            || false,
        )
        .unwrap();
        assert_eq!(plan.bus, Some(Bus::Address("unix:path=/x".into())));
        assert!(choose(
            &args(BusKind::None, Some("unix:path=/x")),
            "a",
            none,
            0,
            || false
        )
        .is_err());
        let long = "x".repeat(300);
        assert!(choose(&args(BusKind::Session, None), &long, none, 0, || false).is_err());
        assert!(choose(&args(BusKind::None, None), &long, none, 0, || false).is_ok());
    }

    #[test]
    fn property_changes() {
        let before = Snapshot {
            app: "a".into(),
            target: 2,
            ready: 1,
            state: PoolState::Starting,
            restarts: 0,
            generation: 1,
            gave_up: vec![],
            policy: "rr".into(),
        };
        assert!(changed_properties(&before, &before).is_empty());
        let after = Snapshot {
            ready: 2,
            state: PoolState::Running,
            gave_up: vec![3],
            ..before.clone()
        };
        let names: Vec<&str> = changed_properties(&before, &after)
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(names, ["ReadyWorkers", "State", "GaveUp"]);
        let gave_up = &changed_properties(&before, &after)[2].1;
        assert_eq!(gave_up, &Value::from(vec!["3".to_owned()]));
    }
}
