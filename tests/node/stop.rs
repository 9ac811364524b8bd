//! How Node.js apps stop: the hook the app uses — a signal handler, PM2's
//! `'shutdown'` message, `@godaddy/terminus` — runs with its servers still
//! open, has the whole `--kill-timeout`, and the log says how the worker
//! ended. Every test stops and reloads real apps, and reads what they printed.

use std::thread;

use nix::sys::signal::Signal;

use super::{get_from, pid_of, require_packages, start_app};
use crate::common::*;

/// The `worker-exited` event of the worker with `pid`, once it is logged.
fn exit_of(manager: &Manager, pid: u32) -> Event {
    wait_for(&format!("worker {pid} to exit"), || {
        manager
            .events("worker-exited")
            .into_iter()
            .find(|e| e.pid == Some(pid))
    })
}

/// Reloads and waits until the reload finished and the old workers exited.
fn reload(manager: &Manager, old: &[u32]) {
    manager.signal(Signal::SIGHUP);
    manager.wait_log("the reload to finish", |log| {
        log.contains("reload to generation 2 finished")
    });
    for pid in old {
        exit_of(manager, *pid);
    }
}

#[test]
fn a_signal_handler_runs_with_its_server_open_on_reload_and_stop() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1"],
        "graceful.js",
        &[
            ("PORT", port.to_string()),
            ("NODE_OPTIONS", "--max-old-space-size=200".into()),
        ],
    );
    manager.wait_ready(1);
    let first = pid_of(&get_from(port, "/").expect("request"));
    let said = format!("started pid={first} NODE_OPTIONS=--max-old-space-size=200");
    assert!(
        manager.log().iter().any(|line| line.ends_with(&said)),
        "the app sees the NODE_OPTIONS it was given: {}",
        manager.log_text()
    );
    reload(&manager, &[first]);
    let second = pid_of(&get_from(port, "/").expect("request after the reload"));
    assert_ne!(first, second);
    manager.stop();
    let log = manager.log_text();
    for pid in [first, second] {
        assert!(
            log.contains(&format!("SIGTERM handler ran pid={pid} listening=true")),
            "{log}"
        );
        assert!(log.contains(&format!("server closed pid={pid}")), "{log}");
        let exit = exit_of(&manager, pid);
        assert!(
            exit.line.contains(" INFO ") && exit.line.contains("exited: drained"),
            "{}",
            exit.line
        );
    }
    assert!(!log.contains("server.close failed"), "{log}");
}

#[test]
fn terminus_cleans_up_on_reload_and_stop() {
    require_node!();
    require_packages();
    for (exit0, how) in [("0", "stopped by SIGTERM, as asked"), ("1", "drained")] {
        let port = free_port();
        let mut manager = start_app(
            &[port],
            &["--workers", "1"],
            "terminus.js",
            &[("PORT", port.to_string()), ("TERMINUS_EXIT0", exit0.into())],
        );
        manager.wait_ready(1);
        let first = pid_of(&get_from(port, "/").expect("request"));
        reload(&manager, &[first]);
        let second = pid_of(&get_from(port, "/").expect("request after the reload"));
        assert!(manager.stop().success());
        let log = manager.log_text();
        assert!(!log.contains("error happened during shutdown"), "{log}");
        for pid in [first, second] {
            assert!(
                log.contains(&format!("cleanup finished pid={pid}")),
                "{log}"
            );
            let exit = exit_of(&manager, pid);
            assert!(
                exit.line.contains(" INFO ") && exit.line.contains(&format!("exited: {how}")),
                "useExit0={exit0}: {}",
                exit.line
            );
        }
    }
}

#[test]
fn pm2s_shutdown_message_example_reaches_its_last_line() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "--shutdown-message"],
        "pm2-shutdown.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(1);
    let first = pid_of(&get_from(port, "/").expect("request"));
    reload(&manager, &[first]);
    assert!(manager.stop().success());
    let log = manager.log_text();
    assert_eq!(
        log.matches("Finished closing connections").count(),
        2,
        "{log}"
    );
    let exits = manager.events("worker-exited");
    assert_eq!(exits.len(), 2);
    for exit in exits {
        assert!(
            exit.line.contains("exit_code=0") && exit.line.contains("exited: drained"),
            "{}",
            exit.line
        );
    }
}

