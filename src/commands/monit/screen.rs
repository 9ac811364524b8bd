//! The terminal while the view is up: raw mode (keys arrive one by one,
//! unechoed), the alternate screen (what was on the terminal comes back
//! afterwards) and no cursor; all three undone when the [`Screen`] is
//! dropped, and by a panic on its way out too.
//!
//! A live view needs a terminal that can draw one: [`usable`] refuses
//! output that is not a terminal, input that is not one (no keys), and
//! `TERM=dumb`, pointing to `sockherd status` instead.

use std::io::{self, IsTerminal, Stdout};

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Whether this process can show the live view; why not, if it cannot.
pub(super) fn usable() -> Result<(), String> {
    let instead = "`sockherd status` prints the same as text (--json for scripts)";
    if !io::stdout().is_terminal() {
        return Err(format!(
            "monit draws a live view and needs a terminal, and its output is not one; {instead}"
        ));
    }
    if !io::stdin().is_terminal() {
        return Err(format!(
            "monit reads keys from a terminal, and its input is not one; {instead}"
        ));
    }
    if std::env::var_os("TERM").is_some_and(|term| term == "dumb") {
        return Err(format!(
            "monit draws a full-screen view, which a dumb terminal (TERM=dumb) cannot show; \
             {instead}"
        ));
    }
    Ok(())
}

/// The terminal, set up for the view until dropped.
pub(super) struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Sets the terminal up.
    pub(super) fn enter() -> Result<Screen, String> {
        let failed = |e: io::Error| format!("cannot set the terminal up: {e}");
        enable_raw_mode().map_err(failed)?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen, Hide) {
            restore();
            return Err(failed(e));
        }
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(failed(e))
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was: best effort, there is no one to tell.
fn restore() {
    let _ = execute!(io::stdout(), Show, LeaveAlternateScreen);
    let _ = disable_raw_mode();
}
