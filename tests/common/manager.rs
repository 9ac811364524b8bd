//! The running manager: its log, collected line by line on a thread of its
//! own, the structured events in it, and what it takes to be sure neither it
//! nor any of its workers outlives the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Arc, Mutex};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{alive, start_time, wait_for, Addr, PATIENCE};

/// One line of the manager's log that records an event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u32>,
    pub pid: Option<u32>,
    pub line: String,
}

/// A running manager (or `systemd-socket-activate` about to become one).
pub struct Manager {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Every worker it started, as (pid, start time), to be sure none is left
    /// running after the test, whatever went wrong.
    workers: Arc<Mutex<Vec<(u32, u64)>>>,
    /// Closed when its stderr reaches its end: the log is complete.
    log_done: mpsc::Receiver<()>,
    status: Option<ExitStatus>,
}

impl Manager {
    pub(super) fn spawn(mut cmd: Command) -> Manager {
        let mut child = cmd.spawn().expect("start sockherd");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let (log_sink, workers_sink) = (Arc::clone(&log), Arc::clone(&workers));
        let (done, log_done) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = done;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("event=\"worker-started\"") {
                    let pid = field(&line, "worker_pid").and_then(|p| p.parse().ok());
                    if let Some((pid, start)) = pid.and_then(|p| Some((p, start_time(p)?))) {
                        workers_sink.lock().unwrap().push((pid, start));
                    }
                }
                log_sink.lock().unwrap().push(line);
            }
        });
        Manager {
            child,
            log,
            workers,
            log_done,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line it wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Its log lines for `event` (`worker-ready`, `worker-exited`, …), in order.
    pub fn events(&self, event: &str) -> Vec<Event> {
        let tag = format!("event=\"{event}\"");
        self.log
            .lock()
            .unwrap()
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
            "its stderr is still open after it exited"
        );
        status
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Workers die with their manager; should that ever break, they must
        // not outlive the test either. The start time tells a worker from a
        // process that got its pid later.
        for (pid, start) in self.workers.lock().unwrap().iter() {
            if alive(*pid) && start_time(*pid) == Some(*start) {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- sockherd log (pid {}) ---", self.pid());
            for line in self.log() {
                eprintln!("{line}");
            }
            eprintln!("--- end of sockherd log ---");
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
