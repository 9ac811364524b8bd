//! A load generator for tests: client threads making HTTP requests in a loop,
//! a new connection per request, counting every outcome.
//!
//! Lifecycle tests run it while they reload, scale or kill workers and then
//! assert on the counts ("zero failed requests"), so every failure is kept
//! with its reason for the assertion message.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests answered `200`.
    pub ok: u64,
    /// Connections refused by the kernel (nothing listening / backlog full).
    pub refused: u64,
    /// Everything else: resets, timeouts, short or bad answers, with reasons.
    pub failed: Vec<String>,
    /// Bodies of the answers, for tests that look at which worker served.
    pub bodies: Vec<String>,
}

impl Tally {
    pub fn sent(&self) -> u64 {
        self.ok + self.refused + self.failed.len() as u64
    }

    /// Panics with the reasons unless every request succeeded.
    pub fn assert_no_failures(&self, what: &str) {
        assert!(
            self.refused == 0 && self.failed.is_empty() && self.ok > 0,
            "{what}: {} sent, {} ok, {} refused, {} failed: {:?}",
            self.sent(),
            self.ok,
            self.refused,
            self.failed.len(),
            &self.failed[..self.failed.len().min(10)]
        );
    }
}

/// Client threads hammering `addr` until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` threads requesting `path` from `addr`.
    pub fn start(addr: SocketAddr, path: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, tally, path) = (Arc::clone(&stop), Arc::clone(&tally), path.to_owned());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = request(addr, &path);
                        let mut tally = tally.lock().expect("tally lock");
                        match outcome {
                            Ok(body) => {
                                tally.ok += 1;
                                if tally.bodies.len() < 100_000 {
                                    tally.bodies.push(body);
                                }
                            }
                            Err(Outcome::Refused) => tally.refused += 1,
                            Err(Outcome::Failed(why)) => tally.failed.push(why),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    /// Requests answered so far.
    pub fn ok_so_far(&self) -> u64 {
        self.tally.lock().expect("tally lock").ok
    }

    /// Waits until at least `n` more requests have succeeded, or for
    /// [`PATIENCE`]: what the clients saw is for the test to judge, from the
    /// [`Tally`] that [`Load::stop`] returns.
    pub fn wait_for_more(&self, n: u64) {
        let start = self.ok_so_far();
        let since = Instant::now();
        while self.ok_so_far() < start + n && since.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients and returns what they saw.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        let tally = self.tally.lock().expect("tally lock");
        tally.clone()
    }
}

pub enum Outcome {
    Refused,
    Failed(String),
}

/// One `GET` on a new connection; the body of a `200`. Its timeouts are what
/// the load tests call a failed request (a connection not accepted in 5 s,
/// an answer not complete in 15 s), not the harness's patience.
pub fn request(addr: SocketAddr, path: &str) -> Result<String, Outcome> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Outcome::Refused
        } else {
            Outcome::Failed(format!("connect: {e}"))
        }
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| Outcome::Failed(format!("write: {e}")))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| Outcome::Failed(format!("read: {e}")))?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(Outcome::Failed(format!(
            "answer: {:?}",
            response.lines().next()
        )));
    }
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok(body)
}
