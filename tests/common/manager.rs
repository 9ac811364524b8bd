//! The running manager: its log, collected line by line on a thread of its
//! own, the structured events in it, and what it takes to be sure neither it
//! nor any of its workers outlives the test.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::turns::{share, Shared};
use super::{alive, start_time, wait_for, Addr, PATIENCE};

/// How much of a stream the harness keeps: a worker flooding its output
/// (tests/flood.rs) makes the manager log tens of MB a second. Past this,
/// only lines recording an event are kept, and the others counted.
const KEPT_BYTES: usize = 8 << 20;

/// One line of the manager's log that records an event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u32>,
    pub pid: Option<u32>,
    pub line: String,
}

/// Every worker a manager started, as (pid, start time).
type Workers = Arc<Mutex<Vec<(u32, u64)>>>;

/// The lines of one of its output streams.
#[derive(Default)]
struct Lines {
    kept: Vec<String>,
    bytes: usize,
    /// Lines not kept, past [`KEPT_BYTES`].
    dropped: u64,
}

/// A running manager (or `systemd-socket-activate` about to become one).
pub struct Manager {
    child: Child,
    /// Its stderr, where it logs (`--log stderr`).
    log: Arc<Mutex<Lines>>,
    /// Its stdout, shown with the log when a test fails.
    stdout: Arc<Mutex<Lines>>,
    /// Every worker it started, to be sure none is left running after the
    /// test, whatever went wrong.
    workers: Workers,
    /// Closed when both its stdout and stderr reach their end: the log is
    /// complete.
    log_done: mpsc::Receiver<()>,
    status: Option<ExitStatus>,
    /// Its test's share of the machine, given back once it and its workers
    /// are gone (fields drop after [`Manager::drop`]).
    _turn: Shared,
}

/// Locks `mutex` even if a panicking test thread poisoned it: the log is
/// needed most then.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `stream` line by line into `sink` until its end; records the
/// workers started when `workers` is given.
fn collect(
    stream: impl Read,
    sink: Arc<Mutex<Lines>>,
    workers: Option<Workers>,
    done: mpsc::Sender<()>,
) {
    let _done = done;
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches('\n')
            .to_owned();
        let event = line.contains(" event=\"");
        if let (true, Some(workers)) = (line.contains("event=\"worker-started\""), &workers) {
            let pid = field(&line, "worker_pid").and_then(|p| p.parse().ok());
            if let Some((pid, start)) = pid.and_then(|p| Some((p, start_time(p)?))) {
                lock(workers).push((pid, start));
            }
        }
        let mut lines = lock(&sink);
        if lines.bytes < KEPT_BYTES || event {
            lines.bytes += line.len();
            lines.kept.push(line);
        } else {
            lines.dropped += 1;
        }
    }
}

impl Manager {
    /// Starts `cmd` and reads its stdout, and its stderr when `log` (else the
    /// test chose where stderr goes: see [`Manager::take_stderr`]).
    pub(super) fn spawn(mut cmd: Command, log: bool) -> Manager {
        let turn = share();
        let mut child = cmd.spawn().expect("start sockherd");
        let stdout = child.stdout.take().expect("stdout is piped");
        let log_lines = Arc::new(Mutex::new(Lines::default()));
        let out = Arc::new(Mutex::new(Lines::default()));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let (done, log_done) = mpsc::channel::<()>();
        if log {
            let stderr = child.stderr.take().expect("stderr is piped");
            let (sink, seen, end) = (Arc::clone(&log_lines), Arc::clone(&workers), done.clone());
            std::thread::spawn(move || collect(stderr, sink, Some(seen), end));
        }
        let log = log_lines;
        let sink = Arc::clone(&out);
        std::thread::spawn(move || collect(stdout, sink, None, done));
        Manager {
            child,
            log,
            stdout: out,
            workers,
            log_done,
            status: None,
            _turn: turn,
        }
    }

