//! `sockherd import` on PM2's own ecosystem examples and on a file with
//! every option, against golden outputs, and its units against systemd's
//! checker.
//!
//! The fixtures in `tests/fixtures/pm2/` are PM2's documented examples, as
//! in Unitech/pm2 at v7.0.3: `examples/ecosystem-file/process.{config.js,
//! json,yml}`, `examples/cluster-http/ecosystem.config.js` (as
//! `cluster-http.config.js`), `examples/wait-ready/ecosystem.json` (as
//! `wait-ready.json`), and the templates `pm2 init` writes,
//! `lib/templates/ecosystem{,-simple,-es}.tpl` (as `ecosystem.config.js`,
//! `ecosystem-simple.config.js`, `ecosystem.config.mjs`); plus
//! `every-option.config.cjs`, ours. Each case's golden file in
//! `tests/fixtures/pm2/golden/` holds the command, its exit status, its
//! stdout (the units) and its stderr (the report), with the fixtures'
//! directory written `@DIR@` and node's path `/usr/bin/node`.
//! `SOCKHERD_BLESS=1 cargo test --test integration import::` rewrites them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{sockherd, TempDir};

/// A fixed PATH, so that the interpreters the units name are the same on
/// every run.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Each case: its golden file, the fixture, the options, the exit status.
const CASES: [(&str, &str, &[&str], i32); 10] = [
    ("process-config-no-ports", "process.config.js", &[], 2),
    (
        "process-config",
        "process.config.js",
        &[
            "--only",
            "HTTP-API",
            "--listen",
            "HTTP-API=8080",
            "--env",
            "production",
        ],
        0,
    ),
    (
        "process-json",
        "process.json",
        &["--only", "HTTP-API", "--listen", "HTTP-API=8080"],
        0,
    ),
    (
        "process-yml",
        "process.yml",
        &["--only", "HTTP-API", "--listen", "HTTP-API=8080"],
        0,
    ),
    ("cluster-http", "cluster-http.config.js", &[], 0),
    ("wait-ready", "wait-ready.json", &["--listen", "8080"], 0),
    (
        "init-template",
        "ecosystem.config.js",
        &["--listen", "index=3000", "--listen", "service-worker=3001"],
        0,
    ),
    (
        "init-simple",
        "ecosystem-simple.config.js",
        &["--listen", "8080"],
        0,
    ),
    (
        "init-es-module",
        "ecosystem.config.mjs",
        &["--only", "index", "--listen", "index=3000"],
        0,
    ),
    (
        "every-option",
        "every-option.config.cjs",
        &["--env", "production"],
        0,
    ),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pm2")
}

/// Runs `sockherd import FIXTURE OPTIONS… EXTRA…`.
fn import(fixture: &str, options: &[&str], extra: &[&str]) -> std::process::Output {
    Command::new(sockherd())
        .arg("import")
        .arg(fixtures().join(fixture))
        .args(options)
        .args(extra)
        .env("PATH", PATH)
        .output()
        .expect("sockherd runs")
}

/// What the golden file of a case holds.
fn golden_text(fixture: &str, options: &[&str], out: &std::process::Output) -> String {
    let node = Command::new("sh")
        .args(["-c", "command -v node"])
        .env("PATH", PATH)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let dir = fixtures().display().to_string();
    let normal = |text: &[u8]| {
        let text = String::from_utf8_lossy(text).replace(&dir, "@DIR@");
        if node.is_empty() {
            text
        } else {
            text.replace(&node, "/usr/bin/node")
        }
    };
    format!(
        "$ sockherd import {fixture} {}\nexit status {}\n--- stdout\n{}--- stderr\n{}",
        options.join(" "),
        out.status.code().unwrap_or(-1),
        normal(&out.stdout),
        normal(&out.stderr)
    )
}

