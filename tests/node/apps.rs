//! What Node.js apps do while they serve, unmodified: listen shapes, TLS
//! data shared between workers, crashes, messages, refusals, reloads under
//! load.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{curl, get_from, pid_of, start_app};
use crate::common::*;

#[test]
fn unmodified_http_app_answers_round_robin() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "3"],
        "hello.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(3);
    assert!(manager.has_line("node protocol"), "{}", manager.log_text());
    let pids: Vec<u32> = (0..6)
        .map(|i| pid_of(&curl(&format!("http://127.0.0.1:{port}/r{i}"))))
        .collect();
    let first: HashSet<u32> = pids[..3].iter().copied().collect();
    assert_eq!(first.len(), 3, "three different workers first: {pids:?}");
    assert_eq!(pids[..3], pids[3..], "then the same order again: {pids:?}");
    let status = manager.stop();
    let log = manager.log_text();
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
    let dir = TempDir::new();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
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
    let mut manager = start_app(
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
    let status = manager.stop();
    let log = manager.log_text();
    assert!(status.success(), "{log}");
}

#[test]
fn app_that_crashes_after_every_request_keeps_serving() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "2", "--max-restarts", "100"],
        "crash.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(2);
    let requests = 8;
    for i in 0..requests {
        let body = get_from(port, &format!("/{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}; log:\n{}", manager.log_text()));
        assert!(body.starts_with("crashy"), "{body}");
    }
    manager.wait_log("a crash per request", |log| {
        log.matches("exited: exit code 1").count() >= requests
    });
    assert!(!manager.has_line("gave up"), "{}", manager.log_text());
    let status = manager.stop();
    let log = manager.log_text();
    assert!(status.success(), "{log}");
}

#[test]
fn process_send_reaches_the_manager_log() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "-v"],
        "counter.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(1);
    for _ in 0..3 {
        get_from(port, "/").expect("request");
    }
    manager.wait_log("the third count", |log| log.contains("\"requests\":3"));
    let log = manager.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("\"requests\":3"))
        .unwrap_or_default();
    assert!(
        line.contains("DEBUG") && line.contains("message from worker 0"),
        "{line}"
    );
    let status = manager.stop();
    assert!(status.success());
}

#[test]
fn ipc_workers_receive_net_socket_handles() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "2", "--protocol", "node-ipc", "--wait-ready"],
        "ipc.js",
        &[],
    );
    manager.wait_ready(2);
    let pids: Vec<u32> = (0..4)
        .map(|i| {
            let body = get_from(port, &format!("/{i}")).expect("request");
            assert!(body.starts_with("ipc"), "{body}");
            pid_of(&body)
        })
        .collect();
    assert_ne!(pids[0], pids[1], "{pids:?}");
    assert_eq!(pids[..2], pids[2..], "{pids:?}");
    let status = manager.stop();
    let log = manager.log_text();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("exited: drained").count(), 2, "{log}");
}

