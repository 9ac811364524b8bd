//! `connload`: exactly COUNT HTTP requests, each on a new connection, for
//! `bench/dispatch-cost.sh`.
//!
//! `connload ADDR COUNT CLIENTS`: CLIENTS threads take requests from one
//! counter until COUNT have been made; each request connects, sends `GET /`
//! with `Connection: close` and reads the answer to its end. So the manager
//! under measurement dispatches exactly COUNT connections, one at a time with
//! one client, or as many at once as there are clients.
//!
//! It prints one line, `requests errors seconds`, and exits non-zero if any
//! request was not answered 200. wrk cannot stop after a given number of
//! connections, which the difference of two measured runs needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: connload ADDR COUNT CLIENTS";

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Option<(SocketAddr, u64, usize)> {
        match &args[..] {
            [addr, count, clients] => Some((
                addr.parse().ok()?,
                count.parse().ok()?,
                clients.parse().ok().filter(|c| *c > 0)?,
            )),
            _ => None,
        }
    })();
    let Some((addr, count, clients)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let taken = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let taken = Arc::clone(&taken);
            std::thread::spawn(move || {
                let mut errors = 0u64;
                while taken.fetch_add(1, Ordering::Relaxed) < count {
                    if !ask(addr) {
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for thread in threads {
        match thread.join() {
            Ok(e) => errors += e,
            Err(_) => {
                eprintln!("connload: a client thread failed");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{count} {errors} {:.2}", start.elapsed().as_secs_f64());
    if errors > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One request on a new connection; whether it was answered 200.
fn ask(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .is_err()
        || stream.write_all(REQUEST).is_err()
    {
        return false;
    }
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200 ")
}
