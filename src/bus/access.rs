//! Who may change an app over D-Bus.
//!
//! Anyone may read; only root, the manager's own user and members of
//! `--control-group` may call the methods that change something. The bus
//! policy in `packaging/dbus/io.sockherd.conf` adds the other half: only root
//! and the package's user `sockherd` may own `io.sockherd.*` on the system
//! bus.

use nix::unistd::{getgrouplist, Group, User};
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::Connection;

use super::error::Error;

/// Who may call the mutating methods.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// The manager's own user: it could signal the manager anyway, and on a
    /// session bus it is the only user there is.
    pub own_uid: u32,
    /// `--control-group`, looked up at each call so membership changes apply
    /// without a restart.
    pub control_group: Option<String>,
}

impl Access {
    /// Lets the call through (and logs who made it) or says why not.
    pub(crate) async fn check(
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
