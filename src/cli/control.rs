//! The options of the commands that talk to running managers over D-Bus:
//! `status`, `scale`, `reload`, `restart`.

use std::str::FromStr;

use clap::{Args, Subcommand};

use crate::bus::plan::Bus;

/// The commands that talk to running managers.
#[derive(Debug, Subcommand)]
pub(crate) enum ControlCommand {
    /// Show apps and their workers: every app on the bus, or one.
    Status(StatusArgs),
    /// Set the number of workers (N) or change it (+N, -N).
    Scale(ScaleArgs),
    /// Replace every worker with a fresh one, without dropping a connection.
    Reload(ReloadArgs),
    /// Replace one worker, the new one ready before the old one goes.
    Restart(RestartArgs),
    /// Re-execute the manager from its binary on disk (after a package
    /// upgrade), keeping its PID, workers and sockets: every app on the bus,
    /// or one.
    Upgrade(UpgradeArgs),
}

/// Which bus the managers are on.
#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
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
    pub(crate) fn bus(&self) -> Bus {
        match (&self.address, self.user) {
            (Some(address), _) => Bus::Address(address.clone()),
            (None, true) => Bus::Session,
            (None, false) => Bus::System,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The app (its --name); every app on the bus when left out.
    pub app: Option<String>,

    /// Print JSON (an array of apps) instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// The app (its --name).
    pub app: String,

    /// N workers, or +N / -N more or fewer.
    #[arg(allow_hyphen_values = true, value_name = "N|+N|-N")]
    pub count: ScaleTo,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct ReloadArgs {
    /// The app (its --name).
    pub app: String,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    /// The app (its --name); every app on the bus when left out.
    pub app: Option<String>,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    /// The app (its --name).
    pub app: String,

    /// The worker's id (the `id` column of `sockherd status`).
    pub id: u32,

    #[command(flatten)]
    pub target: Target,
}

/// The argument of `sockherd scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleTo {
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
}
