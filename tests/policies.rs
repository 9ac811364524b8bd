//! Dispatch policies, observed through real workers: least-conn steers new
//! connections away from a worker holding slow requests, ip-hash keeps a client
//! address on one worker and moves only a departed worker's clients, `none`
//! runs an unmodified socket-activated server that accepts by itself (and a UDP
//! one that receives by itself), and the
//! metrics socket (never dispatched) serves Prometheus text whose counters move.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The TCP address of a manager's first socket.
fn tcp(addr: &Addr) -> SocketAddr {
    match addr {
        Addr::Tcp(addr) => *addr,
        Addr::Unix(path) => panic!("expected a TCP socket, got {}", path.display()),
    }
}

/// `worker` wrapped so that worker `id` reports ready only once `gate` exists
/// (the shell waits, then execs the worker in its own place).
fn gated(id: u32, gate: &Path, worker: &[OsString]) -> Vec<OsString> {
    let script = format!(
        "if [ \"$SOCKHERD_WORKER_ID\" = {id} ]; then \
         while [ ! -e \"$0\" ]; do sleep 0.02; done; fi; exec \"$@\""
    );
    let mut command: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), script.into()];
    command.push(gate.as_os_str().to_owned());
    command.extend(worker.iter().cloned());
    command
}

/// Waits for a ready event of worker `id` and returns its pid.
fn ready_pid(manager: &Manager, id: u32) -> u32 {
    wait_for(&format!("worker {id} to be ready"), || {
        manager
            .events("worker-ready")
            .iter()
            .rev()
            .find(|e| e.id == Some(id))
            .and_then(|e| e.pid)
    })
}

#[test]
fn least_conn_sends_new_connections_away_from_a_busy_worker() {
    let dir = TempDir::new();
    let gate = dir.path().join("worker-1-may-start");
    let manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "2",
            "--policy",
            "least-conn",
        ],
        &gated(1, &gate, &hello()),
    );
    let addr = manager.listening(1).remove(0);
    ready_pid(&manager, 0);

    // Worker 0 is the only one ready: it takes four slow requests, slow enough
    // to outlast the quick ones below on a loaded machine.
    let slow: Vec<Pending> = (0..4)
        .map(|_| send(&addr, "/slow?ms=12000").expect("send a slow request"))
        .collect();
    for pending in &slow {
        let client = pending.local.expect("a TCP client");
        wait_for("worker 0 to read a slow request", || {
            request_taken(tcp(&addr), client).then_some(())
        });
    }
    std::fs::write(&gate, b"").expect("open the gate");
    ready_pid(&manager, 1);

    // Worker 1 closes each quick connection and says so; worker 0 still holds
    // four. Counting only hand-offs, they would tie after four.
    let quick: Vec<u32> = (0..20).map(|_| hit(&addr).0).collect();
    let on_1 = quick.iter().filter(|id| **id == 1).count();
    assert!(
        on_1 >= 18,
        "least-conn sent {} of 20 quick requests to the busy worker: {quick:?}",
        20 - on_1
    );

    // Once the slow requests are answered both are idle again: ties go
    // round-robin, so both serve.
    for pending in slow {
        let response = pending.response().expect("the slow answer");
        assert_eq!(response.worker().0, 0, "{response:?}");
    }
    let after: BTreeSet<u32> = (0..10).map(|_| hit(&addr).0).collect();
    assert_eq!(
        after,
        BTreeSet::from([0, 1]),
        "worker 0's closes were not counted"
    );
}

/// `workers` hello workers on a loopback port, their policy read from
/// `app.toml` in `dir`, which says `policy` for now; ready. Returns the
/// manager, its address and the file, which [`write_policy`] changes for a
/// reload.
fn serve_configured(dir: &TempDir, policy: &str, workers: u32) -> (Manager, Addr, PathBuf) {
    let config = dir.path().join("app.toml");
    write_policy(&config, policy);
    let manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            &workers.to_string(),
            "--config",
            config.to_str().expect("a UTF-8 path"),
        ],
        &hello(),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(workers);
    (manager, addr, config)
}

