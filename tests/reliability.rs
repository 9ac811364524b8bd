//! Hostile input, from outside: workers, files, values and clients that used
//! to take a serving manager down, hang it, grow it without bound or leave
//! processes behind (the reliability issue's list). Each test failed on the
//! manager before its fix; `docs/guarantees.md` links each to its promise.

use std::fs;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::*;

/// A config file for `--config` in a directory of its own.
struct ConfigFile {
    dir: TempDir,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let config = ConfigFile {
            dir: TempDir::new(),
        };
        config.write(text);
        config
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("app.toml")
    }

    /// Replaces the file at once (write beside, rename over).
    fn write(&self, text: &str) {
        let beside = self.dir.path().join("app.toml.new");
        fs::write(&beside, text).expect("write the config file");
        fs::rename(&beside, self.path()).expect("replace the config file");
    }
}

/// `command = [PROGRAM]` for a config file.
fn command_line(program: &[std::ffi::OsString]) -> String {
    let words: Vec<String> = program
        .iter()
        .map(|w| format!("{:?}", w.to_string_lossy()))
        .collect();
    format!("command = [{}]\n", words.join(", "))
}

/// The manager's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the manager runs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn after_a_failed_reload_crashed_workers_come_back_as_what_served() {
    let config = ConfigFile::new(&command_line(&hello()));
    let path = config.path();
    let manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "2",
            "--config",
            path.to_str().expect("UTF-8 path"),
        ],
        &hello(),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    config.write(&command_line(&rogue(&["crash-at-start"])));
    manager.signal(Signal::SIGHUP);
    manager.wait_log("the reload to fail", |log| {
        log.contains("event=\"reload-finished\"") && log.contains("ok=false")
    });
    // Ordinary crashes of the workers that served, one after the other.
    for pid in manager.worker_pids() {
        if alive(pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    manager.wait_events("worker-ready", 2 + 2);
    for _ in 0..4 {
        get_ok(&addr, "/").expect("hello answers: the replacements run what served");
    }
    assert!(!manager.has_line("gave up"), "{}", manager.log_text());
}

#[test]
fn a_worker_flooding_its_channel_does_not_grow_the_manager() {
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "2"], &rogue(&["flood"]));
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    manager.wait_events("worker-flooding", 1);
    let before = rss_kib(manager.pid());
    // Five seconds of flood; the manager used to grow by gigabytes in that time.
    for _ in 0..50 {
        get_ok(&addr, "/").expect("the flooding workers still serve");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = rss_kib(manager.pid());
    assert!(
        after < before + 16 * 1024,
        "the manager grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_worker_that_shuts_its_channel_is_replaced() {
    let dir = TempDir::new();
    let manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "2"],
        &rogue(&["half-close", dir.path().to_str().expect("UTF-8 path")]),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(2);
    let closed: u32 = wait_for("the worker to shut its channel", || {
        fs::read_to_string(dir.path().join("half-closed"))
            .ok()?
            .parse()
            .ok()
    });
    // Every request is answered, by the other worker while this one goes.
    for _ in 0..6 {
        get_ok(&addr, "/").expect("answered");
    }
    manager.wait_events("worker-channel-closed", 1);
    wait_gone(&[closed]);
    manager.wait_events("worker-ready", 3);
    get_ok(&addr, "/").expect("answered");
}

#[test]
fn a_worker_that_keeps_saying_stopping_gives_up() {
    let mut manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "1", "--max-restarts", "3"],
        &rogue(&["stop-storm"]),
    );
    let status = manager.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", manager.log_text());
    let starts = manager.events("worker-started").len();
    assert!(starts <= 5, "{starts} starts before giving up");
    assert!(manager.has_line("gave up"), "{}", manager.log_text());
}

