//! `sd_notify` and the watchdog as systemd would see them, without systemd:
//! the test binds a Unix datagram socket, passes it as `NOTIFY_SOCKET`, runs
//! `sockherd serve` with the `hello` example as worker, and asserts on the
//! exact messages that arrive. Bad `NOTIFY_SOCKET`/`WATCHDOG_USEC` values must
//! cost a warning, never the service.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(15);

fn hello() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sockherd"))
        .parent()
        .expect("the binary lives in a directory")
        .join("examples/hello");
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build --examples, or cargo test --workspace)",
        path.display()
    );
    path
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockherd-notify-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `sockherd serve` under test, with the socket it notifies.
struct Manager {
    /// The `sockherd serve` process; killed if the test ends without stopping it.
    child: Child,
    /// Where systemd's notifications land; `None` when the test gives a bad address.
    notify: Option<UnixDatagram>,
    /// Every message received so far, in order.
    seen: Vec<String>,
    /// The Unix socket it listens on (`--listen`), for requests.
    listen: PathBuf,
    /// Its stderr, where warnings go (`--log stderr`).
    stderr: PathBuf,
    /// Holds the sockets and the log; removed with the manager.
    _scratch: Scratch,
}

/// What `NOTIFY_SOCKET` is set to.
enum Notify {
    /// A socket at a path in the scratch dir.
    Path,
    /// An abstract socket (`@name`).
    Abstract,
    /// This literal value, nothing listening.
    Literal(&'static str),
}

impl Manager {
    fn start(notify: Notify, env: &[(&str, &str)], args: &[&str], worker: &[&str]) -> Manager {
        let scratch = Scratch::new();
        let listen = scratch.0.join("http.sock");
        let stderr = scratch.0.join("stderr.log");
        let (socket, value) = match notify {
            Notify::Path => {
                let path = scratch.0.join("notify.sock");
                let socket = UnixDatagram::bind(&path).expect("bind notify socket");
                (Some(socket), path.to_string_lossy().into_owned())
            }
            Notify::Abstract => {
                // The scratch dir's name is unique to this test run.
                let name = scratch
                    .0
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
                let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
                (Some(socket), format!("@{name}"))
            }
            Notify::Literal(value) => (None, value.to_owned()),
        };
        if let Some(socket) = &socket {
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockherd"));
        cmd.args(["serve", "--log", "stderr", "--listen"])
            .arg(&listen)
            .args(args)
            .arg("--")
            .args(worker)
            .env("NOTIFY_SOCKET", value)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start sockherd");
        Manager {
            child,
            notify: socket,
            seen: Vec::new(),
            listen,
            stderr,
            _scratch: scratch,
        }
    }

    fn hello(env: &[(&str, &str)], args: &[&str]) -> Manager {
        let worker = hello();
        Manager::start(Notify::Path, env, args, &[worker.to_str().unwrap()])
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Receives messages until one satisfies `wanted`, and returns it.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let socket = self.notify.as_ref().expect("this test has a notify socket");
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(message.clone());
                if wanted(&message) {
                    return message;
                }
            }
        }
        panic!(
            "no message with {what} within {WAIT:?}; got {:#?}\nstderr:\n{}",
            self.seen,
            self.stderr_text()
        );
    }

    /// Messages that arrive within `window`.
    fn collect(&mut self, window: Duration) -> Vec<String> {
        let socket = self.notify.as_ref().expect("this test has a notify socket");
        let deadline = Instant::now() + window;
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        self.seen.extend(got.iter().cloned());
        got
    }