/// Makes the config file say `policy`, for the next reload.
fn write_policy(config: &Path, policy: &str) {
    std::fs::write(config, format!("policy = \"{policy}\"\n")).expect("write the config file");
}

#[test]
fn after_a_reload_into_least_conn_the_workers_report_each_close_at_once() {
    // Under rr the workers gather their closes for up to a second; least-conn
    // needs them at once, or a worker that just served a connection still
    // counts it and ties with one holding a slow request.
    let dir = TempDir::new();
    let (manager, addr, config) = serve_configured(&dir, "rr", 2);
    write_policy(&config, "least-conn");
    manager.signal(Signal::SIGHUP);
    let reloads = manager.wait_events("reload-finished", 1);
    assert!(reloads[0].line.contains("ok=true"), "{reloads:?}");

    // One worker holds a slow request; the quick ones go to the other.
    let slow = send(&addr, "/slow?ms=5000").expect("send a slow request");
    let client = slow.local.expect("a TCP client");
    wait_for("a worker to read the slow request", || {
        request_taken(tcp(&addr), client).then_some(())
    });
    let quick: Vec<u32> = (0..20).map(|_| hit(&addr).0).collect();
    let mut by_worker = BTreeMap::new();
    for id in &quick {
        *by_worker.entry(*id).or_insert(0) += 1;
    }
    let most = by_worker.values().copied().max().unwrap_or(0);
    assert!(
        most >= 18,
        "least-conn spread quick requests over the busy worker too: {quick:?}"
    );
}

/// Which worker (id, pid) serves each of `clients`, asking `times` times;
/// fails unless every client got one worker every time.
fn sticky_map(
    addr: SocketAddr,
    clients: &[Ipv4Addr],
    times: usize,
) -> BTreeMap<Ipv4Addr, (u32, u32)> {
    clients
        .iter()
        .map(|client| {
            let seen: BTreeSet<(u32, u32)> = (0..times)
                .map(|_| {
                    let response = send_from(addr, *client, "/")
                        .and_then(Pending::response)
                        .unwrap_or_else(|e| panic!("GET / from {client}: {e}"));
                    response.worker()
                })
                .collect();
            assert_eq!(seen.len(), 1, "client {client} was served by {seen:?}");
            (*client, seen.into_iter().next().expect("one worker"))
        })
        .collect()
}

fn clients(count: u8) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|n| Ipv4Addr::new(127, 0, 0, 2 + n))
        .collect()
}

#[test]
fn ip_hash_keeps_each_client_on_one_worker() {
    let manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "3", "--policy", "ip-hash"],
        &hello(),
    );
    let addr = tcp(&manager.listening(1).remove(0));
    manager.wait_ready(3);

    // One client, a hundred connections, one worker.
    sticky_map(addr, &[Ipv4Addr::new(127, 0, 0, 2)], 100);
    // Different clients spread over the workers.
    let map = sticky_map(addr, &clients(12), 5);
    let workers: BTreeSet<u32> = map.values().map(|(id, _)| *id).collect();
    assert_eq!(workers, BTreeSet::from([0, 1, 2]), "{map:?}");
}

#[test]
fn ip_hash_moves_only_the_clients_of_a_worker_that_left() {
    // With no restarts allowed, the killed worker's slot stays empty.
    let manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "3",
            "--policy",
            "ip-hash",
            "--max-restarts",
            "0",
        ],
        &hello(),
    );
    let addr = tcp(&manager.listening(1).remove(0));
    manager.wait_ready(3);
    let clients = clients(16);
    let before = sticky_map(addr, &clients, 3);
    let victim = before.values().find(|(id, _)| *id == 1).copied();
    let (_, victim_pid) = victim.expect("worker 1 has clients");

    kill(Pid::from_raw(victim_pid as i32), Signal::SIGKILL).expect("kill worker 1");
    manager.wait_events("worker-gave-up", 1);

    let after = sticky_map(addr, &clients, 3);
    for client in &clients {
        let (was, now) = (before[client], after[client]);
        if was.0 == 1 {
            assert_ne!(now.0, 1, "client {client} still on the dead worker");
        } else {
            assert_eq!(was, now, "client {client} moved though its worker stayed");
        }
    }
}

