//! Worker output and the manager's own log, when the manager logs to stderr
//! (the embedded mode, without systemd): every line a worker writes arrives,
//! whole and in order; a stderr that goes away costs log lines, never the
//! service; and no command panics when what it prints to is closed.
//!
//! The same promise under systemd, where each worker writes to a journal
//! stream of its own, is checked in the container (`tests/e2e/run.sh`,
//! "Logs"). Workers here are `chatty` (`testbins/src/bin/chatty.rs`), which
//! writes numbered lines at a given rate, and `hello` behind a shell loop.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::common::*;

/// `sockherd serve --bus none --listen SOCKET ARGS -- WORKER…`, its stderr
/// sent to `stderr` rather than read by the harness.
fn serve_to(socket: &Path, args: &[&str], worker: &[OsString], stderr: Stdio) -> Manager {
    let mut words = vec!["--bus", "none", "--listen"];
    let socket = socket.to_str().expect("a UTF-8 path");
    words.push(socket);
    words.extend_from_slice(args);
    Start::new(&words, worker).stderr(stderr).spawn()
}

/// Lines per second each of the two workers writes, and for how long: 50,000
/// lines/s in all, the rate of an access log on a busy 2-core server.
const RATE: u64 = 25_000;
const SECONDS: u64 = 5;

#[test]
fn every_line_of_two_chatty_workers_reaches_stderr_once_and_in_order() {
    let dir = TempDir::new();
    let log = dir.path().join("stderr.log");
    let socket = dir.path().join("http.sock");
    let worker: Vec<OsString> = vec![
        chatty(),
        "--lines".into(),
        RATE.to_string().into(),
        SECONDS.to_string().into(),
    ];
    let file = File::create(&log).expect("create the log file");
    let mut manager = serve_to(&socket, &["--workers", "2"], &worker, Stdio::from(file));

    // Both workers say how many lines they wrote once they are done.
    let done = wait_for_text(&log, |text| {
        let done: Vec<&str> = text.lines().filter(|l| l.contains(" done ")).collect();
        (done.len() == 2).then(|| done.join(" | "))
    });
    let response = get(&Addr::Unix(socket.clone()), "/").expect("it still serves");
    assert_eq!(response.status, 200, "{response:?}");
    let status = manager.stop();
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log).expect("read the log");
    let mut next: HashMap<u32, u64> = HashMap::new();
    for line in text.lines() {
        // `chatty[ID]: worker ID line N`, as the manager tags worker lines.
        let Some((tag, rest)) = line.split_once("]: worker ") else {
            continue;
        };
        let Some(id) = tag.strip_prefix("chatty[").and_then(|id| id.parse().ok()) else {
            continue;
        };
        let Some((_, n)) = rest.split_once(" line ") else {
            continue;
        };
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("a numbered line: {line:?}"));
        let expected = next.entry(id).or_insert(0);
        assert_eq!(n, *expected, "worker {id}'s lines out of order or missing");
        *expected += 1;
    }
    let total = RATE * SECONDS;
    assert_eq!(
        next,
        HashMap::from([(0, total), (1, total)]),
        "every line of both workers, once ({done})"
    );
    assert!(
        text.contains(&format!("chatty[0]: worker 0 done {total}"))
            && text.contains(&format!("chatty[1]: worker 1 done {total}")),
        "{done}"
    );
    assert!(!text.contains("dropped"), "the manager dropped lines");
}

