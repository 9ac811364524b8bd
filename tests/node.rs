//! Node.js apps as workers, end to end: the real `sockherd` binary, the real
//! `node`, unmodified apps from `tests/fixtures/node/`, real HTTP(S) clients.
//!
//! Every test starts its own manager on free loopback ports and stops it
//! (or kills it, if the test fails) itself. Without `node` on the PATH the
//! tests say so loudly and pass without running.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long anything a test waits for may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns early from a test, loudly, when there is no `node` to test with.
macro_rules! require_node {
    () => {
        if !node_available() {
            eprintln!("SKIPPED: `node` is not installed; this Node.js worker test did not run");
            return;
        }
    };
}

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

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A `sockherd serve` this test started, and everything it logged.
struct Manager {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Manager {
    /// Starts a manager listening on `ports` (127.0.0.1) with `args`, running
    /// `node <fixture>` with `env`.
    fn start(ports: &[u16], args: &[&str], app: &str, env: &[(&str, String)]) -> Manager {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockherd"));
        cmd.args(["serve", "--log", "stderr"]);
        for port in ports {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
        cmd.args(args)
            .arg("--")
            .arg("node")
            .arg(fixture(app))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sockherd");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Manager { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Polls the log until `done` holds; fails the test with the log if it
    /// does not within [`PATIENCE`].
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if done(&self.log()) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    fn wait_ready(&self, workers: usize) {
        self.wait_for(&format!("{workers} ready workers"), |log| {
            log.matches(") is ready").count() >= workers
        });
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal sockherd");
    }

    /// SIGTERM, and the exit status and log once it exited.
    fn stop(mut self) -> (ExitStatus, String) {
        self.signal(Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if let Some(status) = self.child.try_wait().expect("wait for sockherd") {
                // Let the reader thread take the last lines.
                thread::sleep(Duration::from_millis(50));
                return (status, self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("sockherd did not stop; log:\n{}", self.log());
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request on a new connection: the body of a 200, or why not.
fn get(port: u16, path: &str) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("bad response: {response:?}")),
    }
}

/// `curl -sS` a URL (`-k` for our self-signed certificates): the body.
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sSk", "--max-time", "10", url])
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

#[test]
fn unmodified_http_app_answers_round_robin() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "3"],
        "hello.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(3);
    assert!(manager.log().contains("node protocol"), "{}", manager.log());
    let pids: Vec<u32> = (0..6)
        .map(|i| pid_of(&curl(&format!("http://127.0.0.1:{port}/r{i}"))))
        .collect();
    let first: HashSet<u32> = pids[..3].iter().copied().collect();
    assert_eq!(first.len(), 3, "three different workers first: {pids:?}");
    assert_eq!(pids[..3], pids[3..], "then the same order again: {pids:?}");
    let (status, log) = manager.stop();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("exited: drained").count(), 3, "{log}");
}

#[test]
fn https_app_serves_with_shared_tls_data() {
    require_node!();
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: `openssl` is not installed; the https test did not run");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockherd-node-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make a scratch dir");
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(made.success(), "openssl could not make a certificate");
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "2"],
        "https.js",
        &[
            ("PORT", port.to_string()),
            ("TLS_KEY", key.to_string_lossy().into_owned()),
            ("TLS_CERT", cert.to_string_lossy().into_owned()),
        ],
    );
    manager.wait_ready(2);
    let pids: HashSet<u32> = (0..4)
        .map(|_| {
            let body = curl(&format!("https://127.0.0.1:{port}/"));
            assert!(body.starts_with("secure"), "{body}");
            pid_of(&body)
        })
        .collect();
    assert_eq!(pids.len(), 2, "both workers answered");
    let (status, log) = manager.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{log}");
}

