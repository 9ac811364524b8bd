//! Lifecycle: a killed worker is replaced, workers never outlive the manager,
//! and SIGTERM drains in-flight requests and stops within the kill timeout.

use std::net::SocketAddr;

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn a_killed_worker_is_replaced_under_its_id() {
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "2"], &hello());
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    let (id0, victim) = hit(&addr);
    let (id1, survivor) = hit(&addr);
    assert_eq!((id0, id1), (0, 1));

    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL the worker");
    wait_gone(&[victim]);
    // Every request after the death succeeds; worker 0 comes back with a new pid.
    let replacement = wait_for("worker 0 to serve again", || {
        let (id, pid) = hit(&addr);
        match id {
            0 => {
                assert_ne!(pid, victim, "a dead worker answered");
                Some(pid)
            }
            _ => {
                assert_eq!(pid, survivor, "worker 1 was disturbed");
                None
            }
        }
    });
    for _ in 0..6 {
        let (id, pid) = hit(&addr);
        assert_eq!(pid, if id == 0 { replacement } else { survivor });
    }
    let started: Vec<u32> = manager
        .events("worker-started")
        .iter()
        .filter(|e| e.id == Some(0))
        .filter_map(|e| e.pid)
        .collect();
    assert_eq!(started, [victim, replacement], "{:#?}", manager.log());
}

#[test]
fn workers_die_with_a_killed_manager() {
    // These workers do not exit when their channel closes: only the kernel
    // (PR_SET_PDEATHSIG) can stop them once the manager is gone.
    let mut manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "3"],
        &rogue(&["ignore-shutdown"]),
    );
    manager.wait_ready(3);
    let pids = manager.worker_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|pid| alive(*pid)));
    manager.signal(Signal::SIGKILL);
    manager.wait_exit();
    wait_gone(&pids);
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "2",
            "--kill-timeout",
            "15s",
        ],
        &hello(),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    let Addr::Tcp(server) = addr else {
        unreachable!()
    };
    let pending = send(&addr, "/slow?ms=1500").expect("send the slow request");
    let client: SocketAddr = pending.local.expect("a TCP client address");
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
    let status = manager.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert!(manager.events("worker-kill-timeout").is_empty());
    wait_gone(&manager.worker_pids());
}

#[test]
fn a_worker_ignoring_shutdown_is_killed_at_the_kill_timeout() {
    let mut manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "2", "--kill-timeout", "1s"],
        &rogue(&["ignore-shutdown"]),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    hit(&addr);
    manager.signal(Signal::SIGTERM);
    let status = manager.wait_exit();
    assert_eq!(status.code(), Some(0));
    let killed: Vec<Option<u32>> = manager
        .events("worker-kill-timeout")
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(
        killed.contains(&Some(0)) && killed.contains(&Some(1)),
        "{killed:?}"
    );
    // Killed and reaped by the manager before it left, not orphaned.
    let pids = manager.worker_pids();
    let exits = manager.events("worker-exited");
    for pid in &pids {
        assert!(
            exits
                .iter()
                .any(|e| e.pid == Some(*pid) && e.line.contains("exit_signal=9")),
            "worker {pid} was not SIGKILLed and reaped: {exits:?}"
        );
    }
    wait_gone(&pids);
}
