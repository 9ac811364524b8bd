//! The `sockherd` binary; everything it does is in the library
//! ([`sockherd::run`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    sockherd::run()
}
