//! Dispatch: round-robin order, every kind of listening socket (bound with
//! `--listen`, passed by systemd, passed by `systemd-socket-activate`), what
//! each worker is given, and workers of both protocol versions served under
//! concurrent load.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::common::load::Load;
use crate::common::*;
use nix::sys::signal::Signal;

/// Nine sequential requests to three ready workers go 0, 1, 2, 0, 1, 2, ….
fn assert_round_robin(addr: &Addr) {
    let ids: Vec<u32> = (0..9).map(|_| hit(addr).0).collect();
    assert_eq!(ids, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn round_robin_over_a_bound_socket() {
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "3"], &hello());
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(3);
    assert_round_robin(&addr);
}

#[test]
fn round_robin_over_a_passed_socket() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = Addr::Tcp(socket.local_addr().expect("the socket\'s address"));
    let manager = serve_activated(&[("http", socket.as_raw_fd())], &[], &["-w", "3"], &hello());
    manager.wait_ready(3);
    assert_round_robin(&addr);
}

#[test]
fn under_systemd_socket_activate() {
    let (manager, addr) = socket_activate(&["-w", "3"], &hello());
    // The first connection makes systemd-socket-activate exec the manager;
    // it waits in the socket's queue until a worker is ready.
    let (first, _) = hit(&addr);
    manager.wait_ready(3);
    let ids: Vec<u32> = (0..9).map(|_| hit(&addr).0).collect();
    let start = ids[0];
    assert!(first < 3);
    assert_eq!(
        ids,
        (0..9).map(|i| (start + i) % 3).collect::<Vec<_>>(),
        "not round-robin"
    );
}

#[test]
fn unix_socket() {
    let dir = TempDir::new();
    let path = dir.path().join("app.sock");
    let mut manager = serve(
        &["--listen", path.to_str().expect("a UTF-8 path"), "-w", "2"],
        &hello(),
    );
    let addr = manager.listening(1).remove(0);
    assert_eq!(addr, Addr::Unix(path.clone()));
    manager.wait_ready(2);
    let ids: Vec<u32> = (0..4).map(|_| hit(&addr).0).collect();
    assert_eq!(ids, [0, 1, 0, 1]);
    manager.signal(Signal::SIGTERM);
    assert!(manager.wait_exit().success());
    assert!(!path.exists(), "the socket file it created is left behind");
}

#[test]
fn ipv6() {
    let manager = serve(&["--listen", "[::1]:0", "-w", "2"], &hello());
    let addr = manager.listening(1).remove(0);
    match &addr {
        Addr::Tcp(sa) => assert_eq!(sa.ip(), Ipv6Addr::LOCALHOST),
        other => panic!("listening on {other:?}"),
    }
    manager.wait_ready(2);
    let ids: Vec<u32> = (0..4).map(|_| hit(&addr).0).collect();
    assert_eq!(ids, [0, 1, 0, 1]);
}

/// Each connection reaches a worker with the name of the socket it came in on.
fn assert_names(sockets: &[(&str, Addr)]) {
    for _ in 0..2 {
        for (name, addr) in sockets {
            let response = get(addr, "/").expect("GET /");
            assert_eq!(response.status, 200);
            assert!(
                response.body.trim_end().ends_with(&format!(" on {name}")),
                "{name}: {response:?}"
            );
        }
    }
}

#[test]
fn two_bound_sockets() {
    let dir = TempDir::new();
    let path = dir.path().join("admin.sock");
    let manager = serve(
        &[
            "--listen",
            "web=127.0.0.1:0",
            "--listen",
            &format!("admin={}", path.display()),
            "-w",
            "2",
        ],
        &rogue(&["serve"]),
    );
    let addrs = manager.listening(2);
    manager.wait_ready(2);
    assert_eq!(addrs[1], Addr::Unix(path));
    assert_names(&[("web", addrs[0].clone()), ("admin", addrs[1].clone())]);
}