/// Waits until `check` finds what it wants in the file's text. The file is
/// read once every 200 ms: it grows to megabytes.
fn wait_for_text<T>(path: &Path, mut check: impl FnMut(&str) -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(found) = std::fs::read_to_string(path).ok().and_then(|t| check(&t)) {
            return found;
        }
        assert!(
            start.elapsed() < PATIENCE * 3,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_line_longer_than_8192_bytes_is_split_and_marked() {
    let dir = TempDir::new();
    let log = dir.path().join("stderr.log");
    let socket = dir.path().join("http.sock");
    let hello = hello();
    // 10,000 bytes, then a short line, then the worker itself.
    let script = format!(
        "printf '%10000s\\n' '' | tr ' ' x; echo after; exec {}",
        hello[0].to_string_lossy()
    );
    let file = File::create(&log).expect("create the log file");
    let mut manager = serve_to(
        &socket,
        &["--workers", "1", "--name", "long"],
        &["/bin/sh".into(), "-c".into(), script.into()],
        Stdio::from(file),
    );
    let text = wait_for_text(&log, |text| {
        text.contains("long[0]: after").then(|| text.to_owned())
    });
    let status = manager.stop();
    assert!(status.success(), "{status}");
    let pieces: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("long[0]: x"))
        .collect();
    let lengths: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    assert_eq!(pieces.len(), 2, "two pieces, of {lengths:?} bytes");
    assert!(
        pieces[0] == format!("{}… [split at 8192 bytes]", "x".repeat(8191)),
        "the first piece is 8192 bytes and marked: {lengths:?}"
    );
    assert!(
        pieces[1] == "x".repeat(10_000 - 8192 - 1),
        "the second piece is the rest: {lengths:?}"
    );
}

/// The reliability issue's case: `sockherd serve … 2>&1 | head -c 1000`. Once
/// the reader of the manager's stderr is gone, every write to it fails with
/// EPIPE. The manager must go on serving and reading its workers' output
/// (a worker whose output is no longer read breaks, or blocks), and stop
/// cleanly.
#[test]
fn a_stderr_that_goes_away_costs_log_lines_not_the_service() {
    let dir = TempDir::new();
    let socket = dir.path().join("http.sock");
    let ticks = dir.path().join("ticks");
    let broken = dir.path().join("broken");
    let hello = hello();
    // A line every 50 ms, counted in a file; if a write fails (the manager
    // stopped reading), the loop ends and says so.
    let script = format!(
        "trap '' PIPE; \
         ( i=0; while echo \"tick $i\"; do i=$((i + 1)); echo $i > {ticks}.new; mv {ticks}.new {ticks}; sleep 0.05; done; \
           touch {broken} ) & \
         exec {hello}",
        ticks = ticks.display(),
        broken = broken.display(),
        hello = hello[0].to_string_lossy()
    );
    let metrics = dir.path().join("metrics.sock");
    let metrics_arg = metrics.to_string_lossy().into_owned();
    let mut manager = serve_to(
        &socket,
        &["--workers", "1", "--metrics", &metrics_arg],
        &["/bin/sh".into(), "-c".into(), script.into()],
        Stdio::piped(),
    );
    let stderr = manager.take_stderr().expect("stderr is piped");
    // Read the manager's stderr until the worker is ready and has ticked,
    // then close it, as `head` does when it has had enough.
    let (closed, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            ready |= line.contains("event=\"worker-ready\"");
            if ready && line.contains("tick ") {
                break;
            }
        }
        drop(lines);
        let _ = closed.send(());
    });
    closed_rx
        .recv_timeout(PATIENCE)
        .expect("the worker to be ready and tick");
    let read_ticks =
        || -> Option<u64> { std::fs::read_to_string(&ticks).ok()?.trim().parse().ok() };
    let then = wait_for("a tick count", read_ticks);
    // 20 more lines, each forwarded to the closed stderr.
    wait_for("20 more ticks after stderr closed", || {
        assert!(
            !broken.exists(),
            "the worker's output broke: the manager stopped reading it"
        );
        read_ticks().filter(|n| *n >= then + 20)
    });
    let response = get(&Addr::Unix(socket.clone()), "/").expect("it still serves");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(!broken.exists(), "the worker's output broke");
    // What could not be written is counted.
    let scrape = get(&Addr::Unix(metrics), "/metrics").expect("metrics");
    let lost: u64 = scrape
        .body
        .lines()
        .find_map(|l| l.strip_prefix("sockherd_log_lines_lost_total{app=\"sh\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lost-lines counter in {}", scrape.body));
    assert!(lost >= 10, "only {lost} lines counted lost");
    let status = manager.stop();
    assert!(status.success(), "the manager exits 0 on SIGTERM: {status}");
}

/// Runs `sockherd ARGS` with stdout, or stderr, a pipe nobody reads any
/// more; returns its exit status and what it wrote to the other one.
fn into_closed_pipe(args: &[&str], closed_stdout: bool) -> (std::process::ExitStatus, String) {
    let (reader, writer) = nix::unistd::pipe().expect("a pipe");
    drop(reader);
    let mut cmd = Command::new(sockherd());
    cmd.args(args).stdin(Stdio::null());
    if closed_stdout {
        cmd.stdout(writer).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped()).stderr(writer);
    }
    let mut child = cmd.spawn().expect("start sockherd");
    let mut other = String::new();
    let mut stream: Box<dyn Read> = if closed_stdout {
        Box::new(child.stderr.take().expect("piped"))
    } else {
        Box::new(child.stdout.take().expect("piped"))
    };
    stream
        .read_to_string(&mut other)
        .expect("read the other stream");
    let status = child.wait().expect("wait for sockherd");
    (status, other)
}

#[test]
fn printing_into_a_closed_pipe_does_not_panic() {
    // `sockherd completions bash | head -1`: a long script into a closed stdout.
    let (status, stderr) = into_closed_pipe(&["completions", "bash"], true);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");

    // `sockherd unit … | head -1`.
    let (status, stderr) = into_closed_pipe(
        &["unit", "web", "--listen", "8080", "--", "/srv/web/server"],
        true,
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");

    // `sockherd status … 2>&1 | head -c 10` on a bus that is not there: the
    // error goes to a closed stderr, and the exit status still says it failed.
    let (status, stdout) = into_closed_pipe(
        &[
            "status",
            "--address",
            "unix:path=/nonexistent/sockherd-test-bus",
        ],
        false,
    );
    assert_eq!(status.code(), Some(1), "{status}: {stdout}");
}