#[test]
fn a_worker_out_of_its_process_group_is_still_killed_at_its_timeouts() {
    let mut never_ready = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "1",
            "--ready-timeout",
            "1s",
        ],
        &rogue(&["leave-group", "never-ready"]),
    );
    let first = never_ready.wait_events("worker-started", 1)[0]
        .pid
        .expect("a pid");
    never_ready.wait_events("worker-ready-timeout", 1);
    wait_gone(&[first]);
    never_ready.wait_events("worker-started", 2);
    assert!(never_ready.stop().success(), "{}", never_ready.log_text());

    let mut stubborn = serve(
        &["--listen", "127.0.0.1:0", "-w", "1", "--kill-timeout", "1s"],
        &rogue(&["leave-group", "ignore-shutdown"]),
    );
    stubborn.wait_ready(1);
    let pids = stubborn.worker_pids();
    assert!(stubborn.stop().success(), "{}", stubborn.log_text());
    assert!(
        !stubborn.has_line("could not be reaped"),
        "{}",
        stubborn.log_text()
    );
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its manager");
    }
}

#[test]
fn what_a_worker_starts_in_a_session_of_its_own_goes_with_it() {
    let dir = TempDir::new();
    let file = dir.path().join("escaped");
    let mut manager = serve(
        &["--listen", "127.0.0.1:0", "-w", "1"],
        &rogue(&["escape", file.to_str().expect("UTF-8 path")]),
    );
    manager.wait_ready(1);
    let escaped: u32 = wait_for("the worker to start its escapee", || {
        fs::read_to_string(&file).ok()?.trim().parse().ok()
    });
    assert!(alive(escaped));
    assert!(manager.stop().success(), "{}", manager.log_text());
    wait_gone(&[escaped]);
}

#[test]
fn a_worker_program_that_gains_privileges_is_warned_about() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: needs root, to make a setuid program and run the manager as another user"
        );
        return;
    }
    let dir = TempDir::new();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let setuid = dir.path().join("rogue");
    fs::copy(&rogue(&[])[0], &setuid).expect("copy rogue");
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).expect("chmod u+s");
    let mut manager = Start::new(
        &["--listen", "127.0.0.1:0", "-w", "1"],
        &[setuid.into(), "serve".into()],
    )
    .under(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ])
    .spawn();
    manager.wait_events("worker-privileged", 1);
    assert!(
        manager.has_line("parent-death signal"),
        "{}",
        manager.log_text()
    );
    manager.stop();
}

#[test]
fn huge_durations_are_refused_not_overflowed() {
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--ready-timeout",
            "10000000000000000000",
        ],
        &hello(),
    );
    assert_eq!(manager.wait_exit().code(), Some(2));
    let log = manager.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("at most 7d"), "{log:?}");
}

#[test]
fn a_reload_with_a_huge_duration_fails_and_changes_nothing() {
    let config = ConfigFile::new("kill-timeout = \"5s\"\n");
    let path = config.path();
    let manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "-w",
            "1",
            "--config",
            path.to_str().expect("UTF-8 path"),
        ],
        &hello(),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(1);
    let pids = manager.worker_pids();
    config.write("kill-timeout = \"10000000000000000000\"\n");
    manager.signal(Signal::SIGHUP);
    manager.wait_log("the reload to be refused", |log| {
        log.contains("reload refused") && log.contains("at most 7d")
    });
    get_ok(&addr, "/").expect("still serving");
    assert_eq!(manager.worker_pids(), pids, "no worker was replaced");
}

#[test]
fn a_config_file_that_is_no_regular_file_is_refused_at_start_and_on_reload() {
    let dir = TempDir::new();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    for bad in [fifo.to_str().expect("UTF-8 path"), "/dev/zero"] {
        let mut manager = serve(&["--listen", "127.0.0.1:0", "--config", bad], &hello());
        assert_eq!(manager.wait_exit().code(), Some(2), "{bad}");
        assert!(
            manager.has_line("not a regular file"),
            "{}",
            manager.log_text()
        );
    }
    // On reload: the file replaced by a FIFO nobody writes to.
    let config = ConfigFile::new("workers = 1\n");
    let path = config.path();
    let mut manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().expect("UTF-8 path"),
        ],
        &hello(),
    );
    let addr = manager.listening(1).remove(0);
    manager.wait_ready(1);
    fs::remove_file(&path).expect("remove the config file");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    manager.signal(Signal::SIGHUP);
    manager.wait_log("the reload to be refused", |log| {
        log.contains("reload refused") && log.contains("not a regular file")
    });
    get_ok(&addr, "/").expect("still serving");
    assert!(manager.stop().success(), "{}", manager.log_text());
}