#[test]
fn two_passed_sockets() {
    let http = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let admin = TcpListener::bind("[::1]:0").expect("bind a listening socket");
    let manager = serve_activated(
        &[("http", http.as_raw_fd()), ("admin", admin.as_raw_fd())],
        &[],
        &["-w", "2"],
        &rogue(&["serve"]),
    );
    manager.wait_ready(2);
    assert_names(&[
        (
            "http",
            Addr::Tcp(http.local_addr().expect("the socket\'s address")),
        ),
        (
            "admin",
            Addr::Tcp(admin.local_addr().expect("the socket\'s address")),
        ),
    ]);
}

#[test]
fn worker_environment() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = Addr::Tcp(socket.local_addr().expect("the socket\'s address"));
    // What systemd gives a service that must not reach its workers.
    let manager_only = [
        ("NOTIFY_SOCKET", "/nonexistent/notify"),
        ("WATCHDOG_USEC", "30000000"),
        ("WATCHDOG_PID", "1"),
        ("JOURNAL_STREAM", "8:12345"),
    ];
    let mut env = manager_only.to_vec();
    env.push(("SOCKHERD_TEST_INHERITED", "yes"));
    let manager = serve_activated(
        &[("http", socket.as_raw_fd())],
        &env,
        &["--name", "shop", "-w", "2"],
        &hello(),
    );
    manager.wait_ready(2);
    let listening_inode = format!(
        "socket:[{}]",
        nix::sys::stat::fstat(socket.as_raw_fd())
            .expect("fstat the listening socket")
            .st_ino
    );
    for _ in 0..2 {
        let (id, pid) = hit(&addr);
        let vars = environ(pid);
        let var = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let id = id.to_string();
        assert_eq!(var("SOCKHERD_WORKER_ID"), Some(id.as_str()));
        assert_eq!(var("NODE_APP_INSTANCE"), Some(id.as_str()));
        assert_eq!(var("SOCKHERD_APP"), Some("shop"));
        assert_eq!(var("SOCKHERD_CHANNEL_FD"), Some("3"));
        assert_eq!(var("SOCKHERD_PROTOCOL"), Some("1"));
        assert_eq!(var("SOCKHERD_TEST_INHERITED"), Some("yes"));
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]
            .into_iter()
            .chain(manager_only.iter().map(|(k, _)| *k))
        {
            assert_eq!(var(name), None, "{name} reached worker {id}");
        }
        assert_eq!(
            process_group(pid),
            pid,
            "worker {id} leads no process group"
        );
        let fds = fds(pid);
        assert!(
            fds.iter()
                .any(|(fd, target)| *fd == 3 && target.starts_with("socket:")),
            "no channel at fd 3: {fds:?}"
        );
        assert!(
            !fds.iter().any(|(_, target)| *target == listening_inode),
            "worker {id} inherited the listening socket: {fds:?}"
        );
    }
}

/// The variables that `docs/protocol.md` says a worker is given: the
/// backticked names in the first column of the table in its "Environment"
/// section (the names elsewhere in that section are those it removes).
fn documented_worker_variables() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md");
    let text = std::fs::read_to_string(&path).expect("read docs/protocol.md");
    let names: BTreeSet<String> = text
        .lines()
        .skip_while(|line| line.trim() != "## Environment")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| line.starts_with('|'))
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains("SOCKHERD_CHANNEL_FD"),
        "no Environment table found in {}: {names:?}",
        path.display()
    );
    names
}

/// Every variable a worker has that its manager was not started with is one
/// that `docs/protocol.md` lists: the manager sets nothing undocumented. It
/// starts from a known, minimal environment, with `--heartbeat-timeout` so
/// that the variables only some workers get are set as well.
#[test]
fn every_variable_a_worker_is_given_is_documented() {
    let manager = Start::new(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "1",
            "--name",
            "documented",
            "--heartbeat-timeout",
            "5s",
        ],
        &hello(),
    )
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .spawn();
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(1);
    let (_, pid) = hit(&addr);
    let started_with: BTreeSet<String> = environ(manager.pid())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        started_with,
        BTreeSet::from(["PATH".to_owned()]),
        "the manager's own environment"
    );
    let added: BTreeMap<String, String> = environ(pid)
        .into_iter()
        .filter(|(name, _)| !started_with.contains(name))
        .collect();
    assert!(
        added.contains_key("SOCKHERD_WORKER_ID"),
        "the worker was given nothing: {added:?}"
    );
    let documented = documented_worker_variables();
    let undocumented: Vec<String> = added
        .iter()
        .filter(|(name, _)| !documented.contains(*name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "the manager gives its workers {} that docs/protocol.md's Environment table does not list \
         (it lists {documented:?})",
        undocumented.join(", ")
    );
}