#[test]
fn pm2_examples_import_as_the_golden_files_say() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("node is not installed: skipping (scripts/setup.sh installs it)");
        return;
    }
    let bless = std::env::var_os("SOCKHERD_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, fixture, options, status) in CASES {
        let out = import(fixture, options, &["--sockherd", "/usr/bin/sockherd"]);
        assert_eq!(
            out.status.code(),
            Some(status),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = golden_text(fixture, options, &out);
        let path = fixtures().join("golden").join(format!("{name}.txt"));
        if bless {
            std::fs::write(&path, &text).expect("write the golden file");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            eprintln!("--- {name}: what it printed now:\n{text}");
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "not as in tests/fixtures/pm2/golden: {stale:?}; if the change is meant, \
         rewrite them with SOCKHERD_BLESS=1 cargo test --test integration import::"
    );
}

#[test]
fn every_option_is_reported() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("node is not installed: skipping");
        return;
    }
    let out = import(
        "every-option.config.cjs",
        &["--env", "production"],
        &["--sockherd", "/usr/bin/sockherd"],
    );
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stderr);
    let api = report
        .split("\nworker: ")
        .next()
        .and_then(|text| text.split("\napi: ").nth(1))
        .expect("api's block");
    // Each of the app's options is named once in its block, under what became of it.
    let options = [
        "name",
        "script",
        "args",
        "interpreter",
        "interpreter_args",
        "cwd",
        "instances",
        "exec_mode",
        "env",
        "env_production",
        "env_staging",
        "kill_timeout",
        "listen_timeout",
        "wait_ready",
        "shutdown_with_message",
        "max_memory_restart",
        "min_uptime",
        "max_restarts",
        "restart_delay",
        "exp_backoff_restart_delay",
        "autorestart",
        "uid",
        "gid",
        "watch",
        "ignore_watch",
        "cron_restart",
        "merge_logs",
        "out_file",
        "error_file",
        "log_date_format",
        "pid_file",
        "instance_var",
        "increment_var",
        "source_map_support",
        "vizion",
        "treekill",
        "stop_exit_codes",
        "namespace",
        "frobnicate",
    ];
    for option in options {
        let named = api
            .split([',', '\n'])
            .filter(|item| {
                let item = item.trim();
                let item = item
                    .strip_prefix("mapped: ")
                    .or_else(|| item.strip_prefix("approximated: "))
                    .or_else(|| item.strip_prefix("not mapped: "))
                    .unwrap_or(item);
                item.split([' ', ':']).next() == Some(option)
            })
            .count();
        assert_eq!(named, 1, "{option} in:\n{api}");
    }
    for approximated in ["min_uptime", "restart_delay", "exp_backoff_restart_delay"] {
        assert!(
            api.contains(&format!("approximated: {approximated}: ")),
            "{approximated}"
        );
    }
    for refused in ["watch", "cron_restart", "merge_logs", "frobnicate"] {
        assert!(
            api.contains(&format!("not mapped: {refused}: ")),
            "{refused}"
        );
    }
    assert!(report.contains("deploy: not mapped: "), "{report}");
    assert!(report.contains("approximated: instances -1: "), "{report}");
}

#[test]
fn imported_units_pass_systemd_analyze_verify() {
    if Command::new("node").arg("--version").output().is_err()
        || Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("node or systemd-analyze is not installed: skipping");
        return;
    }
    let real = sockherd().display().to_string();
    for (name, fixture, options, status) in CASES {
        if status != 0 {
            continue;
        }
        let dir = TempDir::new();
        let out = import(
            fixture,
            options,
            &[
                "--sockherd",
                &real,
                "--output",
                &dir.path().display().to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut units: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("the units")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        units.sort();
        assert!(!units.is_empty(), "{name}: no units written");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&units)
            .output()
            .expect("systemd-analyze runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify, {name}: {said}"
        );
    }
}

#[test]
fn bad_files_are_one_line_and_status_2() {
    let dir = TempDir::new();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write a fixture");
        path
    };
    let cases = [
        (write("a.toml", "x = 1"), "not an ecosystem file"),
        (write("b.yaml", "apps: [: nope"), "is not YAML"),
        (write("c.json", "{\"apps\": []}"), "`apps` is empty"),
        (
            write("d.json", "{\"apps\": [{\"name\": \"x\"}]}"),
            "app 1: no `script`",
        ),
        (dir.path().join("missing.json"), "cannot read"),
    ];
    for (path, expected) in cases {
        let out = Command::new(sockherd())
            .arg("import")
            .arg(&path)
            .output()
            .expect("sockherd runs");
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {text}", path.display());
        assert!(text.contains(expected), "{}: {text}", path.display());
        assert!(text.lines().all(|l| l.starts_with("sockherd: ")), "{text}");
    }
}