#[test]
fn a_live_socket_of_another_type_is_not_deleted() {
    let dir = TempDir::new();
    let path = dir.path().join("app.sock");
    let _live = UnixDatagram::bind(&path).expect("bind a datagram socket");
    let mut manager = serve(&["--listen", path.to_str().expect("UTF-8 path")], &hello());
    assert_eq!(manager.wait_exit().code(), Some(2));
    assert!(manager.has_line("in use"), "{}", manager.log_text());
    assert!(path.exists(), "the other program's socket is still there");
}

#[test]
fn idle_metrics_clients_cannot_take_the_managers_descriptors() {
    let manager = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "-w",
            "1",
        ],
        &hello(),
    );
    let app = manager.listening(1).remove(0);
    manager.wait_ready(1);
    let metrics: std::net::SocketAddr = wait_for("the metrics address", || {
        manager.log().iter().find_map(|line| {
            let rest = line.split("metrics on http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        })
    });
    let fds_before = fds(manager.pid()).len();
    // Clients that connect and say nothing: the kernel queues them, but the
    // manager takes only a few at a time.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(metrics).expect("connect to metrics"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let fds_during = fds(manager.pid()).len();
    assert!(
        fds_during <= fds_before + 10,
        "the manager holds {} more descriptors",
        fds_during - fds_before
    );
    for _ in 0..10 {
        get_ok(&app, "/").expect("the app's port serves");
    }
    drop(idle);
}

#[test]
fn the_notify_directory_of_a_killed_manager_is_removed_by_the_next() {
    let base = TempDir::new();
    let start = || {
        Start::new(
            &["--listen", "127.0.0.1:0", "-w", "1", "--policy", "none"],
            &[
                "python3".into(),
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/notify_server.py")
                    .into(),
            ],
        )
        .env("XDG_RUNTIME_DIR", base.path())
        .spawn()
    };
    let first = start();
    first.wait_ready(1);
    let notify_dirs = || -> Vec<String> {
        fs::read_dir(base.path())
            .expect("the runtime directory")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("sockherd"))
            .collect()
    };
    let left = notify_dirs();
    assert_eq!(left.len(), 1, "{left:?}");
    drop(first);
    assert_eq!(notify_dirs(), left, "a SIGKILLed manager leaves it behind");
    let second = start();
    second.wait_ready(1);
    let now = notify_dirs();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, left, "the dead manager's directory is gone");
}

#[test]
fn a_worker_inherits_no_descriptor_the_launcher_left_open() {
    // A file this process holds open without close-on-exec, as a careless
    // launcher might: the manager inherits it.
    let dir = TempDir::new();
    let marker = dir.path().join("stray");
    let file = fs::File::create(&marker).expect("create the stray file");
    // High enough not to be overwritten by what a worker is given at 0-3.
    let stray = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(40))
        .expect("duplicate it without close-on-exec");
    drop(file);
    let manager = serve(&["--listen", "127.0.0.1:0", "-w", "1"], &hello());
    manager.wait_ready(1);
    assert!(
        fds(manager.pid())
            .iter()
            .any(|(_, what)| what.ends_with("stray")),
        "the manager inherited the stray file, as it would from such a launcher"
    );
    let worker = manager.worker_pids()[0];
    let reached: Vec<_> = fds(worker)
        .into_iter()
        .filter(|(_, what)| what.ends_with("stray"))
        .collect();
    assert!(
        reached.is_empty(),
        "the stray file reached the worker: {reached:?}"
    );
    let _ = nix::unistd::close(stray);
}