/// The Python server of `tests/fixtures/notify_server.py`, waiting for `gate`.
fn notify_server(gate: &Path) -> Vec<OsString> {
    vec![
        "python3".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/notify_server.py")
            .into(),
        gate.as_os_str().to_owned(),
    ]
}

/// The pid in a body like `hello from pid 4242 on web`.
fn served_by(response: &Response) -> (u32, String) {
    let rest = response
        .body
        .strip_prefix("hello from pid ")
        .unwrap_or_else(|| panic!("unexpected answer {response:?}"));
    let (pid, socket) = rest.trim_end().split_once(" on ").expect("pid and socket");
    (pid.parse().expect("a pid"), socket.to_owned())
}

#[test]
fn none_runs_an_unmodified_socket_activated_server() {
    let dir = TempDir::new();
    let gate = dir.path().join("ready");
    let web = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    // As a dispatching manager before us would have left it: blocking
    // workers must not see that.
    web.set_nonblocking(true)
        .expect("make the socket non-blocking");
    let metrics = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = Addr::Tcp(web.local_addr().expect("the socket\'s address"));
    let mut manager = serve_activated(
        &[("web", web.as_raw_fd()), ("metrics", metrics.as_raw_fd())],
        &[],
        &["-w", "3", "--policy", "none", "--kill-timeout", "10s"],
        &notify_server(&gate),
    );
    let inode = |fd: i32| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .expect("a socket of ours")
            .to_string_lossy()
            .into_owned()
    };
    let (web_inode, metrics_inode) = (inode(web.as_raw_fd()), inode(metrics.as_raw_fd()));
    let started = manager.wait_events("worker-started", 3);
    let pids: Vec<u32> = started.iter().filter_map(|e| e.pid).collect();

    // Each worker is told about the sockets as systemd would tell a service,
    // with LISTEN_PID naming the worker itself; the metrics socket stays ours.
    let mut notify_sockets = Vec::new();
    for pid in &pids {
        let env: BTreeMap<String, String> = wait_for("the server to be exec'd", || {
            let env: BTreeMap<_, _> = environ(*pid).into_iter().collect();
            env.contains_key("LISTEN_PID").then_some(env)
        });
        assert_eq!(env["LISTEN_PID"], pid.to_string());
        assert_eq!(env["LISTEN_FDS"], "1");
        assert_eq!(env["LISTEN_FDNAMES"], "web");
        assert!(!env.contains_key("SOCKHERD_CHANNEL_FD"));
        let notify = PathBuf::from(&env["NOTIFY_SOCKET"]);
        assert!(notify.exists(), "{} is missing", notify.display());
        notify_sockets.push(notify);
        let held: BTreeMap<i32, String> = fds(*pid).into_iter().collect();
        assert_eq!(held.get(&3), Some(&web_inode), "fd 3 of worker {pid}");
        assert!(
            !held.values().any(|target| *target == metrics_inode),
            "worker {pid} inherited the metrics socket"
        );
    }

    // A client that comes before anyone is ready waits in the backlog, and
    // nobody is ready before it says READY=1.
    let early = send(&addr, "/").expect("connect before READY=1");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        manager.events("worker-ready").is_empty(),
        "ready before READY=1"
    );
    std::fs::write(&gate, b"").expect("open the gate");
    manager.wait_ready(3);
    let (pid, socket) = served_by(&early.response().expect("the early answer"));
    assert!(pids.contains(&pid));
    assert_eq!(socket, "web");

    // The workers accept by themselves, taking turns.
    let mut served = BTreeSet::new();
    for _ in 0..30 {
        let (pid, _) = served_by(&get(&addr, "/").expect("GET /"));
        assert!(pids.contains(&pid), "answered by {pid}, not a worker");
        served.insert(pid);
    }
    assert!(served.len() >= 2, "only {served:?} answered");
    // The metrics socket is the manager's.
    let scrape = get(
        &Addr::Tcp(metrics.local_addr().expect("the socket\'s address")),
        "/metrics",
    )
    .expect("scrape the metrics socket");
    assert!(scrape.body.contains("policy=\"none\""), "{scrape:?}");

    // SIGTERM to the manager: one SIGTERM to each worker, which exits 0 in time.
    manager.signal(Signal::SIGTERM);
    assert!(manager.wait_exit().success());
    let exited = manager.events("worker-exited");
    assert_eq!(exited.len(), 3);
    assert!(
        exited.iter().all(|e| e.line.contains("exit_code=0")),
        "{exited:?}"
    );
    let log = manager.log_text();
    assert_eq!(log.matches("stopping after 1 SIGTERM").count(), 3, "{log}");
    assert!(manager.events("worker-kill-timeout").is_empty());
    for notify in notify_sockets {
        let dir = notify.parent().expect("a directory");
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

#[test]
fn none_refuses_node_ipc_workers() {
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--policy",
            "none",
            "--protocol",
            "node-ipc",
        ],
        &["/bin/true".into()],
    );
    assert_eq!(manager.wait_exit().code(), Some(2));
    assert!(manager.has_line("node-ipc workers take their connections from the manager"));
}

