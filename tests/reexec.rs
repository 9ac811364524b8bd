//! In-place re-exec: the manager replaces its own code and keeps its PID,
//! its workers, its sockets and its counters (`docs/upgrade.md`).
//!
//! Real managers on a private `dbus-daemon` (as in `dbus.rs`), real
//! workers, real load. "Another build" is a copy of the manager binary with
//! another build label stamped into it — the block a build's
//! `SOCKHERD_BUILD` fills (`src/reexec/version.rs`) — so its `Version`
//! differs while its code is the same.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::common::load::Load;
use crate::common::*;
use crate::dbus::{gated_worker, App, Setup};

/// What precedes the build label in the binary.
const MARK: &[u8] = b"sockherd-build\0:";

/// How long a label may be.
const LABEL_MAX: usize = 48;

/// Writes the manager binary to `path`, with build label `label` (none:
/// as built), the way a package upgrade replaces it: a new file renamed
/// over the old one.
fn install(path: &Path, label: Option<&str>) {
    let mut bytes = std::fs::read(sockherd()).expect("read the manager binary");
    if let Some(label) = label {
        let at = bytes
            .windows(MARK.len())
            .position(|w| w == MARK)
            .expect("the binary has a build label block");
        let block = &mut bytes[at + MARK.len()..at + MARK.len() + LABEL_MAX];
        block.fill(0);
        block[..label.len()].copy_from_slice(label.as_bytes());
    }
    let staged = path.with_extension("new");
    std::fs::write(&staged, bytes).expect("write the binary");
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&staged, path).expect("rename it into place");
}

/// A copy of the manager binary in `dir`, to be replaced under a running manager.
fn binary_in(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("sockherd");
    install(&path, None);
    path
}

/// (id, pid) of every worker, by id.
fn workers(app: &App) -> Vec<(u32, u32)> {
    let mut workers: Vec<(u32, u32)> = app.workers().iter().map(|w| (w.id, w.pid)).collect();
    workers.sort();
    workers
}

