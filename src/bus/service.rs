//! The D-Bus service: connect, serve the object, take the name, and turn the
//! pool's snapshot changes into `PropertiesChanged` and its events into
//! signals until the manager stops.
//!
//! The bus is the control plane only: when it cannot be reached the manager
//! logs it (a warning in auto mode, an error when the bus was asked for) and
//! keeps serving connections.

use std::collections::HashMap;
use std::sync::Arc;

use nix::unistd::{geteuid, Group};
use tokio::sync::broadcast::error::RecvError;
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;
use zbus::Connection;

use super::access::Access;
use super::interface::{gave_up, Manager, INTERFACE, PATH};
use super::plan::{Bus, Plan};
use crate::pool::report::{Event, Handle, Snapshot};
use crate::pool::usage;
use crate::reexec::Trigger;
use crate::shutdown::Token;

/// Serves the manager on D-Bus as the plan says, until `stop` is requested;
/// then the name is released. It never stops the manager: failures are
/// logged and the manager goes on serving.
pub(crate) async fn serve(
    plan: Plan,
    pool: Handle,
    usage: Arc<usage::Cache>,
    reexec: Trigger,
    mut stop: Token,
) {
    let Some(bus) = plan.bus.clone() else {
        tracing::info!("D-Bus: not used ({})", plan.why);
        return;
    };
    tracing::info!("D-Bus: serving {} on {bus} ({})", plan.name, plan.why);
    // Subscribed before connecting so no event is lost in between.
    let events = pool.events.subscribe();
    let connected = tokio::select! {
        connected = connect(&bus, &plan, pool.clone(), usage, reexec) => connected,
        _ = stop.requested() => return,
    };
    let connection = match connected {
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
    forward(&connection, pool, events, stop).await;
}

/// Connects, serves the object, then takes the name (so the name never
/// points at a half-ready service). The name is not queued for and not taken
/// from another owner: two managers of the same app is a mistake to report.
async fn connect(
    bus: &Bus,
    plan: &Plan,
    pool: Handle,
    usage: Arc<usage::Cache>,
    reexec: Trigger,
) -> Result<Connection, String> {
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
        usage,
        reexec,
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
/// signals, until the pool is gone or `stop` is requested.
async fn forward(
    connection: &Connection,
    pool: Handle,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    mut stop: Token,
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
            _ = stop.requested() => return,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::report::PoolState;

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
