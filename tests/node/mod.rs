//! Node.js apps as workers, end to end: the real `sockherd` binary, the real
//! `node`, unmodified apps from `tests/fixtures/node/` (and the real npm
//! packages its `package.json` names, installed by `scripts/setup.sh`), real
//! HTTP(S) clients.
//!
//! - [`apps`]: what Node apps do while they serve: listen shapes, TLS data,
//!   crashes, messages, refusals, reloads under load;
//! - [`stop`]: how they stop: the app's own shutdown hooks, with its servers
//!   open, for the whole kill timeout, and what the log says of it;
//! - [`shared`]: `--policy none`: the workers accept on the shared socket
//!   themselves, as under Node's `SCHED_NONE`, and serve UDP.
//!
//! Every test starts its own manager on free loopback ports and stops it
//! (or kills it, if the test fails) itself. Without `node` on the PATH the
//! tests say so loudly and pass without running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns early from a test, loudly, when there is no `node` to test with.
macro_rules! require_node {
    () => {
        if !super::node_available() {
            eprintln!("SKIPPED: `node` is not installed; this Node.js worker test did not run");
            return;
        }
    };
}

mod apps;
mod reexec;
mod shared;
mod stop;

/// The path of a fixture app.
fn fixture(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "node",
        name,
    ]
    .iter()
    .collect();
    path.to_string_lossy().into_owned()
}

/// Fails, saying how to fix it, when the fixtures' npm packages are missing.
fn require_packages() {
    let modules = Path::new(&fixture("node_modules")).join("@godaddy/terminus");
    assert!(
        modules.is_dir(),
        "the Node.js fixtures' npm packages are not installed: run scripts/setup.sh \
         (or `npm ci` in tests/fixtures/node)"
    );
}

/// Starts a manager listening on `ports` (127.0.0.1) with `args`, running
/// `node <fixture>` with `env`.
fn start_app(ports: &[u16], args: &[&str], app: &str, env: &[(&str, String)]) -> Manager {
    let worker = ["node".into(), fixture(app).into()];
    let start = ports.iter().fold(Start::new(args, &worker), |start, port| {
        start.arg("--listen").arg(format!("127.0.0.1:{port}"))
    });
    env.iter()
        .fold(start, |start, (key, value)| start.env(key, value))
        .spawn()
}

/// One HTTP/1.1 request on a new connection to 127.0.0.1:`port`: the body of
/// a 200, or why not.
fn get_from(port: u16, path: &str) -> Result<String, String> {
    get_ok(&Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))), path)
}

/// `curl -sS` a URL (`-k` for our self-signed certificates): the body.
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sSk", "--max-time", &PATIENCE.as_secs().to_string(), url])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `pid=N` a fixture puts in every answer.
fn pid_of(body: &str) -> u32 {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}