fn version(app: &App) -> String {
    app.property("Version")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the manager is back on the bus after its `n`th re-exec.
fn wait_reexecs(app: &App, n: usize) {
    app.wait_events("reexec-done", n);
    wait_for("the manager back on the bus", || {
        app.try_property("ReadyWorkers").map(drop)
    });
}

#[test]
fn twenty_reexecs_under_load_keep_every_worker_and_drop_nothing() {
    let daemon = Daemon::start();
    let metrics_port = free_port();
    let mut setup = Setup::new("reexec-load", 4);
    setup.options = vec!["--metrics".into(), format!("127.0.0.1:{metrics_port}")];
    let app = setup.start(&daemon);
    let metrics = Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    let total = || -> u64 {
        let scrape = get_ok(&metrics, "/metrics").expect("a scrape");
        scrape
            .lines()
            .find(|l| l.starts_with("sockherd_connections_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connection total in {scrape}"))
    };
    let before = workers(&app);
    let per_worker_before: Vec<u64> = app.workers().iter().map(|w| w.connections).collect();
    let manager_pid = app.pid();
    let addr: SocketAddr = ([127, 0, 0, 1], app.port).into();
    let load = Load::start(addr, "/", 8);
    load.wait_for_more(200);
    let connections_before = app.property("Connections").as_u64().unwrap_or(0);
    let scraped_before = total();
    for n in 1..=20 {
        app.signal(Signal::SIGUSR2);
        wait_reexecs(&app, n);
        load.wait_for_more(20);
    }
    let tally = load.stop();
    tally.assert_no_failures("20 re-execs under load");
    assert_eq!(app.pid(), manager_pid);
    assert!(alive(manager_pid), "the same manager process");
    assert_eq!(workers(&app), before, "every worker the same process");
    let connections = app.property("Connections").as_u64().unwrap_or(0);
    assert!(
        connections >= tally.ok && connections > connections_before,
        "the total went on: {connections_before} before, {connections} after {} requests",
        tally.ok
    );
    assert!(
        total() >= connections,
        "the metrics socket crossed, its total going on from {scraped_before}"
    );
    let mut per_worker: Vec<_> = app.workers();
    per_worker.sort_by_key(|w| w.id);
    for (worker, earlier) in per_worker.iter().zip(&per_worker_before) {
        assert!(
            worker.connections > *earlier,
            "worker {} counts on",
            worker.id
        );
    }
    let done = app.events("reexec-done");
    assert!(
        done.iter().all(|e| e.line.contains("4 workers kept")),
        "{}",
        done[0].line
    );

    // The new image does what the old one did.
    let out = app.cli(&["reload", "reexec-load"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_reload = workers(&app);
    assert!(
        after_reload.iter().all(|w| !before.contains(w)),
        "a reload after the re-execs replaced every worker"
    );
    let out = app.cli(&["scale", "reexec-load", "+1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reexec-load: 5 workers\n"
    );
    assert_eq!(app.property("ReadyWorkers"), 5);
    assert!(app.curl("/").is_some());
}

#[test]
fn an_upgraded_binary_takes_over_the_same_workers() {
    let daemon = Daemon::start();
    let dir = TempDir::new();
    let binary = binary_in(&dir);
    let mut setup = Setup::new("reexec-upgrade", 2);
    setup.binary = Some(binary.clone());
    let app = setup.start(&daemon);
    let before = workers(&app);
    let old = version(&app);
    assert_eq!(old, env!("CARGO_PKG_VERSION"));
    let started = app.property("ImageStartedUsec").as_u64().unwrap_or(0);
    assert!(started > 0);

    install(&binary, Some("test-2"));
    let out = app.cli(&["upgrade", "reexec-upgrade"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let new = format!("{} (test-2)", env!("CARGO_PKG_VERSION"));
    assert!(
        said.starts_with(&format!("reexec-upgrade: {old} → {new} in ")),
        "{said}"
    );
    assert_eq!(version(&app), new);
    assert!(app.property("ImageStartedUsec").as_u64().unwrap_or(0) > started);
    assert_eq!(workers(&app), before);
    let status = app.cli(&["status", "reexec-upgrade"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("manager: {new}, image started")),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let done = app.wait_events("reexec-done", 1);
    assert!(
        done[0]
            .line
            .contains(&format!("re-executed: {old} → {new} in ")),
        "{}",
        done[0].line
    );

    // SIGUSR2 does the same, and `--version` tells the builds apart.
    install(&binary, Some("test-3"));
    let version_of = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .expect("sockherd --version");
    assert_eq!(
        String::from_utf8_lossy(&version_of.stdout),
        format!("sockherd {} (test-3)\n", env!("CARGO_PKG_VERSION"))
    );
    app.signal(Signal::SIGUSR2);
    wait_reexecs(&app, 2);
    assert_eq!(
        version(&app),
        format!("{} (test-3)", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(workers(&app), before);
}

#[test]
fn a_binary_that_cannot_take_over_is_refused_and_the_old_code_serves_on() {
    let daemon = Daemon::start();
    let dir = TempDir::new();
    let binary = binary_in(&dir);
    let mut setup = Setup::new("reexec-refused", 2);
    setup.binary = Some(binary.clone());
    let app = setup.start(&daemon);
    let before = workers(&app);
    let old = version(&app);
    let upgrade = || {
        let out = app.cli(&["upgrade", "reexec-refused"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A binary that does not read this state version.
    std::fs::write(
        binary.with_extension("new"),
        "#!/bin/sh\necho \"sockherd 9.9.9: cannot take over state version $2\" >&2\nexit 1\n",
    )
    .expect("write");
    std::fs::set_permissions(
        binary.with_extension("new"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::rename(binary.with_extension("new"), &binary).expect("rename");
    let said = upgrade();
    assert!(
        said.starts_with("sockherd: reexec-refused: ")
            && said
                .contains("refused to take over: sockherd 9.9.9: cannot take over state version 1"),
        "{said}"
    );

    // A file that cannot run at all.
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let said = upgrade();
    assert!(
        said.contains("cannot run") && said.contains("ermission denied"),
        "{said}"
    );

    // Not everyone may ask: it is privileged like Scale.
    install(&binary, None);
    let denied = app.send(true, "Reexec", &[]).expect_err("nobody may not");
    assert!(
        denied.contains("io.sockherd.Error.AccessDenied"),
        "{denied}"
    );
    let failed = app.events("reexec-failed");
    assert_eq!(failed.len(), 2, "one warning each");
    assert!(
        failed[0].line.contains(&format!("still serving on {old}")),
        "{}",
        failed[0].line
    );
    assert_eq!(version(&app), old);
    assert_eq!(workers(&app), before);
    assert!(app.curl("/").is_some(), "still serving");
    assert!(app.events("reexec-done").is_empty());
}

#[test]
fn a_reexec_during_a_reload_is_busy() {
    let daemon = Daemon::start();
    let dir = TempDir::new();
    let (broken, hold) = (dir.path().join("broken"), dir.path().join("hold"));
    let mut setup = Setup::new("reexec-busy", 2);
    setup.command = gated_worker(&broken, &hold);
    let app = setup.start(&daemon);
    let before = workers(&app);
    std::fs::write(&hold, "").expect("hold the next workers");
    let mut reload = std::process::Command::new(sockherd())
        .args(["reload", "reexec-busy", "--address", &daemon.address])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sockherd reload");
    wait_for("the reload under way", || {
        (app.property("State") == "reloading").then_some(())
    });
    let refused = app.send(false, "Reexec", &[]).expect_err("busy");
    assert!(
        refused.contains("io.sockherd.Error.Busy") && refused.contains("reload"),
        "{refused}"
    );
    // Without the bus: SIGUSR2 is refused the same way, and logged.
    app.signal(Signal::SIGUSR2);
    app.wait_events("reexec-failed", 2);
    std::fs::remove_file(&hold).expect("let the reload go");
    wait_for("the reload done", || {
        (app.property("State") == "running").then_some(())
    });
    assert!(reload.wait().expect("the reload ends").success());
    assert!(workers(&app).iter().all(|w| !before.contains(w)));
    // Steady again: it goes through (the answer, or the connection closing).
    let _ = app.call("Reexec", &[]);
    wait_reexecs(&app, 1);
}

#[test]
fn shared_accept_workers_keep_their_notify_sockets_across_reexecs() {
    let dir = TempDir::new();
    let gate = dir.path().join("ready");
    std::fs::write(&gate, "").expect("let the workers start");
    let web = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = web.local_addr().expect("its address");
    let server: Vec<std::ffi::OsString> = vec![
        "python3".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/notify_server.py")
            .into(),
        gate.into(),
    ];
    let mut manager = serve_activated(
        &[("web", std::os::fd::AsRawFd::as_raw_fd(&web))],
        &[],
        &["-w", "2", "--policy", "none"],
        &server,
    );
    manager.wait_ready(2);
    drop(web);
    let before = manager.worker_pids();
    let load = Load::start(addr, "/", 4);
    load.wait_for_more(100);
    for n in 1..=3 {
        manager.signal(Signal::SIGUSR2);
        manager.wait_events("reexec-done", n);
        load.wait_for_more(50);
    }
    load.stop()
        .assert_no_failures("shared accept across re-execs");
    // Their notify sockets crossed: a reload's new workers are heard ready,
    // and the old ones are asked to stop and go.
    manager.signal(Signal::SIGHUP);
    let finished = manager.wait_events("reload-finished", 1);
    assert!(finished[0].line.contains("ok=true"), "{}", finished[0].line);
    wait_gone(&before);
    assert!(manager.stop().success());
}
