//! The D-Bus interface and the CLI on top of it, end to end.
//!
//! Each test starts its own `dbus-daemon` ([`Daemon`]: the system bus's
//! default policy plus `packaging/dbus/io.sockherd.conf`, on a socket in a
//! temporary directory), the real `sockherd serve` with the `hello` example as its
//! worker on 127.0.0.1, and drives them with the real `busctl`, `dbus-send`,
//! `curl` and `sockherd` commands. Signals are watched by a zbus client on its
//! own thread. Calls as an unprivileged user run through `setpriv` as
//! `nobody`, which needs root (skipped otherwise).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

const PATH: &str = "/io/sockherd/Manager";
const IFACE: &str = "io.sockherd.Manager1";
const NOBODY: u32 = 65534;

/// A running `sockherd serve` on the daemon's bus: the harness's
/// [`Manager`], which it derefs to, and how to reach it.
pub(crate) struct App {
    pub(crate) manager: Manager,
    /// Where it listens, on 127.0.0.1.
    pub(crate) port: u16,
    /// The well-known name it should own.
    pub(crate) name: String,
    /// The bus it was pointed at.
    pub(crate) address: String,
}

/// How to start a manager.
pub(crate) struct Setup<'a> {
    /// `--name`.
    pub(crate) app: &'a str,
    /// `--workers`; also what "ready" means when waiting for it.
    pub(crate) workers: u32,
    /// Extra `serve` options.
    pub(crate) options: Vec<String>,
    /// The worker command; `hello` when empty.
    pub(crate) command: Vec<OsString>,
    /// Environment variables to set.
    pub(crate) env: Vec<(&'a str, String)>,
    /// Wait for the name on the daemon's bus; off when testing bus failures.
    pub(crate) wait_for_bus: bool,
    /// The manager binary, when not the one built for the tests.
    pub(crate) binary: Option<std::path::PathBuf>,
}

impl<'a> Setup<'a> {
    pub(crate) fn new(app: &'a str, workers: u32) -> Setup<'a> {
        Setup {
            app,
            workers,
            options: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            wait_for_bus: true,
            binary: None,
        }
    }

    pub(crate) fn start(self, daemon: &Daemon) -> App {
        let command = if self.command.is_empty() {
            hello()
        } else {
            self.command
        };
        let mut options = self.options;
        if !options.iter().any(|o| o.starts_with("--bus")) {
            options.extend(["--bus-address".to_owned(), daemon.address.clone()]);
        }
        let workers = self.workers.to_string();
        let args = ["--name", self.app, "--listen", "127.0.0.1:0"];
        let mut first = Start::new(&args, &command).arg("--workers").arg(&workers);
        if let Some(binary) = &self.binary {
            first = first.binary(binary);
        }
        let start = options
            .iter()
            .fold(first, |start, option| start.arg(option));
        let manager = self
            .env
            .iter()
            .fold(start, |start, (key, value)| start.env(key, value))
            .spawn();
        let port = match manager.listening(1).remove(0) {
            Addr::Tcp(addr) => addr.port(),
            Addr::Unix(path) => panic!("listening on {}, not TCP", path.display()),
        };
        let app = App {
            manager,
            port,
            name: sockherd::decoders::bus_name(self.app),
            address: daemon.address.clone(),
        };
        if self.wait_for_bus {
            app.wait_until("ready", |m| {
                m.try_property("ReadyWorkers") == Some(Json::from(self.workers))
            });
        } else {
            app.wait_until("serving", |m| m.curl("/").is_some());
        }
        app
    }
}

impl Deref for App {
    type Target = Manager;

    fn deref(&self) -> &Manager {
        &self.manager
    }
}

impl App {
    pub(crate) fn wait_until(&self, what: &str, done: impl Fn(&App) -> bool) {
        wait_for(&format!("{} to be {what}", self.name), || {
            done(self).then_some(())
        })
    }

