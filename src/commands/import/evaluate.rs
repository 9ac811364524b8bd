//! JavaScript is run by the system's `node`, never by sockherd: a script of
//! our own, given on node's command line, loads the ecosystem file the way
//! PM2 would and prints what it exports as JSON, which is all we read.
//!
//! An `ecosystem.config.js` is a program: it may read `process.env`, compute
//! paths or `require()` other files, so only node can say what it exports.
//! It runs with our environment and working directory, as under `pm2 start`,
//! and is killed if it has not answered within [`TIMEOUT`].

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long node may take to load the file.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most JSON we read from node: far more than any ecosystem file.
const MAX_OUTPUT: u64 = 16 << 20;

/// Loads a module (CommonJS `module.exports` or an ES module's `export
/// default`, `.js`, `.cjs` or `.mjs`) with `import()` and prints it.
const LOAD_MODULE: &str = r#"
const { pathToFileURL } = require('url');
import(pathToFileURL(process.argv[1]).href).then((m) => {
  const config = m.default === undefined ? m : m.default;
  process.stdout.write(JSON.stringify(config === undefined ? null : config));
}, (e) => {
  process.stderr.write(String((e && e.message) || e));
  process.exit(1);
});
"#;

/// Reads a file as one JavaScript expression (PM2 reads `.json` files this
/// way: `{ apps: [...] }` without quoted keys is PM2's own example).
const LOAD_OBJECT: &str = r#"
try {
  const text = require('fs').readFileSync(process.argv[1], 'utf8');
  const config = require('vm').runInNewContext('(' + text + ')', {}, { timeout: 1000 });
  process.stdout.write(JSON.stringify(config === undefined ? null : config));
} catch (e) {
  process.stderr.write(String((e && e.message) || e));
  process.exit(1);
}
"#;

/// What a JavaScript ecosystem file exports.
pub(super) fn module(path: &Path) -> Result<Value, String> {
    node(LOAD_MODULE, path)
}

/// A file holding one JavaScript object literal.
pub(super) fn object_literal(path: &Path) -> Result<Value, String> {
    node(LOAD_OBJECT, path)
}

/// Runs `node -e SCRIPT -- PATH` and reads its output as JSON.
fn node(script: &str, path: &Path) -> Result<Value, String> {
    let shown = path.display();
    let mut child = Command::new("node")
        .arg("-e")
        .arg(script)
        .arg("--")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{shown} is JavaScript, which only node can read, and node is not installed \
                 (Debian: apt-get install nodejs); or write it as .json or .yaml"
            ),
            _ => format!("cannot run node to read {shown}: {e}"),
        })?;
    let reader = |stream: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(stream) = stream {
                let _ = stream.take(MAX_OUTPUT).read_to_end(&mut text);
            }
            text
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < TIMEOUT => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "node did not finish reading {shown} within {}s (does it start something?)",
                    TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for node: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let said = String::from_utf8_lossy(&stderr);
        let first = said.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("node cannot load {shown}: {}", first.trim()));
    }
    serde_json::from_slice(&stdout).map_err(|e| format!("node's reading of {shown}: {e}"))
}
