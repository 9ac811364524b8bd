//! `sockherd monit` in a real terminal: tmux runs it at 80×24 against a
//! manager on a private bus ([`Daemon`]), types keys with `send-keys` and
//! reads the screen with `capture-pane`, as a person would see it. Skipped,
//! with a note, where tmux is not installed (`scripts/setup.sh` installs it).

use std::process::{Command, Output, Stdio};

use crate::common::*;

/// A tmux server of its own, running one window of 80×24; killed on drop.
struct Tmux {
    dir: TempDir,
}

impl Tmux {
    /// Runs `sockherd monit --address ADDRESS` in a new window, under
    /// `wrapper` (e.g. setpriv), and then, once it exits, prints its exit
    /// status and the terminal's settings, and waits.
    fn monit(address: &str, wrapper: &[&str]) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("tmux is not installed: skipping (scripts/setup.sh installs it)");
            return None;
        }
        let tmux = Tmux {
            dir: TempDir::new(),
        };
        let script = r#"$WRAPPER "$SOCKHERD" monit --address "$ADDRESS"; echo "monit exited $?"; stty -a; exec sleep 600"#;
        let out = tmux
            .command()
            .args(["new-session", "-d", "-x", "80", "-y", "24"])
            .arg("-e")
            .arg(format!("SOCKHERD={}", sockherd().display()))
            .arg("-e")
            .arg(format!("ADDRESS={address}"))
            .arg("-e")
            .arg(format!("WRAPPER={}", wrapper.join(" ")))
            .args(["sh", "-c", script])
            .output()
            .expect("tmux runs");
        assert!(out.status.success(), "tmux new-session: {}", said(&out));
        Some(tmux)
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env("TERM", "xterm-256color")
            .arg("-S")
            .arg(self.dir.path().join("socket"))
            .args(["-f", "/dev/null"]);
        command
    }

    /// The screen, as lines.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows what `check` looks for; returns it.
    fn wait(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, || {
                last = self.screen();
                check(&last).then(|| last.clone())
            })
        }));
        found.unwrap_or_else(|_| panic!("the screen never showed {what}:\n{last}"))
    }

    fn keys(&self, keys: &[&str]) {
        let out = self
            .command()
            .arg("send-keys")
            .args(keys)
            .output()
            .expect("tmux send-keys");
        assert!(out.status.success(), "tmux send-keys: {}", said(&out));
    }

    /// A tmux format of the window, e.g. `#{alternate_on}`.
    fn display(&self, format: &str) -> String {
        let out = self
            .command()
            .args(["display-message", "-p", format])
            .output()
            .expect("tmux display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hello` workers of the app `web` on the daemon's bus.
fn web(daemon: &Daemon, workers: u32) -> Manager {
    let workers = workers.to_string();
    Start::new(
        &[
            "--name",
            "web",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            &workers,
        ],
        &hello(),
    )
    .arg("--bus-address")
    .arg(&daemon.address)
    .spawn()
}

/// The worker rows on the screen, as (id, state), from lines in the
/// workers' columns (`  0   4242 ready   0.1%  3.4MiB …`).
fn rows(screen: &str) -> Vec<(u32, String)> {
    screen
        .lines()
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let id = cells.first()?.parse().ok()?;
            cells.get(1)?.parse::<u32>().ok()?;
            Some((id, (*cells.get(2)?).to_owned()))
        })
        .collect()
}

fn ready(screen: &str, count: u32) -> bool {
    let rows = rows(screen);
    rows.len() == count as usize && rows.iter().all(|(_, state)| state == "ready")
}

#[test]
fn monit_shows_the_workers_follows_a_scale_and_restores_the_terminal() {
    let daemon = Daemon::start();
    let _web = web(&daemon, 2);
    let Some(tmux) = Tmux::monit(&daemon.address, &[]) else {
        return;
    };
    let screen = tmux.wait("2 ready workers", |s| {
        ready(s, 2) && s.contains("web · rr · generation 1 · 2/2 ready")
    });
    assert!(
        screen.starts_with("sockherd monit · the bus at unix:path="),
        "{screen}"
    );
    assert!(screen.contains("  id "), "{screen}");
    assert!(screen.lines().all(|line| line.chars().count() <= 80));

    // A scale from elsewhere shows: a third worker, and the events.
    let out = Command::new(sockherd())
        .args(["scale", "web", "3", "--address", &daemon.address])
        .output()
        .expect("sockherd scale");
    assert!(out.status.success(), "{}", said(&out));
    let screen = tmux.wait("3 ready workers", |s| {
        ready(s, 3) && s.contains("3/3 ready") && s.contains("worker 2 ready")
    });
    assert!(screen.contains("web  scaled to 3 workers"), "{screen}");
    assert!(screen.contains("web  worker 2 started (pid "), "{screen}");
    assert_eq!(
        rows(&screen).iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // `+` scales the selected app (the first row) by one.
    tmux.keys(&["+"]);
    tmux.wait("the scale to 4", |s| {
        ready(s, 4) && s.contains("web: scaled to 4 workers")
    });

    // `R` on an app asks for a worker; on worker 1, replaces it.
    tmux.keys(&["R"]);
    tmux.wait("the hint", |s| {
        s.contains("web: select a worker (↑↓) to restart it")
    });
    tmux.keys(&["Down", "Down", "R"]);
    tmux.wait("worker 1 replaced", |s| {
        s.contains("web: worker 1 replaced") && ready(s, 4)
    });

    // `q`: monit exits 0 and leaves the terminal as it found it.
    tmux.keys(&["q"]);
    let screen = tmux.wait("monit's exit, then stty -a", |s| {
        s.contains("monit exited") && s.contains("icanon")
    });
    assert!(screen.contains("monit exited 0"), "{screen}");
    let words: Vec<&str> = screen.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(words.contains(&mode), "{mode} is back on:\n{screen}");
    }
    assert_eq!(tmux.display("#{alternate_on} #{cursor_flag}"), "0 1");
}

#[test]
fn monit_shows_a_refusal_as_a_line() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot run monit as nobody; skipping");
        return;
    }
    let daemon = Daemon::start();
    let _web = web(&daemon, 1);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let Some(tmux) = Tmux::monit(&daemon.address, &nobody) else {
        return;
    };
    tmux.wait("the worker", |s| ready(s, 1));
    tmux.keys(&["r"]);
    let screen = tmux.wait("the refusal", |s| s.contains("web: not allowed: "));
    assert!(
        screen.contains("uid 65534 may not call Reload()"),
        "{screen}"
    );
    // The view goes on.
    assert!(ready(&screen, 1), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait("monit's exit", |s| s.contains("monit exited 0"));
}

#[test]
fn monit_without_a_terminal_points_to_status() {
    let out = Command::new(sockherd())
        .args(["monit", "--address", "unix:path=/nonexistent"])
        .stdin(Stdio::null())
        .output()
        .expect("sockherd runs");
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("sockherd: monit draws a live view and needs a terminal")
            && text.contains("`sockherd status`"),
        "{text}"
    );
    assert!(out.stdout.is_empty(), "no escape codes on a pipe");
}