#[test]
fn app_that_crashes_after_every_request_keeps_serving() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "2", "--max-restarts", "100"],
        "crash.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(2);
    let requests = 8;
    for i in 0..requests {
        let body = get(port, &format!("/{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}; log:\n{}", manager.log()));
        assert!(body.starts_with("crashy"), "{body}");
    }
    manager.wait_for("a crash per request", |log| {
        log.matches("exited: exit code 1").count() >= requests
    });
    assert!(manager.count("gave up") == 0, "{}", manager.log());
    let (status, log) = manager.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn process_send_reaches_the_manager_log() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "1", "-v"],
        "counter.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(1);
    for _ in 0..3 {
        get(port, "/").expect("request");
    }
    manager.wait_for("the third count", |log| log.contains("\"requests\":3"));
    let log = manager.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"requests\":3"))
        .unwrap_or_default();
    assert!(
        line.contains("DEBUG") && line.contains("message from worker 0"),
        "{line}"
    );
    let (status, _) = manager.stop();
    assert!(status.success());
}

#[test]
fn ipc_workers_receive_net_socket_handles() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "2", "--protocol", "node-ipc", "--wait-ready"],
        "ipc.js",
        &[],
    );
    manager.wait_ready(2);
    let pids: Vec<u32> = (0..4)
        .map(|i| {
            let body = get(port, &format!("/{i}")).expect("request");
            assert!(body.starts_with("ipc"), "{body}");
            pid_of(&body)
        })
        .collect();
    assert_ne!(pids[0], pids[1], "{pids:?}");
    assert_eq!(pids[..2], pids[2..], "{pids:?}");
    let (status, log) = manager.stop();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("exited: drained").count(), 2, "{log}");
}

#[test]
fn listening_on_a_port_that_was_not_passed_is_a_clear_error() {
    require_node!();
    let (port, extra) = (free_port(), free_port());
    let manager = Manager::start(
        &[port],
        &["--workers", "1"],
        "hello.js",
        &[
            ("PORT", port.to_string()),
            ("EXTRA_PORT", extra.to_string()),
        ],
    );
    manager.wait_for("the app's own report of the failure", |log| {
        log.contains("extra listen failed: EADDRNOTAVAIL")
    });
    let log = manager.log();
    let error = log
        .lines()
        .find(|l| l.contains("no socket for it was passed"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    assert!(
        error.contains("ERROR") && error.contains(&format!("port {extra}")),
        "{error}"
    );
    manager.wait_ready(1);
    assert!(get(port, "/")
        .expect("the passed port serves")
        .starts_with("hello"));
    manager.stop();
}

#[test]
fn two_listeners_are_both_answered() {
    require_node!();
    let (http, metrics) = (free_port(), free_port());
    let manager = Manager::start(
        &[http, metrics],
        &["--workers", "2"],
        "hello.js",
        &[
            ("PORT", http.to_string()),
            ("METRICS_PORT", metrics.to_string()),
        ],
    );
    manager.wait_ready(2);
    for _ in 0..4 {
        assert!(get(http, "/").expect("http").starts_with("hello"));
        assert!(get(metrics, "/").expect("metrics").starts_with("metrics"));
    }
    let (status, log) = manager.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn graceful_reload_under_load_fails_no_request() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "3"],
        "hello.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(3);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let pids = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failures, pids) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failures),
                Arc::clone(&pids),
            );
            thread::spawn(move || {
                let deadline = Instant::now() + PATIENCE;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match get(port, "/load") {
                        Ok(body) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            pids.lock().unwrap().push(pid_of(&body));
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    let served_before = |n: usize| {
        let start = Instant::now();
        while ok.load(Ordering::Relaxed) < n && start.elapsed() < PATIENCE {
            thread::sleep(Duration::from_millis(10));
        }
    };
    served_before(50);
    let before: HashSet<u32> = pids.lock().unwrap().iter().copied().collect();
    for round in 1..=2 {
        manager.signal(Signal::SIGHUP);
        manager.wait_for(&format!("reload {round}"), |log| {
            log.matches("reload to generation").count() >= 2 * round
                && log.matches("exited: drained").count() >= 3 * round
        });
    }
    let after_reloads = ok.load(Ordering::Relaxed);
    served_before(after_reloads + 50);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let failures = failures.lock().unwrap().clone();
    let log = manager.log();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\n{log}",
        failures.len(),
        ok.load(Ordering::Relaxed) + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(log.contains("reload to generation 3 finished"), "{log}");
    let recent: HashSet<u32> = pids
        .lock()
        .unwrap()
        .iter()
        .rev()
        .take(30)
        .copied()
        .collect();
    assert!(
        recent.is_disjoint(&before),
        "new workers serve after the reloads"
    );
    let (status, log) = manager.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn refused_connection_goes_to_another_worker() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "2", "-v"],
        "limited.js",
        &[("PORT", port.to_string()), ("HOLD_MS", "1500".into())],
    );
    manager.wait_ready(2);
    let held = thread::spawn(move || get(port, "/hold"));
    manager.wait_for("the held request", |log| log.contains("holding pid="));
    // The other worker gets the next connection, and the one after that is
    // offered to the busy worker first, which refuses it.
    let quick = pid_of(&get(port, "/quick").expect("quick request"));
    let next = pid_of(&get(port, "/quick").expect("request after a refusal"));
    assert_eq!(next, quick, "the free worker served it");
    manager.wait_for("the refusal to be logged", |log| {
        log.contains("refused a connection")
    });
    let body = held.join().expect("client thread").expect("held request");
    assert_ne!(pid_of(&body), quick);
    manager.stop();
}

#[test]
fn wait_ready_waits_for_the_apps_word() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "1", "--wait-ready", "-v"],
        "wait-ready.js",
        &[("PORT", port.to_string()), ("WARMUP_MS", "500".into())],
    );
    manager.wait_ready(1);
    let log = manager.log();
    let said = log
        .find("): \"ready\"")
        .expect("the ready message is logged");
    let ready = log.find(") is ready").expect("readiness is logged");
    let listening = log.find("is listening on").expect("listening is logged");
    assert!(listening < said && said < ready, "{log}");
    assert!(get(port, "/").expect("request").starts_with("warm"));
    manager.stop();
}