    /// `busctl --address=… --json=short ARGS…` as root or as `nobody`.
    pub(crate) fn busctl(&self, as_nobody: bool, args: &[&str]) -> Output {
        let mut cmd = if as_nobody {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "busctl",
            ]);
            cmd
        } else {
            Command::new("busctl")
        };
        cmd.arg(format!("--address={}", self.address))
            .arg("--json=short")
            .arg(format!("--timeout={}", PATIENCE.as_secs()))
            .args(args)
            .output()
            .expect("busctl must be installed (Debian: systemd)")
    }

    /// Calls a method as root; its reply's `data`, or the error text.
    pub(crate) fn call(&self, method: &str, args: &[&str]) -> Result<Json, String> {
        self.call_as(false, method, args)
    }

    pub(crate) fn call_as(
        &self,
        as_nobody: bool,
        method: &str,
        args: &[&str],
    ) -> Result<Json, String> {
        // `--` so that a negative argument is not taken for an option.
        let mut all = vec!["--", "call", &self.name, PATH, IFACE, method];
        all.extend_from_slice(args);
        let out = self.busctl(as_nobody, &all);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(Json::Null);
        }
        let reply: Json = serde_json::from_str(&text).expect("busctl's JSON");
        Ok(reply["data"].clone())
    }

    /// Calls with `dbus-send`, which shows the error's name: `Err("io.sockherd.Error.X: message")`.
    pub(crate) fn send(&self, as_nobody: bool, method: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = if as_nobody {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "dbus-send",
            ]);
            cmd
        } else {
            Command::new("dbus-send")
        };
        let out = cmd
            .arg(format!("--bus={}", self.address))
            .arg("--print-reply")
            .arg(format!("--reply-timeout={}", PATIENCE.as_millis()))
            .arg(format!("--dest={}", self.name))
            .arg(PATH)
            .arg(format!("{IFACE}.{method}"))
            .args(args)
            .output()
            .expect("dbus-send must be installed (Debian: dbus-bin)");
        if out.status.success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&out.stderr);
            Err(text.trim().trim_start_matches("Error ").to_owned())
        }
    }

    pub(crate) fn try_property(&self, name: &str) -> Option<Json> {
        let out = self.busctl(false, &["get-property", &self.name, PATH, IFACE, name]);
        if !out.status.success() {
            return None;
        }
        let reply: Json = serde_json::from_slice(&out.stdout).ok()?;
        Some(reply["data"].clone())
    }

    pub(crate) fn property(&self, name: &str) -> Json {
        self.try_property(name)
            .unwrap_or_else(|| panic!("cannot read {name} of {}", self.name))
    }

    pub(crate) fn workers(&self) -> Vec<Worker> {
        let data = self.call("ListWorkers", &[]).expect("ListWorkers");
        data[0]
            .as_array()
            .expect("an array of workers")
            .iter()
            .map(|row| Worker {
                id: row[0].as_u64().expect("id") as u32,
                pid: row[1].as_u64().expect("pid") as u32,
                state: row[2].as_str().expect("state").to_owned(),
                started_usec: row[4].as_u64().expect("start time"),
                rss_bytes: row[5].as_u64().expect("rss"),
                connections: row[6].as_u64().expect("connections"),
            })
            .collect()
    }

    /// The workers in the ring: a replaced one may still be listed while it drains.
    pub(crate) fn ready_workers(&self) -> Vec<Worker> {
        let mut workers = self.workers();
        workers.retain(|w| w.state == "ready");
        workers
    }

    /// `GET path` with curl; the body, if the status was 200.
    pub(crate) fn curl(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-s", "-m", &PATIENCE.as_secs().to_string()])
            .args(["-o", "-", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        (code == "200").then(|| body.to_owned())
    }

    /// Runs `sockherd ARGS… --address …`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(sockherd())
            .args(args)
            .args(["--address", &self.address])
            .output()
            .expect("run sockherd")
    }
}

/// One row of `ListWorkers` (`(uusuttt)`), the fields the tests look at.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) id: u32,
    pub(crate) pid: u32,
    pub(crate) state: String,
    pub(crate) started_usec: u64,
    pub(crate) rss_bytes: u64,
    pub(crate) connections: u64,
}

