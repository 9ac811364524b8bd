//! `sd_notify` and the watchdog as systemd would see them, without systemd:
//! the test binds a Unix datagram socket, passes it as `NOTIFY_SOCKET`, runs
//! `sockherd serve` with the `hello` example as worker, and asserts on the
//! exact messages that arrive. Bad `NOTIFY_SOCKET`/`WATCHDOG_USEC` values must
//! cost a warning, never the service.

use std::ffi::OsString;
use std::ops::{Deref, DerefMut};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::common::*;
use nix::sys::signal::Signal;

/// One `sockherd serve` under test (the harness's [`Manager`], which it
/// derefs to), with the socket that stands in for systemd's.
struct Service {
    manager: Manager,
    /// Where systemd's notifications land; `None` when the test gives a bad address.
    notify: Option<UnixDatagram>,
    /// Every message received so far, in order.
    seen: Vec<String>,
    /// The Unix socket it listens on (`--listen`), for requests.
    listen: Addr,
    /// Holds the sockets; removed with the service.
    _dir: TempDir,
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

impl Service {
    fn start(notify: Notify, env: &[(&str, &str)], args: &[&str], worker: &[OsString]) -> Service {
        let dir = TempDir::new();
        let listen = dir.path().join("http.sock");
        let (socket, value) = match notify {
            Notify::Path => {
                let path = dir.path().join("notify.sock");
                let socket = UnixDatagram::bind(&path).expect("bind notify socket");
                (Some(socket), path.to_string_lossy().into_owned())
            }
            Notify::Abstract => {
                // The scratch dir's name is unique to this test run.
                let name = dir
                    .path()
                    .file_name()
                    .expect("the scratch dir has a name")
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
        let start = Start::new(args, worker)
            .arg("--listen")
            .arg(&listen)
            .env("NOTIFY_SOCKET", value);
        let manager = env
            .iter()
            .fold(start, |start, (key, value)| start.env(key, value))
            .spawn();
        Service {
            manager,
            notify: socket,
            seen: Vec::new(),
            listen: Addr::Unix(listen),
            _dir: dir,
        }
    }

    fn hello(env: &[(&str, &str)], args: &[&str]) -> Service {
        Service::start(Notify::Path, env, args, &hello())
    }

    /// Receives messages until one satisfies `wanted`, and returns it.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let socket = self.notify.as_ref().expect("this test has a notify socket");
        let seen = &mut self.seen;
        let mut buf = [0u8; 4096];
        retry(&format!("a message with {what}"), || {
            // Every message queued, until one is wanted or none came for 100 ms.
            while let Ok(n) = socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(message.clone());
                if wanted(&message) {
                    return Ok(message);
                }
            }
            Err(format!("got {seen:#?}"))
        })
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

    /// One HTTP request through the manager, tried until it is answered; the body.
    fn get(&self, path: &str) -> String {
        retry(&format!("GET {path} to be answered"), || {
            get_ok(&self.listen, path)
        })
    }
}

impl Deref for Service {
    type Target = Manager;

    fn deref(&self) -> &Manager {
        &self.manager
    }
}

impl DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Manager {
        &mut self.manager
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
    let mut m = Service::hello(&[], &["--workers", "2"]);
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
    let slow = send(&m.listen, "/slow?ms=1000").expect("send the slow request");
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
    assert_eq!(
        slow.response().expect("the slow request's answer").status,
        200
    );
    assert_eq!(m.stop().code(), Some(0));
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
        hello()[0].to_string_lossy()
    );
    let mut m = Service::start(
        Notify::Path,
        &[],
        &["--workers", "2", "--min-ready", "1"],
        &["/bin/sh".into(), "-c".into(), script.into()],
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
    let dir = TempDir::new();
    let mut manager = Start::new(&["--workers", "2", "--min-ready", "3"], &hello())
        .arg("--listen")
        .arg(dir.path().join("http.sock"))
        .spawn();
    assert_eq!(manager.wait_exit().code(), Some(2));
    assert!(manager.has_line("--min-ready 3"), "{:?}", manager.log());
}

#[test]
fn abstract_notify_socket_is_reached() {
    let mut m = Service::start(Notify::Abstract, &[], &["--workers", "1"], &hello());
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
}

#[test]
fn malformed_notify_socket_is_a_warning() {
    for bad in ["relative/garbage", "", "/nonexistent/dir/notify.sock"] {
        let m = Service::start(Notify::Literal(bad), &[], &["--workers", "1"], &hello());
        assert!(m.get("/").starts_with("hello from worker 0"));
        let stderr = m.log_text();
        assert!(
            stderr.contains("WARN") && stderr.contains("NOTIFY_SOCKET"),
            "NOTIFY_SOCKET={bad:?}: {stderr}"
        );
    }
}

#[test]
fn watchdog_heartbeats_at_half_the_interval() {
    let mut m = Service::hello(&[("WATCHDOG_USEC", "400000")], &["--workers", "1"]);
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
    let mut m = Service::hello(
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
        &["--workers", "1"],
    );
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    let got = m.collect(Duration::from_millis(600));
    assert!(got.iter().all(|msg| !msg.contains("WATCHDOG=1")), "{got:?}");
}

#[test]
fn watchdog_garbage_is_a_warning() {
    let mut m = Service::hello(&[("WATCHDOG_USEC", "garbage")], &["--workers", "1"]);
    m.wait_for("READY=1", |msg| lines(msg).contains(&"READY=1"));
    assert!(m.get("/").starts_with("hello from worker 0"));
    let got = m.collect(Duration::from_millis(300));
    assert!(
        m.seen.iter().all(|msg| !msg.contains("WATCHDOG=1")),
        "{got:?}"
    );
    let stderr = m.log_text();
    assert!(
        stderr.contains("WARN") && stderr.contains("WATCHDOG_USEC=\"garbage\""),
        "{stderr}"
    );
}

#[test]
fn unusable_journal_falls_back_to_stderr() {
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        // A real journal: nothing to fall back from here (the e2e suite hides
        // the socket from a unit to test this under systemd).
        return;
    }
    let dir = TempDir::new();
    let listen = dir.path().join("http.sock");
    let mut manager = Start::new(&["--workers", "1"], &hello())
        .log_to("journal")
        .arg("--listen")
        .arg(&listen)
        .spawn();
    let listen = Addr::Unix(listen);
    let body = retry("the manager to serve", || get_ok(&listen, "/"));
    assert!(body.contains("hello from worker 0"));
    manager.stop();
    let stderr = manager.log_text();
    assert!(
        stderr.contains("cannot log to the journal"),
        "warned: {stderr}"
    );
    assert!(
        stderr.contains("worker 0 started"),
        "and logged to stderr: {stderr}"
    );
}