#[test]
fn listening_on_a_port_that_was_not_passed_is_a_clear_error() {
    require_node!();
    let (port, extra) = (free_port(), free_port());
    let mut manager = start_app(
        &[port],
        &["--workers", "1"],
        "hello.js",
        &[
            ("PORT", port.to_string()),
            ("EXTRA_PORT", extra.to_string()),
        ],
    );
    manager.wait_log("the app's own report of the failure", |log| {
        log.contains("extra listen failed: EADDRNOTAVAIL")
    });
    let log = manager.log_text();
    let error = log
        .lines()
        .find(|l| l.contains("no socket for it was passed"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    assert!(
        error.contains("ERROR") && error.contains(&format!("port {extra}")),
        "{error}"
    );
    manager.wait_ready(1);
    assert!(get_from(port, "/")
        .expect("the passed port serves")
        .starts_with("hello"));
    manager.stop();
}

#[test]
fn two_listeners_are_both_answered() {
    require_node!();
    let (http, metrics) = (free_port(), free_port());
    let mut manager = start_app(
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
        assert!(get_from(http, "/").expect("http").starts_with("hello"));
        assert!(get_from(metrics, "/")
            .expect("metrics")
            .starts_with("metrics"));
    }
    let status = manager.stop();
    let log = manager.log_text();
    assert!(status.success(), "{log}");
}

#[test]
fn graceful_reload_under_load_fails_no_request() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
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
                    match get_from(port, "/load") {
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
        manager.wait_log(&format!("reload {round}"), |log| {
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
    let log = manager.log_text();
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
    let status = manager.stop();
    let log = manager.log_text();
    assert!(status.success(), "{log}");
}

#[test]
fn refused_connection_goes_to_another_worker() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "2", "-v"],
        "limited.js",
        &[("PORT", port.to_string()), ("HOLD_MS", "1500".into())],
    );
    manager.wait_ready(2);
    let held = thread::spawn(move || get_from(port, "/hold"));
    manager.wait_log("the held request", |log| log.contains("holding pid="));
    // The other worker gets the next connection, and the one after that is
    // offered to the busy worker first, which refuses it.
    let quick = pid_of(&get_from(port, "/quick").expect("quick request"));
    let next = pid_of(&get_from(port, "/quick").expect("request after a refusal"));
    assert_eq!(next, quick, "the free worker served it");
    manager.wait_log("the refusal to be logged", |log| {
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
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "--wait-ready", "-v"],
        "wait-ready.js",
        &[("PORT", port.to_string()), ("WARMUP_MS", "500".into())],
    );
    manager.wait_ready(1);
    let log = manager.log_text();
    let said = log
        .find("): \"ready\"")
        .expect("the ready message is logged");
    let ready = log.find(") is ready").expect("readiness is logged");
    let listening = log.find("is listening on").expect("listening is logged");
    assert!(listening < said && said < ready, "{log}");
    assert!(get_from(port, "/").expect("request").starts_with("warm"));
    manager.stop();
}

#[test]
fn worker_that_breaks_the_protocol_is_replaced() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1"],
        "garbage.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(1);
    let first = pid_of(&get_from(port, "/garbage").expect("request"));
    manager.wait_log("the invalid JSON", |log| log.contains("invalid JSON"));
    let second = pid_of(&get_from(port, "/big").expect("request after the replacement"));
    assert_ne!(first, second);
    manager.wait_log("the oversized message", |log| {
        log.contains("a message of more than 1024 KiB")
    });
    let third = pid_of(&get_from(port, "/").expect("request after the second replacement"));
    assert_ne!(second, third);
    let status = manager.stop();
    let log = manager.log_text();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("broke the protocol").count(), 2, "{log}");
}

#[test]
fn connection_held_by_a_dying_worker_reaches_another() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "2", "-v"],
        "dies.js",
        &[("PORT", port.to_string()), ("BLOCK_MS", "800".into())],
    );
    manager.wait_ready(2);
    let doomed = pid_of(&get_from(port, "/die").expect("the last answer of the doomed worker"));
    manager.wait_log("the doomed worker to block", |log| {
        log.contains(&format!("blocking pid={doomed}"))
    });
    // Round-robin: this one goes to the other worker, the next to the doomed
    // one, which never takes it and exits.
    let other = pid_of(&get_from(port, "/a").expect("request to the other worker"));
    assert_ne!(other, doomed);
    let rescued = pid_of(&get_from(port, "/b").expect("request handed to the doomed worker"));
    assert_ne!(rescued, doomed, "{}", manager.log_text());
    // The manager logged this before the rescue, but its log is read on
    // another thread, which may not have caught up with the answer yet.
    manager.wait_log("the connection to be dispatched again", |log| {
        log.contains("did not take its last connection; dispatching it again")
    });
    manager.stop();
}

/// A worker that never listens runs as a plain IPC child, ready when it says
/// so; it reloads and stops through its own SIGTERM handler.
#[test]
fn a_queue_consumer_runs_under_node_ipc() {
    require_node!();
    let dir = TempDir::new();
    let idle = dir.path().join("idle.sock");
    let worker = ["node".into(), super::fixture("consumer.js").into()];
    let mut manager = Start::new(
        &[
            "--workers",
            "2",
            "--protocol",
            "node-ipc",
            "--wait-ready",
            "--ready-timeout",
            "2s",
            "--listen",
            &idle.to_string_lossy(),
        ],
        &worker,
    )
    .spawn();
    manager.wait_ready(2);
    let first = manager.worker_pids();
    manager.signal(Signal::SIGHUP);
    manager.wait_log("the reload to finish", |log| {
        log.contains("reload to generation 2 finished")
    });
    assert!(manager.stop().success());
    let log = manager.log_text();
    for pid in &first {
        assert!(
            log.contains(&format!("consumer stopping pid={pid}")),
            "{log}"
        );
    }
    let exits = manager.events("worker-exited");
    assert_eq!(exits.len(), 4);
    for exit in exits {
        assert!(exit.line.contains("exited: drained"), "{}", exit.line);
    }
}
