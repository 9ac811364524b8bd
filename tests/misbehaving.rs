//! Misbehaving workers (the `rogue` test binary): each fault costs the worker
//! its life, never the manager's, and clients do not notice.

use std::collections::HashSet;

use crate::common::*;

/// Each `rogue MODE` worker breaks the protocol right after its first
/// connection. Every request must still succeed, each served by a fresh
/// process, and each breach must be logged with `why`.
fn replaced_after_each_breach(mode: &str, why: &str) {
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "2"], &rogue(&[mode]));
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    let mut pids = HashSet::new();
    for served in 1..=4 {
        let (id, pid) = hit(&addr);
        assert!(id < 2);
        assert!(pids.insert(pid), "pid {pid} answered after its breach");
        // The next request is sent once the manager has acted on this breach,
        // since a connection handed over in between would die with the worker.
        let breaches = manager.wait_events("worker-protocol-error", served);
        assert_eq!(breaches[served - 1].pid, Some(pid));
        assert!(
            breaches[served - 1].line.contains(why),
            "{}",
            breaches[served - 1].line
        );
        wait_gone(&[pid]);
    }
    assert!(manager.events("worker-gave-up").is_empty());
}

#[test]
fn garbage_gets_a_worker_replaced() {
    replaced_after_each_breach("garbage", "line without '='");
}

#[test]
fn an_oversized_message_gets_a_worker_replaced() {
    replaced_after_each_breach("oversized", "more than 4096 bytes");
}

#[test]
fn stopping_starts_a_replacement_without_failed_requests() {
    let manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "1"],
        &rogue(&["stopping-after", "3"]),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(1);
    let served: Vec<(u32, u32)> = (0..12).map(|_| hit(&addr)).collect();
    assert!(served.iter().all(|(id, _)| *id == 0));
    let first = served[0].1;
    assert!(served[..3].iter().all(|(_, pid)| *pid == first));
    let pids: HashSet<u32> = served.iter().map(|(_, pid)| *pid).collect();
    assert!(
        pids.len() >= 3,
        "no replacement after STOPPING=1: {served:?}"
    );

    let stopping = manager.wait_events("worker-stopping", 1);
    assert_eq!(stopping[0].pid, Some(first));
    let exited = wait_for("the first worker to exit", || {
        manager
            .events("worker-exited")
            .into_iter()
            .find(|e| e.pid == Some(first))
    });
    assert!(
        exited.line.contains("exit_code=0") && exited.line.contains("drained"),
        "{}",
        exited.line
    );
    assert!(manager.events("worker-kill-timeout").is_empty());
}

#[test]
fn crashing_at_start_gives_up_and_exits_non_zero() {
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "2",
            "--max-restarts",
            "3",
            "--restart-window",
            "1m",
        ],
        &rogue(&["crash-at-start"]),
    );
    let status = manager.wait_exit();
    assert!(
        status.code().is_some_and(|code| code != 0),
        "exit status {status:?}"
    );
    let gave_up: HashSet<Option<u32>> = manager
        .events("worker-gave-up")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(gave_up, HashSet::from([Some(0), Some(1)]));
    // Three restarts allowed: the fourth crash of each slot is the last.
    assert_eq!(manager.worker_pids().len(), 8);
    wait_gone(&manager.worker_pids());
}

#[test]
fn never_ready_is_killed_at_the_ready_timeout() {
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "1",
            "--ready-timeout",
            "300ms",
            "--max-restarts",
            "1",
        ],
        &rogue(&["never-ready"]),
    );
    let status = manager.wait_exit();
    assert!(status.code().is_some_and(|code| code != 0));
    let timed_out = manager.events("worker-ready-timeout");
    let started = manager.worker_pids();
    assert_eq!(started.len(), 2);
    assert_eq!(
        timed_out
            .iter()
            .map(|e| e.pid.expect("a worker pid in the event"))
            .collect::<Vec<_>>(),
        started
    );
    wait_gone(&started);
}

#[test]
fn an_empty_message_is_not_a_closed_channel() {
    let manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "1", "--verbose"],
        &rogue(&["empty-message"]),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(1);
    let (_, pid) = hit(&addr);
    // Sent after the empty message: read only if the manager still listens.
    wait_for("the status sent after the empty message", || {
        manager
            .has_line("worker 0 status: sent an empty message")
            .then_some(())
    });
    for _ in 0..3 {
        assert_eq!(hit(&addr), (0, pid));
    }
    assert!(manager.events("worker-protocol-error").is_empty());
}
