//! `sockherd unit` against systemd's own checker: the units it writes for a
//! native worker and for a Node.js app pass `systemd-analyze verify` (run on
//! the files by path, so it needs no running systemd). Skipped, with a note,
//! where `systemd-analyze` is not installed.

use std::path::Path;
use std::process::Command;

use crate::common::{sockherd, TempDir};

/// Writes the units of `name` into `dir` with the real binary.
fn generate(dir: &Path, name: &str, options: &[&str], command: &[&str]) {
    let out = Command::new(sockherd())
        .args(["unit", name, "--sockherd"])
        .arg(sockherd())
        .arg("--output")
        .arg(dir)
        .args(options)
        .arg("--")
        .args(command)
        .output()
        .expect("sockherd runs");
    assert!(
        out.status.success(),
        "sockherd unit {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generated_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipping the check");
        return;
    }
    let dir = TempDir::new();
    let dir = dir.path();
    generate(
        dir,
        "hello",
        &[
            "--listen",
            "8080",
            "--listen",
            "[::1]:9090",
            "--workers",
            "4",
        ],
        &["/usr/local/lib/sockherd/hello"],
    );
    generate(
        dir,
        "nodeapp",
        &[
            "--listen",
            "/run/nodeapp.sock",
            "--working-directory",
            "/srv/nodeapp",
            "--environment",
            "NODE_ENV=production",
            "--run-as",
            "www-data",
        ],
        &["node", "app.js", "--title", "my app"],
    );
    for name in ["hello", "nodeapp"] {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.join(format!("{name}.socket")))
            .arg(dir.join(format!("{name}.service")))
            .output()
            .expect("systemd-analyze runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {name}: {said}"
        );
    }
}