    /// Its stderr, when the test asked for a pipe of its own
    /// ([`super::start::Start::stderr`]).
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line it wrote to stderr so far (past [`KEPT_BYTES`], those
    /// recording an event).
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).kept.clone()
    }

    /// Its log as one text, a newline after each line.
    pub fn log_text(&self) -> String {
        lock(&self.log)
            .kept
            .iter()
            .flat_map(|line| [line.as_str(), "\n"])
            .collect()
    }

    /// Whether a line of its log contains `needle`.
    pub fn has_line(&self, needle: &str) -> bool {
        lock(&self.log).kept.iter().any(|l| l.contains(needle))
    }

    /// Waits until its log, as one text, satisfies `done`.
    pub fn wait_log(&self, what: &str, done: impl Fn(&str) -> bool) {
        wait_for(what, || done(&self.log_text()).then_some(()))
    }

    /// Its log lines for `event` (`worker-ready`, `worker-exited`, …), in order.
    pub fn events(&self, event: &str) -> Vec<Event> {
        let tag = format!("event=\"{event}\"");
        lock(&self.log)
            .kept
            .iter()
            .filter(|l| l.contains(&tag))
            .map(|l| Event {
                id: field(l, "worker_id").and_then(|v| v.parse().ok()),
                pid: field(l, "worker_pid").and_then(|v| v.parse().ok()),
                line: l.clone(),
            })
            .collect()
    }

    /// Waits until `event` was logged at least `count` times; returns them all.
    pub fn wait_events(&self, event: &str, count: usize) -> Vec<Event> {
        wait_for(&format!("{count} {event} events"), || {
            let found = self.events(event);
            (found.len() >= count).then_some(found)
        })
    }

    /// Waits until workers 0..n have each reported ready at least once.
    pub fn wait_ready(&self, n: u32) {
        wait_for(&format!("workers 0..{n} to be ready"), || {
            let ready = self.events("worker-ready");
            (0..n)
                .all(|id| ready.iter().any(|e| e.id == Some(id)))
                .then_some(())
        })
    }

    /// The pids of every worker started so far.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.events("worker-started")
            .iter()
            .filter_map(|e| e.pid)
            .collect()
    }

    /// Waits until it logged `count` listening sockets and returns their addresses.
    pub fn listening(&self, count: usize) -> Vec<Addr> {
        wait_for(&format!("{count} listening sockets"), || {
            let addrs: Vec<Addr> = self
                .log()
                .iter()
                .filter(|l| l.contains(" listening on "))
                .filter_map(|l| field(l, "socket"))
                .map(|s| match s.parse() {
                    Ok(addr) => Addr::Tcp(addr),
                    Err(_) => Addr::Unix(s.into()),
                })
                .collect();
            (addrs.len() >= count).then_some(addrs)
        })
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the manager");
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for sockherd");
        }
        self.status
    }

    /// Waits for it to exit, and for its log to be complete.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_for("sockherd to exit", || self.try_exit());
        let end = self.log_done.recv_timeout(PATIENCE);
        assert_eq!(
            end,
            Err(mpsc::RecvTimeoutError::Disconnected),
            "its stdout or stderr is still open after it exited"
        );
        status
    }

    /// SIGTERM, and its exit status once it exited with its log complete.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit()
    }

    /// Prints its stderr and stdout, for a failed test's reader.
    fn print_log(&self) {
        for (name, stream) in [("log", &self.log), ("stdout", &self.stdout)] {
            let lines = lock(stream);
            if lines.kept.is_empty() && lines.dropped == 0 {
                continue;
            }
            eprintln!("--- sockherd {name} (pid {}) ---", self.pid());
            for line in &lines.kept {
                eprintln!("{line}");
            }
            if lines.dropped > 0 {
                eprintln!("({} more lines, not kept)", lines.dropped);
            }
            eprintln!("--- end of sockherd {name} ---");
        }
    }
}

impl Drop for Manager {
    /// SIGKILLs it if it still runs, then makes sure that none of its workers
    /// survives it (they must not: `PR_SET_PDEATHSIG`): a survivor is killed,
    /// and fails the test unless it failed already, when the log is printed.
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Every worker-started line read (a killed manager's pipes end at
        // once: its workers' output goes to pipes of its own, not to these).
        let _ = self.log_done.recv_timeout(PATIENCE);
        // The start time tells a worker from a process that got its pid later.
        let workers = lock(&self.workers).clone();
        let survivors = || -> Vec<u32> {
            workers
                .iter()
                .filter(|(pid, start)| alive(*pid) && start_time(*pid) == Some(*start))
                .map(|(pid, _)| *pid)
                .collect()
        };
        let start = Instant::now();
        let mut left = survivors();
        while !left.is_empty() && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(20));
            left = survivors();
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            self.print_log();
        } else if !left.is_empty() {
            self.print_log();
            panic!(
                "workers {left:?} outlived their manager (pid {}) by {PATIENCE:?}",
                self.pid()
            );
        }
    }
}

/// The value of ` key=value` in a log line, unquoted.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let value = rest.split(' ').next()?;
    Some(value.trim_matches('"'))
}
