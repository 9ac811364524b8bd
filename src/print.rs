//! Printing for people: what the commands say on stdout and stderr, never a
//! panic when what they print to is gone.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader went away fails
//! with EPIPE, and `println!`/`eprintln!` panic on that (`sockherd status |
//! head -1`). [`outln!`] returns instead: a reader that went away is no
//! error (the rest of the output is just not wanted), any other failure is
//! one. [`errln!`] ignores failure: there is nowhere else to say it. The
//! manager itself prints nothing once it runs: its lines go through the log
//! thread ([`crate::log`]).

use std::fmt;
use std::io::{self, Write};

/// Writes to stdout; see [`outln!`].
pub(crate) fn stdout(text: fmt::Arguments<'_>) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot print: {e}")),
    }
}

/// Writes to stderr; see [`errln!`].
pub(crate) fn stderr(text: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(text);
}

/// `println!` that returns `Err(String)` on a failure other than a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::print::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::print::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, outln};
