//! The options of `sockherd logs`: an app's journal, or one worker's.

use std::str::FromStr;

use clap::Args;

/// `sockherd logs APP`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LogsArgs {
    /// The app (its --name, which `sockherd unit` makes the unit's name).
    #[arg(value_name = "APP", value_parser = parse_app)]
    pub app: String,

    /// Only this worker: its own lines and the manager's events about it.
    #[arg(long, short = 'w', value_name = "ID")]
    pub worker: Option<u32>,

    /// Keep printing lines as they come, until interrupted (like `pm2 logs`).
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// How many of the latest lines to print: a number, or `all` (default:
    /// 15, or all of them since --since).
    #[arg(long, short = 'n', value_name = "LINES")]
    pub lines: Option<Lines>,

    /// Only lines from this time on, as journalctl reads it: "2026-05-01
    /// 12:00", "-1h", "today", "10 min ago".
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<String>,

    /// The user's own journal, for apps run as systemd user services.
    #[arg(long)]
    pub user: bool,
}

/// `-n LINES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    All,
    Last(u32),
}

impl FromStr for Lines {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "all" {
            return Ok(Lines::All);
        }
        text.parse()
            .map(Lines::Last)
            .map_err(|_| format!("{text:?}: expected a number of lines or `all`"))
    }
}

/// An app name as it appears in the journal: anything printable.
fn parse_app(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err(format!("{text:?} is not an app name"));
    }
    Ok(text.to_owned())
}

fn parse_since(text: &str) -> Result<String, String> {
    if text.trim().is_empty() || text.chars().any(char::is_control) {
        return Err(format!("{text:?} is not a time"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counts() {
        assert_eq!("all".parse(), Ok(Lines::All));
        assert_eq!("20".parse(), Ok(Lines::Last(20)));
        assert!("-1".parse::<Lines>().is_err());
        assert!("many".parse::<Lines>().is_err());
    }
}
