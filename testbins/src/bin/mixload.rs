//! `mixload`: a closed-loop HTTP load generator for `bench/policies.sh`.
//!
//! `mixload ADDR CLIENTS SECONDS SLOW_PERCENT SLOW_MS`: CLIENTS threads, each
//! making one request at a time on a new connection (`Connection: close`),
//! SLOW_PERCENT of them `GET /slow?ms=SLOW_MS` and the rest `GET /`, for
//! SECONDS. A request's latency runs from `connect()` to the end of the
//! answer, so time spent waiting in a backlog or behind another request counts.
//!
//! It prints one line: `requests seconds errors`, then p50, p90, p99, p99.9
//! and max of all requests, then p99 of the quick ones alone, in milliseconds.
//! wrk is not used for this because its latency statistics with a new
//! connection per request do not add up (its p80 came out above the time a
//! single connection's requests could have taken in total).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: mixload ADDR CLIENTS SECONDS SLOW_PERCENT SLOW_MS";

/// What one client thread saw.
#[derive(Default)]
struct Seen {
    /// Latencies of quick requests, µs.
    quick: Vec<u64>,
    /// Latencies of slow requests, µs.
    slow: Vec<u64>,
    /// Requests that failed or were not answered 200.
    errors: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Option<(SocketAddr, usize, u64, f64, u64)> {
        match &args[..] {
            [addr, clients, seconds, percent, ms] => Some((
                addr.parse().ok()?,
                clients.parse().ok()?,
                seconds.parse().ok()?,
                percent.parse().ok()?,
                ms.parse().ok()?,
            )),
            _ => None,
        }
    })();
    let Some((addr, clients, seconds, percent, ms)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let slow_request =
        format!("GET /slow?ms={ms} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let quick_request = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".to_owned();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|n| {
            let (slow_request, quick_request) = (slow_request.clone(), quick_request.clone());
            std::thread::spawn(move || {
                let mut rng =
                    Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
                let mut seen = Seen::default();
                while Instant::now() < deadline {
                    let slow = rng.percent() < percent;
                    let request = if slow { &slow_request } else { &quick_request };
                    let began = Instant::now();
                    if !ask(addr, request) {
                        seen.errors += 1;
                        continue;
                    }
                    let took = began.elapsed().as_micros() as u64;
                    if slow {
                        seen.slow.push(took)
                    } else {
                        seen.quick.push(took)
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut quick = Vec::new();
    let mut errors = 0;
    for thread in threads {
        let Ok(seen) = thread.join() else {
            eprintln!("mixload: a client thread failed");
            return ExitCode::FAILURE;
        };
        all.extend(&seen.quick);
        all.extend(&seen.slow);
        quick.extend(&seen.quick);
        errors += seen.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    quick.sort_unstable();
    let ms = |sorted: &[u64], p: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
    };
    println!(
        "{} {elapsed:.2} {errors} {:.2} {:.2} {:.2} {:.2} {:.2} {:.2}",
        all.len(),
        ms(&all, 50.0),
        ms(&all, 90.0),
        ms(&all, 99.0),
        ms(&all, 99.9),
        ms(&all, 100.0),
        ms(&quick, 99.0),
    );
    ExitCode::SUCCESS
}

/// One request on a new connection; whether it was answered 200.
fn ask(addr: SocketAddr, request: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .is_err()
        || stream.write_all(request.as_bytes()).is_err()
    {
        return false;
    }
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200 ")
}

/// xorshift64*: enough randomness to pick paths, no dependency.
struct Rng(u64);

impl Rng {
    /// A number in [0, 100).
    fn percent(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }
}