/// One scrape of `addr`, parsed by a real Prometheus text parser.
fn scrape(addr: &Addr) -> prometheus_parse::Scrape {
    let response = get(addr, "/metrics").expect("scrape");
    assert_eq!(response.status, 200);
    let lines = response.body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            Value::Summary(_) => None,
        })
}

/// Per-worker values of `name`, by worker id.
fn per_worker(scrape: &prometheus_parse::Scrape, name: &str) -> BTreeMap<String, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => return None,
            };
            Some((s.labels.get("worker")?.to_owned(), value))
        })
        .collect()
}

#[test]
fn metrics_parse_and_count_open_connections() {
    let http = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let metrics_socket = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let manager = serve_activated(
        &[
            ("http", http.as_raw_fd()),
            ("metrics", metrics_socket.as_raw_fd()),
        ],
        &[],
        &["-w", "2", "--policy", "least-conn"],
        &hello(),
    );
    let addr = Addr::Tcp(http.local_addr().expect("the socket\'s address"));
    let metrics = Addr::Tcp(metrics_socket.local_addr().expect("the socket\'s address"));
    manager.wait_ready(2);

    let first = scrape(&metrics);
    assert_eq!(sample(&first, "sockherd_connections_total", &[]), Some(0.0));
    assert_eq!(
        sample(&first, "sockherd_policy_info", &[("policy", "least-conn")]),
        Some(1.0)
    );
    for _ in 0..10 {
        hit(&addr);
    }
    // A slow request held open shows as one open connection.
    let held = send(&addr, "/slow?ms=3000").expect("send a slow request");
    let client = held.local.expect("a TCP client");
    wait_for("a worker to read the slow request", || {
        request_taken(tcp(&addr), client).then_some(())
    });
    let during = wait_for("the quick connections' closes to be counted", || {
        let s = scrape(&metrics);
        let open: f64 = per_worker(&s, "sockherd_worker_connections_open")
            .values()
            .sum();
        (open == 1.0).then_some(s)
    });
    assert_eq!(
        sample(&during, "sockherd_connections_total", &[]),
        Some(11.0)
    );
    let handed: f64 = per_worker(&during, "sockherd_worker_connections_total")
        .values()
        .sum();
    assert_eq!(handed, 11.0);
    assert_eq!(
        sample(&during, "sockherd_dispatch_latency_seconds", &[]),
        Some(11.0),
        "the histogram counts every hand-over"
    );
    assert_eq!(
        per_worker(&during, "sockherd_worker_connections_open").len(),
        2
    );

    held.response().expect("the slow answer");
    wait_for("the slow connection's close to be counted", || {
        let open: f64 = per_worker(&scrape(&metrics), "sockherd_worker_connections_open")
            .values()
            .sum();
        (open == 0.0).then_some(())
    });
}

