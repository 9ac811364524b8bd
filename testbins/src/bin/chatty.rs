//! `chatty`: a sockherd worker that writes a lot of output, for the tests and
//! benchmarks of worker logging (`tests/logs.rs`, `tests/e2e/run.sh`,
//! `bench/logs.sh`).
//!
//! `chatty [--lines RATE SECONDS] [--log-requests]`:
//! - `--lines RATE SECONDS`: once ready, write `worker ID line N` on stdout for
//!   N = 0, 1, 2, … at RATE lines per second for SECONDS seconds, each line a
//!   write of its own (as `console.log` does), from a thread of its own, then
//!   `worker ID done N` with the number of lines written. When a write waits
//!   (the reader is slow), it catches up as fast as the reader allows; a
//!   write that fails ends the lines with `worker ID failed after N lines` on
//!   stderr.
//! - `--log-requests`: write `worker ID served request N` on stdout for every
//!   connection it answers: an access log.
//!
//! Either way it serves: every connection gets a minimal HTTP/1.1 answer
//! (`Connection: close`) naming the worker like the `hello` example does,
//! `hello from worker 2 (pid 4242)`, and it exits 0 on `SHUTDOWN=1`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sockherd_worker::{Connection, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: chatty [--lines RATE SECONDS] [--log-requests]";

#[derive(Debug, Default)]
struct Options {
    lines: Option<(u64, u64)>,
    log_requests: bool,
}

impl Options {
    fn from_args(args: &[String]) -> Option<Options> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--lines" => {
                    let rate = args.next()?.parse().ok()?;
                    let seconds = args.next()?.parse().ok()?;
                    options.lines = Some((rate, seconds));
                }
                "--log-requests" => options.log_requests = true,
                _ => return None,
            }
        }
        Some(options)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(options) = Options::from_args(&args) else {
        let _ = writeln!(io::stderr(), "{USAGE}");
        return ExitCode::from(2);
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| runtime.block_on(run(options)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "chatty: {e}");
            ExitCode::FAILURE
        }
    }
}

fn worker_id() -> String {
    sockherd_worker::worker_id().map_or("?".into(), |id| id.to_string())
}

async fn run(options: Options) -> io::Result<()> {
    let listener = Listener::from_env()?;
    let me = format!("worker {} (pid {})", worker_id(), std::process::id());
    listener.ready()?;
    if let Some((rate, seconds)) = options.lines {
        std::thread::spawn(move || write_lines(rate, seconds));
    }
    let mut served: u64 = 0;
    while let Some(conn) = listener.accept().await? {
        answer(conn, &format!("hello from {me}\n")).await;
        if options.log_requests {
            // A lost line is what the tests look for: write errors are not fatal.
            let _ = writeln!(
                io::stdout(),
                "worker {} served request {served}",
                worker_id()
            );
        }
        served += 1;
    }
    Ok(())
}

/// Writes `rate` numbered lines per second for `seconds` seconds.
fn write_lines(rate: u64, seconds: u64) {
    let id = worker_id();
    let total = rate * seconds;
    let start = Instant::now();
    let mut out = io::stdout();
    let mut written = 0;
    while written < total {
        let due = (start.elapsed().as_micros() as u64 * rate / 1_000_000).min(total);
        while written < due {
            if writeln!(out, "worker {id} line {written}").is_err() {
                let _ = writeln!(io::stderr(), "worker {id} failed after {written} lines");
                return;
            }
            written += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = writeln!(out, "worker {id} done {written}");
}

/// Reads one request head and answers it; errors and heads over 16 KiB just
/// end the connection.
async fn answer(mut stream: Connection, body: &str) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