#[test]
fn worker_that_breaks_the_protocol_is_replaced() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "1"],
        "garbage.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(1);
    let first = pid_of(&get(port, "/garbage").expect("request"));
    manager.wait_for("the invalid JSON", |log| log.contains("invalid JSON"));
    let second = pid_of(&get(port, "/big").expect("request after the replacement"));
    assert_ne!(first, second);
    manager.wait_for("the oversized message", |log| {
        log.contains("a message of more than 1024 KiB")
    });
    let third = pid_of(&get(port, "/").expect("request after the second replacement"));
    assert_ne!(second, third);
    let (status, log) = manager.stop();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("broke the protocol").count(), 2, "{log}");
}

#[test]
fn connection_held_by_a_dying_worker_reaches_another() {
    require_node!();
    let port = free_port();
    let manager = Manager::start(
        &[port],
        &["--workers", "2", "-v"],
        "dies.js",
        &[("PORT", port.to_string()), ("BLOCK_MS", "800".into())],
    );
    manager.wait_ready(2);
    let doomed = pid_of(&get(port, "/die").expect("the last answer of the doomed worker"));
    manager.wait_for("the doomed worker to block", |log| {
        log.contains(&format!("blocking pid={doomed}"))
    });
    // Round-robin: this one goes to the other worker, the next to the doomed
    // one, which never takes it and exits.
    let other = pid_of(&get(port, "/a").expect("request to the other worker"));
    assert_ne!(other, doomed);
    let rescued = pid_of(&get(port, "/b").expect("request handed to the doomed worker"));
    assert_ne!(rescued, doomed, "{}", manager.log());
    // The manager logged this before the rescue, but its log is read on
    // another thread, which may not have caught up with the answer yet.
    manager.wait_for("the connection to be dispatched again", |log| {
        log.contains("did not take its last connection; dispatching it again")
    });
    manager.stop();
}
