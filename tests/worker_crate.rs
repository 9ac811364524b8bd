//! The `sockherd-worker` crate's axum integration as real workers under the
//! real `sockherd serve`: the `axum_hello` example (`axum::serve` over
//! `Listener::from_env`) answers from every worker, drains on SIGTERM —
//! the slow request in flight completes and the manager exits 0 — and
//! loses no request to a rolling reload.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::common::load::Load;
use crate::common::*;
use nix::sys::signal::Signal;

#[test]
fn axum_workers_answer_and_drain_on_sigterm() {
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--kill-timeout",
            "15s",
        ],
        &axum_hello(),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    let pids = manager.worker_pids();

    // Both workers answer, each naming itself.
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let (id, pid) = hit(&addr);
        assert!(pids.contains(&pid), "pid {pid} is no worker of {pids:?}");
        seen.insert(id);
    }
    assert_eq!(seen, BTreeSet::from([0, 1]));

    // A slow request in a worker's hands when the manager is told to stop.
    let Addr::Tcp(server) = addr else {
        unreachable!("--listen 127.0.0.1:0 is TCP")
    };
    let pending = send(&addr, "/slow?ms=1500").unwrap();
    let client: SocketAddr = pending.local.unwrap();
    wait_for("a worker to read the slow request", || {
        request_taken(server, client).then_some(())
    });
    manager.signal(Signal::SIGTERM);

    let response = pending.response().expect("the in-flight request was cut");
    assert_eq!(response.status, 200);
    assert!(
        response.body.starts_with("hello from worker"),
        "{response:?}"
    );
    assert_eq!(manager.wait_exit().code(), Some(0));
    assert!(manager.events("worker-kill-timeout").is_empty());
    let exits = manager.events("worker-exited");
    assert_eq!(exits.len(), 2, "{exits:?}");
    for exit in &exits {
        assert!(
            exit.line.contains("exit_code=0") && exit.line.contains("drained"),
            "{}",
            exit.line
        );
    }
    wait_gone(&pids);
}

#[test]
fn a_rolling_reload_of_axum_workers_fails_no_request() {
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "2"], &axum_hello());
    let Addr::Tcp(addr) = manager.listening(1).remove(0) else {
        unreachable!("--listen 127.0.0.1:0 is TCP")
    };
    manager.wait_ready(2);
    let before = manager.worker_pids();
    let load = Load::start(addr, "/", 4);
    load.wait_for_more(200);

    manager.signal(Signal::SIGHUP);
    let finished = manager.wait_events("reload-finished", 1);
    assert!(finished[0].line.contains("ok=true"), "{}", finished[0].line);
    load.wait_for_more(200);
    let tally = load.stop();
    tally.assert_no_failures("rolling reload of axum workers");

    let drained = manager.wait_events("worker-exited", 2);
    for event in &drained {
        assert!(before.contains(&event.pid.unwrap_or(0)), "{}", event.line);
        assert!(event.line.contains("drained"), "{}", event.line);
    }
}
