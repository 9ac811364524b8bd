//! Which bus the manager serves on, and under which name.
//!
//! `--bus system|session|none`, or `--bus auto` (the default), which takes the
//! system bus when running as a systemd system service, the session bus when
//! one is advertised, and no bus otherwise. The name is `io.sockherd.<app>`.
//! Everything is decided before anything starts, so a bad choice is one line.

use std::fmt;

use clap::Args;
use nix::unistd::geteuid;
use zbus::names::WellKnownName;

/// Every manager's well-known name starts with this; the app's name follows.
pub(crate) const NAME_PREFIX: &str = "io.sockherd.";

/// `--bus`: which bus the manager serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BusKind {
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
pub(crate) struct BusArgs {
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
pub(crate) enum Bus {
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
pub(crate) struct Plan {
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
pub(crate) fn plan(args: &BusArgs, app: &str) -> Result<Plan, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