#[test]
fn a_socket_named_metrics_is_never_dispatched() {
    let http = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let metrics = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let manager = serve_activated(
        &[("http", http.as_raw_fd()), ("metrics", metrics.as_raw_fd())],
        &[],
        &["-w", "2"],
        &rogue(&["serve"]),
    );
    manager.wait_ready(2);
    let http = Addr::Tcp(http.local_addr().expect("the socket\'s address"));
    let metrics = Addr::Tcp(metrics.local_addr().expect("the socket\'s address"));
    for _ in 0..5 {
        let answer = get(&metrics, "/metrics").expect("scrape");
        assert!(answer.body.starts_with("# HELP sockherd_"), "{answer:?}");
        let answer = get(&http, "/").expect("GET /");
        assert!(answer.body.ends_with(" on http\n"), "{answer:?}");
    }
    let counted = scrape(&metrics);
    assert_eq!(
        sample(&counted, "sockherd_connections_total", &[]),
        Some(5.0)
    );
    for pid in manager.worker_pids() {
        let env: BTreeMap<String, String> = environ(pid).into_iter().collect();
        assert!(
            !env.contains_key("LISTEN_FDS"),
            "worker {pid} was passed sockets"
        );
    }
}

#[test]
fn a_reload_changes_the_policy_but_not_into_or_out_of_none() {
    let dir = TempDir::new();
    let (manager, addr, config) = serve_configured(&dir, "rr", 3);
    let spread: BTreeSet<u32> = (0..3).map(|_| hit(&addr).0).collect();
    assert_eq!(spread.len(), 3, "round-robin first");

    write_policy(&config, "ip-hash");
    manager.signal(Signal::SIGHUP);
    let reloads = manager.wait_events("reload-finished", 1);
    assert!(reloads[0].line.contains("ok=true"), "{reloads:?}");
    assert_eq!(manager.events("policy-changed").len(), 1);
    let sticky: BTreeSet<(u32, u32)> = (0..9).map(|_| hit(&addr)).collect();
    assert_eq!(sticky.len(), 1, "one client, one worker: {sticky:?}");

    write_policy(&config, "none");
    manager.signal(Signal::SIGHUP);
    let reloads = manager.wait_events("reload-finished", 2);
    assert!(reloads[1].line.contains("ok=false"), "{reloads:?}");
    assert!(manager.has_line("needs a restart"));
    // Still dispatching, still sticky.
    assert_eq!(
        hit(&addr),
        sticky.into_iter().next().expect("a worker for the client")
    );
}

#[test]
fn none_shares_a_udp_socket_with_a_socket_activated_udp_server() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let port = socket.local_addr().expect("its address").port();
    let server: Vec<OsString> = vec![
        "python3".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/udp_notify_server.py")
            .into(),
    ];
    let mut manager = serve_activated(
        &[("dns", socket.as_raw_fd())],
        &[],
        &["-w", "2", "--policy", "none"],
        &server,
    );
    manager.wait_ready(2);
    drop(socket);
    assert!(
        manager.has_line(&format!("listening on udp:127.0.0.1:{port} (dns)")),
        "{}",
        manager.log_text()
    );
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("a read timeout");
    let answer = retry("an echo", || {
        client.send_to(b"ping", ("127.0.0.1", port))?;
        let mut answer = [0u8; 256];
        let (len, _) = client.recv_from(&mut answer)?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer[..len]).into_owned())
    });
    let pid: u32 = answer
        .strip_prefix("echo pid=")
        .and_then(|rest| rest.split_once(' '))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
    assert!(manager.worker_pids().contains(&pid));
    assert!(manager.stop().success());
}