#[test]
fn kill_signal_sigint_reaches_the_apps_sigint_handler() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "--kill-signal", "SIGINT"],
        "graceful.js",
        &[("PORT", port.to_string()), ("STOP_SIGNAL", "SIGINT".into())],
    );
    manager.wait_ready(1);
    let pid = pid_of(&get_from(port, "/").expect("request"));
    assert!(manager.stop().success());
    let log = manager.log_text();
    assert!(
        log.contains(&format!("SIGINT handler ran pid={pid} listening=true")),
        "{log}"
    );
    assert!(exit_of(&manager, pid).line.contains("exited: drained"));
}

/// A request in flight when its worker is asked to stop completes within the
/// kill timeout, whether the app handles the stop signal itself
/// (`graceful.js`) or leaves it to Node's cluster `disconnect` (the same app
/// handling only SIGUSR2: nothing of its own for SIGTERM).
#[test]
fn a_long_request_completes_across_a_reload_within_the_whole_kill_timeout() {
    require_node!();
    let managers: Vec<(u16, Manager)> = ["SIGTERM", "SIGUSR2"]
        .into_iter()
        .map(|handled| {
            let port = free_port();
            let manager = start_app(
                &[port],
                &["--workers", "1", "--kill-timeout", "20s"],
                "graceful.js",
                &[("PORT", port.to_string()), ("STOP_SIGNAL", handled.into())],
            );
            (port, manager)
        })
        .collect();
    let mut requests = Vec::new();
    for (port, manager) in &managers {
        manager.wait_ready(1);
        let port = *port;
        requests.push(thread::spawn(move || get_from(port, "/slow?ms=14000")));
        manager.wait_log("the slow request to start", |log| {
            log.contains("slow request started")
        });
        manager.signal(Signal::SIGHUP);
    }
    for (request, (port, manager)) in requests.into_iter().zip(&managers) {
        let body = request.join().expect("client thread");
        let body = body.unwrap_or_else(|e| panic!("{e}\n{}", manager.log_text()));
        assert!(body.contains("ms=14000"), "{body}");
        let old = pid_of(&body);
        let exit = exit_of(manager, old);
        assert!(exit.line.contains("exited: drained"), "{}", exit.line);
        assert_ne!(pid_of(&get_from(*port, "/").expect("request")), old);
    }
    for (_, mut manager) in managers {
        assert!(manager.stop().success());
    }
}

#[test]
fn a_worker_killed_at_the_kill_timeout_is_a_warning_with_what_it_held() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "--kill-timeout", "1s"],
        "graceful.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(1);
    let pid = pid_of(&get_from(port, "/").expect("request"));
    let slow = thread::spawn(move || get_from(port, "/slow?ms=10000"));
    manager.wait_log("the slow request to start", |log| {
        log.contains("slow request started")
    });
    manager.stop();
    let exit = exit_of(&manager, pid);
    assert!(
        exit.line.contains(" WARN ")
            && exit
                .line
                .contains("killed at the kill timeout (1s), still holding 1 connection"),
        "{}",
        exit.line
    );
    assert!(slow.join().expect("client thread").is_err());
}

#[test]
fn a_worker_exiting_non_zero_while_draining_is_a_warning() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1"],
        "graceful.js",
        &[("PORT", port.to_string()), ("EXIT_CODE", "3".into())],
    );
    manager.wait_ready(1);
    let pid = pid_of(&get_from(port, "/").expect("request"));
    manager.stop();
    let exit = exit_of(&manager, pid);
    assert!(
        exit.line.contains(" WARN ") && exit.line.contains("exit code 3 while draining"),
        "{}",
        exit.line
    );
}

#[test]
fn a_slow_starter_is_told_which_flag_to_raise() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "--ready-timeout", "1s"],
        "slow-start.js",
        &[("PORT", port.to_string()), ("START_MS", "3000".into())],
    );
    let timeout = manager.wait_events("worker-ready-timeout", 1).remove(0);
    for needle in ["--ready-timeout", "listen_timeout", "--protocol node-ipc"] {
        assert!(timeout.line.contains(needle), "{needle}: {}", timeout.line);
    }
    manager.stop();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1", "--ready-timeout", "10s"],
        "slow-start.js",
        &[("PORT", port.to_string()), ("START_MS", "3000".into())],
    );
    manager.wait_ready(1);
    assert!(get_from(port, "/").expect("request").starts_with("late"));
    manager.stop();
}

#[test]
fn an_exclusive_listen_gets_a_clear_error() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "1"],
        "exclusive.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_log("the exclusive listen to be explained", |log| {
        log.lines()
            .any(|l| l.contains(" ERROR ") && l.contains("`exclusive: true`"))
    });
    manager.stop();
}
