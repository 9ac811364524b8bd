//! Bad input: the manager refuses to start with a line on stderr naming the
//! problem and exit status 2, before any worker runs.

use std::ffi::OsString;
use std::fs::File;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// A worker command that leaves a mark if it is ever started.
struct Marked {
    dir: TempDir,
}

impl Marked {
    fn new() -> Marked {
        Marked {
            dir: TempDir::new(),
        }
    }

    fn worker(&self) -> Vec<OsString> {
        let hello = hello().remove(0);
        let script = format!(
            "echo started >> {}; exec {}",
            self.dir.path().join("marker").display(),
            hello.to_string_lossy()
        );
        vec!["sh".into(), "-c".into(), script.into()]
    }

    /// Waits for the manager to give up and returns its stderr; checks that
    /// it exited 2 and started nothing.
    fn refused(&self, mut manager: Manager) -> Vec<String> {
        let status = manager.wait_exit();
        assert_eq!(status.code(), Some(2), "{:?}", manager.log());
        assert!(
            !self.dir.path().join("marker").exists(),
            "a worker was started"
        );
        manager.log()
    }
}

/// The refusal is exactly one line, `sockherd: …`, containing `needle`.
fn one_line(log: &[String], needle: &str) {
    assert_eq!(log.len(), 1, "not one line: {log:?}");
    assert!(log[0].starts_with("sockherd: "), "{log:?}");
    assert!(log[0].contains(needle), "{log:?} does not say {needle:?}");
}

#[test]
fn unknown_flag() {
    let marked = Marked::new();
    let log = marked.refused(serve(
        &["--listen", "127.0.0.1:0", "--bogus"],
        &marked.worker(),
    ));
    one_line(&log, "'--bogus'");
}

#[test]
fn invalid_address() {
    let marked = Marked::new();
    let log = marked.refused(serve(&["--listen", "127.0.0.1:http"], &marked.worker()));
    one_line(&log, "invalid listen address \"127.0.0.1:http\"");
}

#[test]
fn no_sockets() {
    let marked = Marked::new();
    let log = marked.refused(serve(&["-w", "1"], &marked.worker()));
    one_line(&log, "no listening sockets");
}

#[test]
fn address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = taken
        .local_addr()
        .expect("the socket\'s address")
        .to_string();
    let marked = Marked::new();
    let log = marked.refused(serve(&["--listen", &addr], &marked.worker()));
    one_line(&log, &format!("cannot bind {addr}"));
}

#[test]
fn sockets_meant_for_another_process() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let marked = Marked::new();
    let log = marked.refused(serve_activated(
        &[("http", socket.as_raw_fd())],
        &[("LISTEN_PID", "1")],
        &[],
        &marked.worker(),
    ));
    one_line(&log, "LISTEN_PID=1 is not this process");
}

#[test]
fn passed_fd_is_not_a_listening_socket() {
    let dir = TempDir::new();
    let file = File::create(dir.path().join("plain")).expect("create a plain file");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let connected = TcpStream::connect(listener.local_addr().expect("the socket\'s address"))
        .expect("connect to the listener");
    let datagram = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for (fd, why) in [
        (file.as_raw_fd(), "it is not a socket"),
        (connected.as_raw_fd(), "listen() was not called on it"),
    ] {
        let marked = Marked::new();
        let log = marked.refused(serve_activated(&[("http", fd)], &[], &[], &marked.worker()));
        one_line(
            &log,
            &format!("passed fd 3 is not a listening stream socket nor a UDP socket: {why}"),
        );
    }
    // A UDP socket is served under --policy none only.
    let marked = Marked::new();
    let log = marked.refused(serve_activated(
        &[("dns", datagram.as_raw_fd())],
        &[],
        &[],
        &marked.worker(),
    ));
    one_line(&log, "is a UDP socket: datagrams are not dispatched");
}

#[test]
fn listen_flag_with_passed_sockets() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let marked = Marked::new();
    let log = marked.refused(serve_activated(
        &[("http", socket.as_raw_fd())],
        &[],
        &["--listen", "127.0.0.1:0"],
        &marked.worker(),
    ));
    one_line(&log, "use one or the other");
}

#[test]
fn worker_command_not_found() {
    for missing in ["/nonexistent/worker", "sockherd-no-such-worker"] {
        let log = Marked::new().refused(serve(&["--listen", "127.0.0.1:0"], &[missing.into()]));
        one_line(&log, &format!("worker command \"{missing}\" not found"));
    }
}

#[test]
fn worker_command_not_executable() {
    let dir = TempDir::new();
    let script = dir.path().join("app.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644))
        .expect("chmod the script");
    let log = Marked::new().refused(serve(
        &["--listen", "127.0.0.1:0"],
        &[script.clone().into()],
    ));
    one_line(
        &log,
        &format!("worker command {} is not executable", script.display()),
    );
}
