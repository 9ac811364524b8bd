//! `--policy none` with Node.js apps: every worker's `listen()` is answered
//! with the listening socket itself, as Node's primary does under
//! `SCHED_NONE`, and the workers accept on it by themselves; a `dgram`
//! socket's `bind()` gets a UDP socket the same way.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{fixture, pid_of, start_app};
use crate::common::load::Load;
use crate::common::*;

#[test]
fn every_worker_accepts_on_the_shared_socket() {
    require_node!();
    let port = free_port();
    let mut manager = start_app(
        &[port],
        &["--workers", "2", "--policy", "none"],
        "hello.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(2);
    assert!(
        manager.has_line("node, shared accept protocol, policy none"),
        "{}",
        manager.log_text()
    );
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), "/", 4);
    load.wait_for_more(400);
    let tally = load.stop();
    tally.assert_no_failures("shared accept");
    let served: HashSet<u32> = tally.bodies.iter().map(|b| pid_of(b)).collect();
    let workers: HashSet<u32> = manager.worker_pids().into_iter().collect();
    assert_eq!(served, workers, "every worker accepted some connections");
    assert!(manager.stop().success());
}

#[test]
fn a_reload_under_load_fails_no_request() {
    require_node!();
    let port = free_port();
    let manager = start_app(
        &[port],
        &["--workers", "2", "--policy", "none"],
        "hello.js",
        &[("PORT", port.to_string())],
    );
    manager.wait_ready(2);
    let before: HashSet<u32> = manager.worker_pids().into_iter().collect();
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), "/", 4);
    load.wait_for_more(200);
    for round in 1..=2 {
        manager.signal(Signal::SIGHUP);
        let finished = manager.wait_events("reload-finished", round);
        assert!(
            finished[round - 1].line.contains("ok=true"),
            "{}",
            finished[round - 1].line
        );
        load.wait_for_more(200);
    }
    let tally = load.stop();
    tally.assert_no_failures("reloads of a shared-accept Node.js app");
    let recent: HashSet<u32> = tally
        .bodies
        .iter()
        .rev()
        .take(50)
        .map(|b| pid_of(b))
        .collect();
    assert!(
        recent.is_disjoint(&before),
        "new workers serve after the reloads"
    );
    let exits = manager.wait_events("worker-exited", 4);
    for exit in exits {
        assert!(exit.line.contains("exited: drained"), "{}", exit.line);
    }
}

/// Sends `text` from a socket of its own and returns the answer.
fn echo(port: u16, text: &str) -> String {
    let client = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a read timeout");
    retry(&format!("an echo of {text}"), || {
        client.send_to(text.as_bytes(), ("127.0.0.1", port))?;
        let mut answer = [0u8; 512];
        let (len, _) = client.recv_from(&mut answer)?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer[..len]).into_owned())
    })
}

#[test]
fn a_udp_app_answers_through_a_shared_datagram_socket() {
    require_node!();
    // Bound by `--listen udp:…`.
    let port = free_port();
    let worker = ["node".into(), fixture("udp-echo.js").into()];
    let mut manager = Start::new(
        &[
            "--workers",
            "2",
            "--policy",
            "none",
            "--listen",
            &format!("udp:127.0.0.1:{port}"),
        ],
        &worker,
    )
    .env("PORT", port.to_string())
    .spawn();
    manager.wait_ready(2);
    assert!(
        manager.has_line(&format!("listening on udp:127.0.0.1:{port}")),
        "{}",
        manager.log_text()
    );
    let pids: HashSet<u32> = (0..20)
        .map(|i| {
            let answer = echo(port, &format!("hello {i}"));
            assert!(answer.ends_with(&format!(" hello {i}")), "{answer}");
            pid_of(&answer)
        })
        .collect();
    assert!(pids.is_subset(&manager.worker_pids().into_iter().collect()));
    assert!(manager.stop().success());

    // Passed by systemd (`ListenDatagram=`): a bound UDP socket at fd 3.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let port = socket.local_addr().expect("its address").port();
    let mut manager = Start::new(&["--workers", "1", "--policy", "none"], &worker)
        .activated(&[("dns", socket.as_raw_fd())])
        .env("PORT", port.to_string())
        .spawn();
    manager.wait_ready(1);
    drop(socket);
    assert!(echo(port, "from systemd").ends_with(" from systemd"));
    assert!(manager.stop().success());
}

#[test]
fn a_udp_socket_under_a_dispatching_policy_is_a_clear_error() {
    require_node!();
    let port = free_port();
    let worker = ["node".into(), fixture("udp-echo.js").into()];
    let mut manager = Start::new(&["--listen", &format!("udp:127.0.0.1:{port}")], &worker).spawn();
    assert!(!manager.wait_exit().success());
    assert!(
        manager
            .has_line("is a UDP socket: datagrams are not dispatched; serve it with --policy none"),
        "{}",
        manager.log_text()
    );
    // And a UDP bind without a UDP socket says where one comes from.
    let tcp = free_port();
    let mut manager = start_app(
        &[tcp],
        &["--workers", "1", "--ready-timeout", "2s"],
        "udp-echo.js",
        &[("PORT", tcp.to_string())],
    );
    manager.wait_log("the refused bind", |log| {
        log.contains("no UDP socket was passed; UDP is served under --policy none")
    });
    manager.stop();
}