/// The worker ids that answered `n` requests.
fn ids_reached(manager: &App, n: usize) -> BTreeSet<u32> {
    (0..n)
        .map(|_| {
            let body = manager.curl("/").expect("a 200 from the app");
            body.strip_prefix("hello from worker ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("unexpected body {body:?}"))
        })
        .collect()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `hello` behind a shell that fails at once while `broken` exists (so a
/// reload can fail) and does not start while `hold` exists (so a reload can
/// be caught under way).
pub(crate) fn gated_worker(broken: &Path, hold: &Path) -> Vec<OsString> {
    let mut command: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        r#"if [ -e "$1" ]; then exit 3; fi; while [ -e "$2" ]; do sleep 0.05; done; exec "$0""#
            .into(),
    ];
    command.extend(hello());
    command.extend([broken.into(), hold.into()]);
    command
}

#[test]
fn properties_and_list_workers() {
    let daemon = Daemon::start();
    let manager = Setup::new("props-app.1", 2).start(&daemon);
    assert_eq!(manager.name, "io.sockherd.props_app_1");
    assert_eq!(manager.property("App"), "props-app.1");
    assert_eq!(manager.property("Workers"), 2);
    assert_eq!(manager.property("ReadyWorkers"), 2);
    assert_eq!(manager.property("State"), "running");
    assert_eq!(manager.property("Policy"), "rr");
    assert_eq!(manager.property("Restarts"), 0);
    assert_eq!(manager.property("Generation"), 1);
    assert_eq!(manager.property("GaveUp"), Json::Array(vec![]));
    assert_eq!(manager.property("Connections"), 0);

    // Signatures as documented; Connections is read on demand, without change signals.
    let out = manager.busctl(false, &["introspect", &manager.name, PATH, IFACE]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |member: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!(".{member} ")))
            .unwrap_or_else(|| panic!("{member} missing from\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(line("ListWorkers").starts_with(".ListWorkers method - a(uusuttt)"));
    assert!(line("ListWorkerDetails").starts_with(".ListWorkerDetails method - a(uusuttttt)"));
    assert!(line("ScaleBy").starts_with(".ScaleBy method i u"));
    assert!(line("Scale").starts_with(".Scale method u -"));
    assert!(line("RestartWorker").starts_with(".RestartWorker method u -"));
    assert!(line("Reload").starts_with(".Reload method - -"));
    assert!(line("GaveUp").starts_with(".GaveUp property as"));
    assert!(line("Connections").starts_with(".Connections property t"));
    assert!(!line("Connections").contains("emits-change"));
    assert!(line("ReadyWorkers").contains("emits-change"));
    assert!(line("WorkerExited").starts_with(".WorkerExited signal uuis"));
    assert!(line("WorkerStarted").starts_with(".WorkerStarted signal uu"));
    assert!(line("Reloaded").starts_with(".Reloaded signal ub"));

    let workers = manager.workers();
    assert_eq!(workers.len(), 2);
    let ids: BTreeSet<u32> = workers.iter().map(|w| w.id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1]));
    let now_usec = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    for worker in &workers {
        assert_eq!(worker.state, "ready");
        assert!(Path::new(&format!("/proc/{}", worker.pid)).exists());
        assert!(worker.rss_bytes > 0);
        assert!(worker.started_usec <= now_usec && now_usec - worker.started_usec < 60_000_000);
    }

    assert_eq!(ids_reached(&manager, 3), BTreeSet::from([0, 1]));
    assert_eq!(manager.property("Connections"), 3);
    let dispatched: u64 = manager.workers().iter().map(|w| w.connections).sum();
    assert_eq!(dispatched, 3);

    // The details: ListWorkers' fields, then open connections and CPU time.
    let details = manager
        .call("ListWorkerDetails", &[])
        .expect("ListWorkerDetails");
    let rows = details[0].as_array().expect("an array of workers");
    assert_eq!(rows.len(), 2);
    for row in rows {
        let listed = workers
            .iter()
            .find(|w| Some(u64::from(w.pid)) == row[1].as_u64());
        assert!(listed.is_some(), "{row}: a worker ListWorkers lists");
        assert_eq!(row.as_array().map(Vec::len), Some(9), "{row}");
        assert!(row[8].as_u64().is_some(), "CPU time: {row}");
    }
    let handed: u64 = rows.iter().filter_map(|row| row[6].as_u64()).sum();
    assert_eq!(handed, 3);
    // hello reports every close: nothing stays open once the answers are in.
    manager.wait_until("every connection closed", |m| {
        let details = m.call("ListWorkerDetails", &[]).expect("ListWorkerDetails");
        details[0]
            .as_array()
            .is_some_and(|rows| rows.iter().all(|row| row[7].as_u64() == Some(0)))
    });
}

#[test]
fn scale_and_refusals() {
    let daemon = Daemon::start();
    let mut setup = Setup::new("scaler", 2);
    setup.options = vec![
        "--max-workers".into(),
        "16".into(),
        "--kill-timeout".into(),
        "10s".into(),
    ];
    let manager = setup.start(&daemon);

    // Scale returns once the new workers are ready: all four answer at once.
    assert_eq!(manager.call("Scale", &["u", "4"]), Ok(Json::Null));
    assert_eq!(manager.property("Workers"), 4);
    assert_eq!(manager.property("ReadyWorkers"), 4);
    assert_eq!(ids_reached(&manager, 4), BTreeSet::from([0, 1, 2, 3]));

    // Refusals name their error and change nothing.
    let before: BTreeSet<u32> = manager.workers().iter().map(|w| w.pid).collect();
    let refused = [
        ("Scale", vec!["uint32:0"], "io.sockherd.Error.InvalidArgs"),
        (
            "Scale",
            vec!["uint32:100000"],
            "io.sockherd.Error.InvalidArgs",
        ),
        ("ScaleBy", vec!["int32:-4"], "io.sockherd.Error.InvalidArgs"),
        (
            "ScaleBy",
            vec!["int32:-100"],
            "io.sockherd.Error.InvalidArgs",
        ),
        (
            "RestartWorker",
            vec!["uint32:9"],
            "io.sockherd.Error.InvalidArgs",
        ),
    ];
    for (method, args, error) in refused {
        let err = manager.send(false, method, &args).unwrap_err();
        assert!(err.starts_with(error), "{method} {args:?}: {err}");
        assert!(err.len() > error.len() + 5, "a human message: {err}");
    }
    // Wrong argument types never reach the manager.
    for (method, args) in [
        ("Scale", vec!["s", "four"]),
        ("Scale", vec!["i", "-1"]),
        ("ScaleBy", vec!["u", "1"]),
        ("ScaleBy", vec!["s", "+1"]),
        ("RestartWorker", vec!["s", "0"]),
        ("Scale", vec!["u", "3", "u", "4"]),
    ] {
        let err = manager.call(method, &args).unwrap_err();
        assert!(!err.is_empty(), "{method} {args:?} must fail");
    }
    assert_eq!(manager.property("Workers"), 4);
    assert_eq!(manager.property("ReadyWorkers"), 4);
    let after: BTreeSet<u32> = manager.workers().iter().map(|w| w.pid).collect();
    assert_eq!(before, after);

    // ScaleBy -2 drains workers 2 and 3: the requests they hold finish with 200.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let port = manager.port;
            let handle = thread::spawn(move || {
                Command::new("curl")
                    .args(["-s", "-m", &PATIENCE.as_secs().to_string()])
                    .args(["-w", "\n%{http_code}"])
                    .arg(format!("http://127.0.0.1:{port}/slow?ms=1500"))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            });
            thread::sleep(Duration::from_millis(50));
            handle
        })
        .collect();
    // All four are with their workers before the scale-down.
    manager.wait_until("dispatched", |m| m.property("Connections") == 8);
    let started = Instant::now();
    assert_eq!(
        manager.call("ScaleBy", &["i", "-2"]),
        Ok(Json::from(vec![2]))
    );
    // It answered once workers 2 and 3 had drained, after their slow requests.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let mut served = BTreeSet::new();
    for handle in slow {
        let text = handle.join().expect("curl thread").expect("curl runs");
        let (body, code) = text.rsplit_once('\n').expect("status code");
        assert_eq!(code, "200", "{text}");
        let id: u32 = body
            .trim_start_matches("hello from worker ")
            .split(' ')
            .next()
            .and_then(|id| id.parse().ok())
            .expect("worker id");
        served.insert(id);
    }
    assert_eq!(served, BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(manager.property("Workers"), 2);
    assert_eq!(manager.property("ReadyWorkers"), 2);
    let left: BTreeSet<u32> = manager.workers().iter().map(|w| w.id).collect();
    assert_eq!(left, BTreeSet::from([0, 1]));
    assert_eq!(ids_reached(&manager, 4), BTreeSet::from([0, 1]));
}

