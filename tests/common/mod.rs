//! The integration tests' harness: runs the real `sockherd` binary with real
//! workers and looks at it only from outside, as systemd and clients would.
//! Every test file that starts a manager uses it: none spawns `sockherd
//! serve`, reads its log or waits with a deadline of its own.
//!
//! - [`serve`] starts it with `--listen` (port 0: the kernel picks a free port,
//!   read back from the manager's log with [`Manager::listening`]);
//! - [`serve_activated`] passes it listening sockets exactly as systemd does:
//!   at fd 3 onwards, with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set
//!   in the child between fork and exec, from its own `getpid()`;
//! - [`socket_activate`] goes through the real `systemd-socket-activate`;
//! - [`Start`] is what all three build on, for a test that needs more: its
//!   own variables, `--log` elsewhere, options that are not `&str`.
//!
//! No manager sees the variables systemd may have given the test itself
//! ([`SERVICE_VARS`]). It logs to stderr (`--log stderr`); the harness
//! collects every line of its stderr and stdout and waits on the structured
//! fields of its events (`event="worker-ready" worker_id=0 worker_pid=…`) or
//! on its log text, by polling, never by sleeping a fixed time. Every wait
//! lasts at most [`PATIENCE`]. A [`Manager`] is SIGKILLed by pid when
//! dropped; a worker of it still alive then fails the test, and a failed
//! test prints the log. Worker programs: the `hello` example, the `rogue` test
//! binary (built once on first use, so `cargo test --workspace` alone is
//! enough) and `examples/worker.py`; [`load`] is the load generator.
//!
//! The integration tests are one test binary, `tests/integration.rs`, whose
//! modules are the files of `tests/` (Cargo.toml: `autotests = false`), rather
//! than one binary per file including this module, or a library crate:
//! - so that rustc's dead-code lint sees every helper here: one that no test
//!   uses any more is an error, not something an `allow(dead_code)` hides
//!   (which a binary per file needed, each using its own part, and which a
//!   library's public items would escape as silently);
//! - so that the harness can use `env!("CARGO_BIN_EXE_sockherd")` and
//!   `CARGO_MANIFEST_DIR` as they are, which a library could not;
//! - and one link instead of twelve.
//!
//! One binary is one process, its tests two at a time: they share the
//! process's environment (no test changes it: variables are set in the
//! child, between fork and exec), its rlimits (the one test that raises its
//! own puts it back) and the machine. Tests that load the machine on their
//! own and measure the manager meanwhile run [`alone`]: no other test runs a
//! manager while they do, as when each had a binary (and a lock) of its own.

mod bus;
mod client;
pub mod load;
mod manager;
mod procfs;
mod start;
mod turns;

pub use bus::*;
pub use client::*;
pub use manager::*;
pub use procfs::*;
pub use start::*;
pub use turns::alone;

use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long anything may take on a slow, busy machine before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or fails the test naming `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    poll(|| check().ok_or(()), |()| format!("waiting for {what}"))
}

/// Calls `attempt` until it succeeds, or fails the test naming `what` and
/// the last error.
pub fn retry<T, E: Debug>(what: &str, attempt: impl FnMut() -> Result<T, E>) -> T {
    poll(attempt, |why| format!("waiting for {what}; last: {why:?}"))
}

/// Every 20 ms for [`PATIENCE`]: a test never sleeps a fixed time to wait.
fn poll<T, E>(mut attempt: impl FnMut() -> Result<T, E>, waiting: impl Fn(E) -> String) -> T {
    let start = Instant::now();
    loop {
        let why = match attempt() {
            Ok(found) => return found,
            Err(why) => why,
        };
        if start.elapsed() >= PATIENCE {
            panic!("timed out after {PATIENCE:?} {}", waiting(why));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Programs

/// The manager under test.
pub fn sockherd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sockherd"))
}

/// Builds the `hello` and `axum_hello` examples and the `rogue` test binary
/// into the target directory and profile of this test, once per test process.
fn build_workers() -> PathBuf {
    static BUILD: Once = Once::new();
    let profile_dir = sockherd()
        .parent()
        .expect("the sockherd binary is in a directory");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--example", "hello"])
            .args(["--example", "axum_hello", "--bin", "chatty"])
            .args(["--bin", "rogue", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("a target directory"));
        match profile_dir.file_name().and_then(OsStr::to_str) {
            Some("debug") => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
            None => panic!("cannot tell the profile of {}", profile_dir.display()),
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "building hello, axum_hello and rogue failed"
        );
    });
    profile_dir.to_path_buf()
}

/// The `chatty` test binary: numbered lines at a given rate, or one per
/// request (see `testbins/src/bin/chatty.rs`).
pub fn chatty() -> OsString {
    build_workers().join("chatty").into()
}

/// The `axum_hello` example: an axum app served through
/// `sockherd_worker::Listener`, answering like `hello`.
pub fn axum_hello() -> Vec<OsString> {
    vec![build_workers().join("examples/axum_hello").into()]
}

/// The `hello` example: an HTTP worker whose body is
/// `hello from worker N (pid P)`; `GET /slow?ms=N` answers after N ms.
pub fn hello() -> Vec<OsString> {
    vec![build_workers().join("examples/hello").into()]
}

/// The `rogue` test binary in `mode` (see `testbins/src/bin/rogue.rs`).
pub fn rogue(mode: &[&str]) -> Vec<OsString> {
    let mut command = vec![build_workers().join("rogue").into_os_string()];
    command.extend(mode.iter().map(OsString::from));
    command
}

/// `examples/worker.py`, the Python worker.
pub fn python_worker() -> Vec<OsString> {
    vec![
        "python3".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/worker.py")
            .into(),
    ]
}

/// A directory of its own under /tmp, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sockherd-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
