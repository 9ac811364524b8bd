//! A connection to one bus, and how managers are found on it: by their
//! well-known names, `io.sockherd.<app>`.

use zbus::fdo::DBusProxy;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::bus::interface::ManagerProxy;
use crate::bus::plan::{bus_name, Bus, NAME_PREFIX};
use crate::cli::control::Target;

/// A connection to one bus, and what is needed to find managers on it.
pub(in crate::commands) struct Client {
    /// Our own connection to the bus.
    connection: Connection,
    /// Which bus, for messages.
    pub bus: Bus,
}

impl Client {
    pub(in crate::commands) async fn connect(target: &Target) -> Result<Client, String> {
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

    /// The connection itself, for what the methods here do not cover
    /// (subscribing to signals).
    pub(in crate::commands) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The well-known names of every manager on the bus, sorted.
    pub(in crate::commands) async fn names(&self) -> Result<Vec<String>, String> {
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
    pub(in crate::commands) async fn manager(
        &self,
        app: &str,
    ) -> Result<ManagerProxy<'static>, String> {
        let name = self.resolve(app).await?;
        self.proxy(&name).await
    }

    /// The bus name of `app`'s manager, if it is on the bus.
    pub(in crate::commands) async fn resolve(&self, app: &str) -> Result<String, String> {
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
    pub(in crate::commands) async fn proxy(
        &self,
        name: &str,
    ) -> Result<ManagerProxy<'static>, String> {
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
