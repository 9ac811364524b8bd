//! The options of `sockherd completions` and the hidden `sockherd manpage`.

use std::path::PathBuf;

use clap::Args;
use clap_complete::Shell;

/// `sockherd completions SHELL`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for; the script goes to stdout
    /// (e.g. `sockherd completions bash > /etc/bash_completion.d/sockherd`).
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `sockherd manpage DIR`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ManpageArgs {
    /// Where to write sockherd.1 and a page per command (created if missing).
    pub dir: PathBuf,
}