/// A signal seen on the bus, decoded.
#[derive(Debug, Clone, PartialEq)]
enum Signal {
    Started(u32, u32),
    Exited(u32, u32, i32, String),
    Reloaded(u32, bool),
    Changed(HashMap<String, String>),
}

/// Watches every signal `name` sends, on a thread of its own; the receiver
/// yields them in order. Subscribed before it returns.
fn watch_signals(address: &str, name: &str) -> mpsc::Receiver<Signal> {
    let (tx, rx) = mpsc::channel();
    let (subscribed_tx, subscribed_rx) = mpsc::channel();
    let address = address.to_owned();
    let name = name.to_owned();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let connection = zbus::connection::Builder::address(address.as_str())
                .expect("the address")
                .build()
                .await
                .expect("connect");
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .sender(name.as_str())
                .expect("sender")
                .path(PATH)
                .expect("path")
                .build();
            let mut stream = zbus::MessageStream::for_match_rule(rule, &connection, None)
                .await
                .expect("subscribe");
            let _ = subscribed_tx.send(());
            use zbus::export::futures_core::Stream;
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
            {
                let header = message.header();
                let body = message.body();
                let signal = match header.member().map(|m| m.as_str()) {
                    Some("WorkerStarted") => body
                        .deserialize()
                        .ok()
                        .map(|(id, pid)| Signal::Started(id, pid)),
                    Some("WorkerExited") => body
                        .deserialize()
                        .ok()
                        .map(|(id, pid, status, reason)| Signal::Exited(id, pid, status, reason)),
                    Some("Reloaded") => body
                        .deserialize()
                        .ok()
                        .map(|(g, ok)| Signal::Reloaded(g, ok)),
                    Some("PropertiesChanged") => body
                        .deserialize::<(
                            String,
                            HashMap<String, zbus::zvariant::OwnedValue>,
                            Vec<String>,
                        )>()
                        .ok()
                        .map(|(_, changed, _)| {
                            Signal::Changed(
                                changed
                                    .into_iter()
                                    .map(|(k, v)| (k, format!("{v:?}")))
                                    .collect(),
                            )
                        }),
                    _ => None,
                };
                if let Some(signal) = signal {
                    if tx.send(signal).is_err() {
                        return;
                    }
                }
            }
        });
    });
    subscribed_rx
        .recv_timeout(PATIENCE)
        .expect("the signal watcher subscribed");
    rx
}

