//! Node.js apps across a re-exec of the manager: the workers' IPC channels,
//! their `listen()` registrations and their shim cross with the manager,
//! whether the manager dispatches (`rr`) or the workers share the socket
//! (`--policy none`).

use std::collections::HashSet;
use std::net::SocketAddr;

use nix::sys::signal::Signal;

use super::{pid_of, start_app};
use crate::common::load::Load;
use crate::common::*;

/// Three re-execs under load, then a reload and a graceful stop.
fn three_reexecs_then_a_reload(policy: &str) {
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "2", "--policy", policy],
        "hello.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(2);
    let before: HashSet<u32> = manager.worker_pids().into_iter().collect();
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), "/", 4);
    load.wait_for_more(200);
    for n in 1..=3 {
        manager.signal(Signal::SIGUSR2);
        let done = manager.wait_events("reexec-done", n);
        assert!(
            done[n - 1].line.contains("2 workers kept"),
            "{}",
            done[n - 1].line
        );
        load.wait_for_more(100);
    }
    let tally = load.stop();
    tally.assert_no_failures(&format!("Node.js workers under {policy} across re-execs"));
    let served: HashSet<u32> = tally.bodies.iter().map(|b| pid_of(b)).collect();
    assert_eq!(served, before, "the same workers served throughout");

    // What the links agreed on crossed: a reload and a stop go as before.
    manager.signal(Signal::SIGHUP);
    let finished = manager.wait_events("reload-finished", 1);
    assert!(finished[0].line.contains("ok=true"), "{}", finished[0].line);
    let after: HashSet<u32> = (0..20)
        .map(|_| {
            pid_of(
                &get_ok(&Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))), "/").expect("a 200"),
            )
        })
        .collect();
    assert!(after.is_disjoint(&before), "the reload's workers serve");
    assert!(manager.stop().success());
    let drained = manager.events("worker-exited");
    assert!(
        drained
            .iter()
            .rev()
            .take(2)
            .all(|e| e.line.contains("drained") || e.line.contains("as asked")),
        "{}",
        manager.log_text()
    );
}

#[test]
fn cluster_workers_are_kept_across_reexecs() {
    require_node!();
    three_reexecs_then_a_reload("rr");
}

#[test]
fn shared_accept_node_workers_are_kept_across_reexecs() {
    require_node!();
    three_reexecs_then_a_reload("none");
}