    /// One HTTP request through the manager; the body.
    fn get(&self, path: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.try_get(path) {
                Ok(body) => return body,
                Err(e) if Instant::now() > deadline => {
                    panic!("GET {path} failed: {e}\nstderr:\n{}", self.stderr_text())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn try_get(&self, path: &str) -> std::io::Result<String> {
        let mut stream = UnixStream::connect(&self.listen)?;
        stream.set_read_timeout(Some(WAIT))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
            _ => Err(std::io::Error::other(format!("bad response {response:?}"))),
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the manager");
    }

    /// SIGTERM, then the exit code.
    fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the manager did not stop within {WAIT:?}");
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

fn lines(message: &str) -> Vec<&str> {
    message.lines().collect()
}

fn status_of(message: &str) -> Option<&str> {
    message.lines().find_map(|l| l.strip_prefix("STATUS="))
}

fn monotonic_usec() -> i128 {
    match sd_notify::NotifyState::monotonic_usec_now().expect("CLOCK_MONOTONIC") {
        sd_notify::NotifyState::MonotonicUsec(usec) => usec,
        other => panic!("not a time: {other}"),
    }
}

#[test]
fn ready_status_reload_and_stop_are_reported() {
    let mut m = Manager::hello(&[], &["--workers", "2"]);
    let ready = m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    assert_eq!(
        status_of(&ready),
        Some("2/2 workers ready · 0 connections · 0 restarts"),
        "READY=1 comes with the line that explains it"
    );
    let before_ready = &m.seen[..m.seen.len() - 1];
    assert!(
        before_ready.iter().all(|msg| !msg.contains("READY=1")),
        "READY=1 once: {before_ready:?}"
    );
    assert!(
        before_ready
            .iter()
            .filter_map(|msg| status_of(msg))
            .all(|s| s.starts_with("starting: ")),
        "{before_ready:?}"
    );

    assert!(m.get("/").starts_with("hello from worker "));
    assert!(m.get("/").starts_with("hello from worker "));
    m.wait_for("the connection count", |msg| {
        status_of(msg) == Some("2/2 workers ready · 2 connections · 0 restarts")
    });

    m.signal(Signal::SIGHUP);
    let reloading = m.wait_for("RELOADING=1", |msg| lines(msg).contains(&"RELOADING=1"));
    let stamp: i128 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("RELOADING=1 carries MONOTONIC_USEC=")
        .parse()
        .expect("MONOTONIC_USEC is a number");
    let drift = (monotonic_usec() - stamp).abs();
    assert!(
        drift < 5_000_000,
        "MONOTONIC_USEC is CLOCK_MONOTONIC (off by {drift} µs)"
    );
    let reloaded = m.wait_for("READY=1 after the reload", |msg| {
        lines(msg).contains(&"READY=1")
    });
    assert_eq!(
        status_of(&reloaded),
        Some("2/2 workers ready · 2 connections · 0 restarts")
    );

    // A request in flight during the stop still gets its answer.
    let listen = m.listen.clone();
    let slow = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(listen).expect("connect");
        stream
            .write_all(b"GET /slow?ms=1000 HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    });
    m.wait_for("the slow request counted", |msg| {
        status_of(msg).is_some_and(|s| s.contains("3 connections"))
    });
    m.signal(Signal::SIGTERM);
    let stopping = m.wait_for("STOPPING=1", |msg| lines(msg).contains(&"STOPPING=1"));
    let extend: u64 = stopping
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .expect("STOPPING=1 extends the stop timeout")
        .parse()
        .expect("a number");
    assert!(
        extend >= 5_000_000,
        "at least the kill timeout (5 s): {extend}"
    );
    assert!(slow
        .join()
        .expect("slow request")
        .starts_with("HTTP/1.1 200"));
    assert_eq!(m.stop(), Some(0));
    assert!(
        m.seen.iter().all(|msg| !msg.contains("MAINPID=")),
        "the manager keeps its pid: no MAINPID="
    );
}

#[test]
fn ready_waits_for_min_ready_only() {
    // Worker 1 takes its time; with --min-ready 1 the service is ready without it.
    let script = format!(
        "if [ \"$SOCKHERD_WORKER_ID\" = 1 ]; then sleep 2; fi; exec {}",
        hello().display()
    );
    let mut m = Manager::start(
        Notify::Path,
        &[],
        &["--workers", "2", "--min-ready", "1"],
        &["/bin/sh", "-c", &script],
    );
    let ready = m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    assert_eq!(
        status_of(&ready),
        Some("starting: 1/2 workers ready · 0 connections · 0 restarts"),
        "{:#?}",
        m.seen
    );
    m.wait_for("2/2 ready", |msg| {
        status_of(msg) == Some("2/2 workers ready · 0 connections · 0 restarts")
    });
    let readies = m.seen.iter().filter(|msg| msg.contains("READY=1")).count();
    assert_eq!(readies, 1, "{:#?}", m.seen);
}

#[test]
fn min_ready_above_the_worker_count_is_refused() {
    let scratch = Scratch::new();
    let out = Command::new(env!("CARGO_BIN_EXE_sockherd"))
        .args(["serve", "--workers", "2", "--min-ready", "3", "--listen"])
        .arg(scratch.0.join("http.sock"))
        .arg("--")
        .arg(hello())
        .output()
        .expect("run sockherd");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-ready 3"));
}

#[test]
fn abstract_notify_socket_is_reached() {
    let worker = hello();
    let mut m = Manager::start(
        Notify::Abstract,
        &[],
        &["--workers", "1"],
        &[worker.to_str().unwrap()],
    );
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
}

#[test]
fn malformed_notify_socket_is_a_warning() {
    for bad in ["relative/garbage", "", "/nonexistent/dir/notify.sock"] {
        let worker = hello();
        let m = Manager::start(
            Notify::Literal(bad),
            &[],
            &["--workers", "1"],
            &[worker.to_str().unwrap()],
        );
        assert!(m.get("/").starts_with("hello from worker 0"));
        let stderr = m.stderr_text();
        assert!(
            stderr.contains("WARN") && stderr.contains("NOTIFY_SOCKET"),
            "NOTIFY_SOCKET={bad:?}: {stderr}"
        );
    }
}

#[test]
fn watchdog_heartbeats_at_half_the_interval() {
    let mut m = Manager::hello(&[("WATCHDOG_USEC", "400000")], &["--workers", "1"]);
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    let got = m.collect(Duration::from_secs(2));
    let beats = got
        .iter()
        .filter(|msg| lines(msg) == ["WATCHDOG=1"])
        .count();
    // Ten, give or take a busy machine.
    assert!(
        (6..=12).contains(&beats),
        "about one per 200 ms: {beats} in 2 s"
    );

    // A stopped manager sends nothing, so systemd's watchdog fires.
    m.signal(Signal::SIGSTOP);
    let frozen = m.collect(Duration::from_millis(600));
    m.signal(Signal::SIGCONT);
    assert!(frozen.is_empty(), "{frozen:?}");
    m.wait_for("heartbeats again", |msg| msg == "WATCHDOG=1\n");
}

#[test]
fn watchdog_for_another_pid_is_ignored() {
    let mut m = Manager::hello(
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
        &["--workers", "1"],
    );
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    let got = m.collect(Duration::from_millis(600));
    assert!(got.iter().all(|msg| !msg.contains("WATCHDOG=1")), "{got:?}");
}

#[test]
fn watchdog_garbage_is_a_warning() {
    let mut m = Manager::hello(&[("WATCHDOG_USEC", "garbage")], &["--workers", "1"]);
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    assert!(m.get("/").starts_with("hello from worker 0"));
    let got = m.collect(Duration::from_millis(300));
    assert!(
        m.seen.iter().all(|msg| !msg.contains("WATCHDOG=1")),
        "{got:?}"
    );
    let stderr = m.stderr_text();
    assert!(
        stderr.contains("WARN") && stderr.contains("WATCHDOG_USEC=\"garbage\""),
        "{stderr}"
    );
}

#[test]
fn unusable_journal_falls_back_to_stderr() {
    if Path::new("/run/systemd/journal/socket").exists() {
        // A real journal: nothing to fall back from here (the e2e suite hides
        // the socket from a unit to test this under systemd).
        return;
    }
    let worker = hello();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockherd"));
    let scratch = Scratch::new();
    let listen = scratch.0.join("http.sock");
    let child = cmd
        .args(["serve", "--log", "journal", "--workers", "1", "--listen"])
        .arg(&listen)
        .arg("--")
        .arg(&worker)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockherd");
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let attempt = UnixStream::connect(&listen).and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        });
        match attempt {
            Ok(r) if r.starts_with("HTTP/1.1 200") => break r,
            _ if Instant::now() > deadline => panic!("not serving"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(body.contains("hello from worker 0"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("stop");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot log to the journal"),
        "warned: {stderr}"
    );
    assert!(
        stderr.contains("worker 0 started"),
        "and logged to stderr: {stderr}"
    );
}
