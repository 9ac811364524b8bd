//! The options of `sockherd import`: a PM2 ecosystem file in, the units of
//! its apps out, as `sockherd unit` writes them.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use super::unit::{parse_absolute, Listen, DEFAULT_USER};

/// `sockherd import FILE`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ImportArgs {
    /// The PM2 ecosystem file: ecosystem.config.js (.cjs, .mjs; evaluated by
    /// running `node`), .json or .yaml/.yml.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Apply env_NAME over env, as `pm2 start … --env NAME` does.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,

    /// Import only these apps (PM2's --only); repeatable or comma-separated.
    #[arg(long, value_name = "APP", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Where an app's socket listens: APP=ADDR for that app, ADDR for every
    /// app; ADDR as `sockherd unit --listen` takes it. Repeatable. Default:
    /// the port in the app's env.PORT (or PM2's `port`).
    #[arg(long, value_name = "[APP=]ADDR")]
    pub listen: Vec<ListenFor>,

    /// The user the apps run as, unless the app sets PM2's `uid`.
    #[arg(long, value_name = "USER", default_value = DEFAULT_USER)]
    pub run_as: String,

    /// The sockherd binary the services run (default: this one).
    #[arg(long, value_name = "PATH", value_parser = parse_absolute)]
    pub sockherd: Option<String>,

    /// Write the units to /etc/systemd/system and run `systemctl daemon-reload`.
    #[arg(long, conflicts_with = "output")]
    pub install: bool,

    /// Write the units into DIR (no daemon-reload).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Replace units that exist with different contents.
    #[arg(long)]
    pub force: bool,
}

/// One `--listen [APP=]ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenFor {
    /// The app it is for; every app when `None`.
    pub app: Option<String>,
    pub addr: Listen,
}

impl FromStr for ListenFor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // An address never holds `=`: what comes before one is an app.
        match text.split_once('=') {
            Some((app, addr)) if !app.is_empty() => Ok(ListenFor {
                app: Some(app.to_owned()),
                addr: addr.parse()?,
            }),
            Some(_) => Err(format!("{text:?}: expected ADDR or APP=ADDR")),
            None => Ok(ListenFor {
                app: None,
                addr: text.parse()?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_for_an_app_or_every_app() {
        let web: ListenFor = "web=8080".parse().expect("parses");
        assert_eq!(web.app.as_deref(), Some("web"));
        assert_eq!(web.addr, Listen("8080".into()));
        let every: ListenFor = "127.0.0.1:80".parse().expect("parses");
        assert_eq!(every.app, None);
        assert!("=80".parse::<ListenFor>().is_err());
        assert!("web=".parse::<ListenFor>().is_err());
        assert!("web=x".parse::<ListenFor>().is_err());
    }
}
