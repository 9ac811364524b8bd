//! The options of `sockherd monit`, the live view.

use clap::Args;

use super::control::Target;

/// `sockherd monit [APP]`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MonitArgs {
    /// The app (its --name); every app on the bus when left out.
    pub app: Option<String>,

    #[command(flatten)]
    pub target: Target,
}