#[test]
fn app_name_defaults_to_the_program_name() {
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "1"], &hello());
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(1);
    let (_, pid) = hit(&addr);
    assert!(environ(pid).contains(&("SOCKHERD_APP".into(), "hello".into())));
}

#[test]
fn the_python_example_serves() {
    let dir = TempDir::new();
    let path = dir.path().join("py.sock");
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            path.to_str().expect("a UTF-8 path"),
            "-w",
            "2",
        ],
        &python_worker(),
    );
    let addrs = manager.listening(2);
    manager.wait_ready(2);
    let mut ids = Vec::new();
    for addr in addrs.iter().cycle().take(4) {
        let response = get(addr, "/").expect("GET /");
        assert_eq!(response.status, 200);
        assert!(
            response.body.starts_with("hello from python worker "),
            "{response:?}"
        );
        ids.push(response.worker().0);
    }
    assert_eq!(ids, [0, 1, 0, 1]);
    let pids = manager.worker_pids();
    manager.signal(Signal::SIGTERM);
    assert!(manager.wait_exit().success());
    assert!(
        manager.events("worker-kill-timeout").is_empty(),
        "the Python worker did not exit on SHUTDOWN=1"
    );
    assert_eq!(manager.events("worker-exited").len(), 2);
    wait_gone(&pids);
}

/// `tests/fixtures/worker_v1.py`: a worker written for protocol version 1.
fn version_1_worker() -> Vec<OsString> {
    vec![
        "python3".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/worker_v1.py")
            .into(),
    ]
}

/// The sum of `sockherd_worker_connections_open` over the workers.
fn open_connections(metrics: &Addr) -> f64 {
    let body = get(metrics, "/metrics").expect("scrape the metrics").body;
    body.lines()
        .filter(|line| line.starts_with("sockherd_worker_connections_open{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn workers_of_either_protocol_version_serve_many_clients_at_once() {
    // Version 1: one connection per message, each close reported at once.
    // Version 2 (the example): several per message, closes gathered under rr.
    for (version, worker) in [(1, version_1_worker()), (2, python_worker())] {
        let metrics = format!("127.0.0.1:{}", free_port());
        let manager = serve(
            &["--listen", "127.0.0.1:0", "-w", "2", "--metrics", &metrics],
            &worker,
        );
        let addr = manager.listening(1).remove(0);
        manager.wait_ready(2);
        let Addr::Tcp(tcp) = addr else {
            panic!("a TCP socket")
        };
        let load = Load::start(tcp, "/", 16);
        load.wait_for_more(400);
        load.stop()
            .assert_no_failures(&format!("workers of version {version}"));
        // Every close is counted in the end, however it was reported.
        let metrics = Addr::Tcp(metrics.parse::<SocketAddr>().expect("an address"));
        wait_for(&format!("version {version}: every close counted"), || {
            (open_connections(&metrics) == 0.0).then_some(())
        });
    }
}

#[test]
fn while_no_worker_is_ready_the_manager_accepts_one_connection_and_leaves_the_rest_queued() {
    // Accepting in batches must not take in more than it can hand over:
    // what the manager holds is reset when it stops, what is queued in a
    // socket systemd passed waits for the next manager.
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = socket.local_addr().expect("the socket's address");
    let mut manager = serve_activated(
        &[("http", socket.as_raw_fd())],
        &[],
        &["-w", "1", "--kill-timeout", "1s"],
        &rogue(&["never-ready"]),
    );
    manager.wait_events("worker-started", 1);
    let _clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    manager.signal(Signal::SIGTERM);
    assert!(manager.wait_exit().success());
    // Our copy of the socket still has what the manager did not accept.
    socket
        .set_nonblocking(true)
        .expect("make the socket non-blocking");
    let queued = std::iter::from_fn(|| socket.accept().ok()).count();
    assert_eq!(queued, 4, "the manager took in more than the one it held");
}