/// Every signal received until `done` has been seen (or [`PATIENCE`] passed).
fn signals_until(
    rx: &mpsc::Receiver<Signal>,
    mut done: impl FnMut(&Signal) -> bool,
) -> Vec<Signal> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(signal) => {
                let last = done(&signal);
                seen.push(signal);
                if last {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("the awaited signal never came; saw {seen:?}");
}

#[test]
fn reload_restart_and_signals() {
    let daemon = Daemon::start();
    let broken = daemon.dir.path().join("broken");
    let hold = daemon.dir.path().join("hold");
    let mut setup = Setup::new("reloader", 2);
    setup.command = gated_worker(&broken, &hold);
    let manager = setup.start(&daemon);
    let signals = watch_signals(&manager.address, &manager.name);
    let old: BTreeSet<u32> = manager.ready_workers().iter().map(|w| w.pid).collect();

    // While a reload is under way (held), another reload, or a scale, is busy.
    std::fs::write(&hold, b"").expect("create the hold marker");
    let reload = {
        let (address, name) = (manager.address.clone(), manager.name.clone());
        thread::spawn(move || {
            Command::new("busctl")
                .arg(format!("--address={address}"))
                .arg(format!("--timeout={}", PATIENCE.as_secs()))
                .args(["call", &name, PATH, IFACE, "Reload"])
                .output()
        })
    };
    manager.wait_until("reloading", |m| m.property("State") == "reloading");
    let busy = manager.send(false, "Reload", &[]).unwrap_err();
    assert!(busy.starts_with("io.sockherd.Error.Busy: "), "{busy}");
    let busy = manager.send(false, "Scale", &["uint32:3"]).unwrap_err();
    assert!(busy.starts_with("io.sockherd.Error.Busy: "), "{busy}");
    assert_eq!(manager.property("Generation"), 1);
    std::fs::remove_file(&hold).expect("release the reload");
    let out = reload.join().expect("reload thread").expect("busctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reload returned once done: new pids, next generation, running again.
    assert_eq!(manager.property("Generation"), 2);
    assert_eq!(manager.property("State"), "running");
    assert_eq!(manager.property("Workers"), 2);
    let new: BTreeSet<u32> = manager.ready_workers().iter().map(|w| w.pid).collect();
    assert_eq!(new.len(), 2);
    assert!(old.is_disjoint(&new), "old {old:?} new {new:?}");

    // The old workers drain after Reload returned: wait for their exits too.
    let mut reloaded = None;
    let mut draining = old.clone();
    let seen = signals_until(&signals, |s| {
        match s {
            Signal::Reloaded(generation, ok) => reloaded = Some((*generation, *ok)),
            Signal::Exited(_, pid, 0, reason) if reason == "drained" => {
                draining.remove(pid);
            }
            _ => {}
        }
        reloaded.is_some() && draining.is_empty()
    });
    assert_eq!(reloaded, Some((2, true)), "{seen:?}");
    let started: BTreeSet<u32> = seen
        .iter()
        .filter_map(|s| match s {
            Signal::Started(_, pid) => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(started, new, "{seen:?}");
    let changed = |key: &str| {
        seen.iter()
            .any(|s| matches!(s, Signal::Changed(c) if c.contains_key(key)))
    };
    assert!(changed("State"), "{seen:?}");
    assert!(changed("Generation"), "{seen:?}");

    // RestartWorker replaces exactly one worker.
    let before = manager.ready_workers();
    assert_eq!(manager.call("RestartWorker", &["u", "1"]), Ok(Json::Null));
    let after = manager.ready_workers();
    let pid = |workers: &[Worker], id| workers.iter().find(|w| w.id == id).map(|w| w.pid);
    assert_eq!(pid(&before, 0), pid(&after, 0));
    assert_ne!(pid(&before, 1), pid(&after, 1));
    assert_eq!(after.len(), 2);
    let seen = signals_until(&signals, |s| matches!(s, Signal::Exited(1, ..)));
    assert!(seen
        .iter()
        .any(|s| matches!(s, Signal::Started(1, p) if Some(*p) == pid(&after, 1))));

    // A reload whose new workers fail: an error, Reloaded(…, false), old workers keep serving.
    std::fs::write(&broken, b"").expect("create the broken marker");
    let err = manager.send(false, "Reload", &[]).unwrap_err();
    assert!(err.starts_with("io.sockherd.Error.Failed: "), "{err}");
    let seen = signals_until(&signals, |s| matches!(s, Signal::Reloaded(..)));
    assert_eq!(seen.last(), Some(&Signal::Reloaded(3, false)));
    assert_eq!(manager.property("Generation"), 2);
    let kept: BTreeSet<u32> = manager.ready_workers().iter().map(|w| w.pid).collect();
    let was: BTreeSet<u32> = after.iter().map(|w| w.pid).collect();
    assert_eq!(kept, was);
    assert_eq!(ids_reached(&manager, 2), BTreeSet::from([0, 1]));
}

#[test]
fn access_control() {
    if !is_root() {
        eprintln!("access_control: skipped, needs root to run busctl as nobody");
        return;
    }
    let daemon = Daemon::start();
    let manager = Setup::new("guarded", 2).start(&daemon);

    // nobody may read.
    let out = manager.busctl(
        true,
        &["get-property", &manager.name, PATH, IFACE, "ReadyWorkers"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Json = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(reply["data"], 2);
    let rows = manager
        .call_as(true, "ListWorkers", &[])
        .expect("nobody may list workers");
    assert_eq!(rows[0].as_array().map(Vec::len), Some(2));

    // nobody may not change anything.
    let pids: BTreeSet<u32> = manager.workers().iter().map(|w| w.pid).collect();
    for (method, args) in [
        ("Scale", vec!["uint32:3"]),
        ("ScaleBy", vec!["int32:1"]),
        ("Reload", vec![]),
        ("RestartWorker", vec!["uint32:0"]),
    ] {
        let err = manager.send(true, method, &args).unwrap_err();
        assert!(
            err.starts_with("io.sockherd.Error.AccessDenied: uid 65534 may not call"),
            "{method}: {err}"
        );
    }
    assert!(manager.call_as(true, "Scale", &["u", "3"]).is_err());
    assert_eq!(manager.property("Workers"), 2);
    assert_eq!(manager.property("Generation"), 1);
    let after: BTreeSet<u32> = manager.workers().iter().map(|w| w.pid).collect();
    assert_eq!(pids, after);
    assert!(manager.has_line("refused Scale(3) from uid 65534"));

    // The bus policy: nobody cannot take a sockherd name.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "dbus-send",
        ])
        .arg(format!("--bus={}", daemon.address))
        .args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:io.sockherd.guarded2",
            "uint32:4",
        ])
        .output()
        .expect("dbus-send");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{err}"
    );

    // Members of --control-group may: nobody's primary group.
    let group = nix::unistd::Group::from_gid(NOBODY.into())
        .ok()
        .flatten()
        .expect("a group with gid 65534")
        .name;
    let mut setup = Setup::new("team", 1);
    setup.options = vec!["--control-group".into(), group];
    let team = setup.start(&daemon);
    assert_eq!(
        team.call_as(true, "ScaleBy", &["i", "1"]),
        Ok(Json::from(vec![2]))
    );
    assert_eq!(team.property("ReadyWorkers"), 2);
    // …but not of the other app.
    assert!(manager.send(true, "ScaleBy", &["int32:1"]).is_err());
}

#[test]
fn cli() {
    let daemon = Daemon::start();
    let empty = Command::new(sockherd())
        .args(["status", "--address", &daemon.address])
        .output()
        .expect("sockherd status");
    assert!(empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stdout).starts_with("no sockherd apps on"));

    let web = Setup::new("web", 2).start(&daemon);
    let _api = Setup::new("api", 1).start(&daemon);
    ids_reached(&web, 2);

    let out = web.cli(&["status", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("web (io.sockherd.web): running, 2/2 workers ready, generation 1"),
        "{text}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "id",
            "pid",
            "state",
            "↺",
            "cpu",
            "mem",
            "connections",
            "uptime"
        ]
    );
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[4].starts_with(&format!(
            "manager: {}, image started 2",
            env!("CARGO_PKG_VERSION")
        )),
        "the manager's version and when its image started: {text}"
    );
    let mut workers = web.workers();
    workers.sort_by_key(|w| w.id);
    for (line, worker) in lines[2..4].iter().zip(workers) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], worker.id.to_string(), "{text}");
        assert_eq!(cells[1], worker.pid.to_string());
        assert_eq!(cells[2], "ready");
        assert!(cells[4].ends_with('%'), "cpu is known on this host: {line}");
        assert_eq!(cells[6], "1", "{line}");
    }

    // Without APP: every app, and --json parses.
    let out = web.cli(&["status", "--json"]);
    assert!(out.status.success());
    let apps: Json = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let names: Vec<&str> = apps
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|a| a["app"].as_str())
        .collect();
    assert_eq!(names, ["api", "web"]);
    let web_json = &apps[1];
    assert_eq!(web_json["workers"], 2);
    assert!(web_json["version"]
        .as_str()
        .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))));
    assert!(web_json["image_started_usec"]
        .as_u64()
        .is_some_and(|t| t > 0));
    assert_eq!(web_json["connections"], 2);
    assert_eq!(web_json["processes"].as_array().map(Vec::len), Some(2));
    assert!(web_json["processes"][0]["cpu_percent"].is_number());

    let out = web.cli(&["scale", "web", "+1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "web: 3 workers\n");
    assert_eq!(web.property("ReadyWorkers"), 3);
    let out = web.cli(&["scale", "web", "-1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "web: 2 workers\n");
    let out = web.cli(&["scale", "web", "4"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "web: 4 workers\n");

    // Refusals: one line, non-zero exit, nothing changed.
    let out = web.cli(&["scale", "web", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("sockherd: web: cannot scale to 0"), "{err}");
    assert_eq!(web.property("Workers"), 4);

    let out = web.cli(&["scale", "nope", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no app \"nope\""), "{err}");
    assert!(err.trim_end().ends_with("apps there: api, web"), "{err}");

    let out = web.cli(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "web: reloaded, generation 2\n"
    );

    let before = web.ready_workers();
    let out = web.cli(&["restart", "web", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = web.ready_workers();
    let pid = |workers: &[Worker], id| workers.iter().find(|w| w.id == id).map(|w| w.pid);
    assert_ne!(pid(&before, 3), pid(&after, 3));
    let out = web.cli(&["restart", "web", "7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("sockherd: web: no worker 7"));
}

#[test]
fn bus_choice_and_failures() {
    let daemon = Daemon::start();

    // --bus session takes DBUS_SESSION_BUS_ADDRESS.
    let mut setup = Setup::new("session-app", 1);
    setup.options = vec!["--bus".into(), "session".into()];
    setup.env = vec![("DBUS_SESSION_BUS_ADDRESS", daemon.address.clone())];
    let session = setup.start(&daemon);
    assert_eq!(session.property("App"), "session-app");

    // --bus auto picks the session bus when one is advertised, and says why.
    let mut setup = Setup::new("auto-app", 1);
    setup.env = vec![("DBUS_SESSION_BUS_ADDRESS", daemon.address.clone())];
    setup.options = vec!["--bus".into(), "auto".into()];
    let auto = setup.start(&daemon);
    assert!(
        auto.has_line("--bus auto: DBUS_SESSION_BUS_ADDRESS is set"),
        "{}",
        auto.log_text()
    );

    // …and no bus when there is none to be seen.
    let mut setup = Setup::new("no-bus", 1);
    setup.options = vec!["--bus".into(), "auto".into()];
    setup.wait_for_bus = false;
    let alone = setup.start(&daemon);
    assert!(alone.has_line("D-Bus: not used"), "{}", alone.log_text());

    // A bus that cannot be reached: auto warns, explicit logs an error; both serve on.
    let nowhere = format!("unix:path={}/no-such-socket", daemon.dir.path().display());
    let mut setup = Setup::new("auto-unreachable", 1);
    setup.options = vec!["--bus".into(), "auto".into()];
    setup.env = vec![("DBUS_SESSION_BUS_ADDRESS", nowhere.clone())];
    setup.wait_for_bus = false;
    let warned = setup.start(&daemon);
    warned.wait_until("warned", |m| m.has_line("WARN"));
    assert!(
        warned.has_line("going on without D-Bus"),
        "{}",
        warned.log_text()
    );
    assert!(warned.curl("/").is_some());

    let mut setup = Setup::new("system-unreachable", 1);
    setup.options = vec!["--bus".into(), "system".into()];
    setup.env = vec![("DBUS_SYSTEM_BUS_ADDRESS", nowhere)];
    setup.wait_for_bus = false;
    let failed = setup.start(&daemon);
    failed.wait_until("failed", |m| m.has_line("ERROR"));
    assert!(
        failed.has_line("going on without D-Bus"),
        "{}",
        failed.log_text()
    );
    assert!(failed.curl("/").is_some());

    // A second manager of the same app cannot take the name; it serves on.
    let mut setup = Setup::new("session-app", 1);
    setup.wait_for_bus = false;
    let twin = setup.start(&daemon);
    twin.wait_until("refused the name", |m| {
        m.has_line("owned by another process")
    });
    assert!(twin.curl("/").is_some());
    assert_eq!(session.property("Workers"), 1);

    // Contradictory options are refused before anything starts.
    let mut refused = Start::new(&["--listen", "127.0.0.1:0", "--bus", "none"], &hello())
        .arg("--bus-address")
        .arg(&daemon.address)
        .spawn();
    assert_eq!(refused.wait_exit().code(), Some(2));
    assert!(refused.has_line("contradict"), "{:?}", refused.log());
}

/// Issue 5: scaling goes through the same paths as reload — up is start and
/// wait for ready, down is drain, highest ids first — so no request fails
/// while the pool grows from 2 to 6 and shrinks to 1 under load.
#[test]
fn scale_up_and_down_under_load_fails_no_request() {
    let daemon = Daemon::start();
    let manager = Setup::new("scale-load", 2).start(&daemon);
    let addr = SocketAddr::from(([127, 0, 0, 1], manager.port));
    let load = load::Load::start(addr, "/", 3);
    load.wait_for_more(100);

    assert_eq!(manager.call("Scale", &["u", "6"]), Ok(Json::Null));
    assert_eq!(manager.property("ReadyWorkers"), 6);
    load.wait_for_more(100);
    assert_eq!(manager.call("Scale", &["u", "1"]), Ok(Json::Null));
    assert_eq!(manager.property("ReadyWorkers"), 1);
    load.wait_for_more(100);

    let tally = load.stop();
    tally.assert_no_failures("scale 2 -> 6 -> 1");
    let ids: BTreeSet<u32> = manager.workers().iter().map(|w| w.id).collect();
    assert_eq!(ids, BTreeSet::from([0]), "the highest ids went first");
}
