//! The HTTP/1.1 side of the hello examples, shared by `hello` (connections
//! handed over by sockherd) and `hello_shared` (its own `accept()` on an
//! inherited listening socket), so that `bench/dispatch.sh` compares the way
//! connections arrive and nothing else.
//!
//! Every response names the worker that served it — `hello from worker 2 (pid
//! 4242)`. `GET /slow?ms=N` answers after N milliseconds. Keep-alive is
//! honoured (HTTP/1.1 by default, `Connection: close` or HTTP/1.0 ends it).
//! Once a drain starts, idle keep-alive connections are closed and a request
//! in progress is answered with `Connection: close`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Requests larger than this (headers) are answered 431 and the connection closed.
const MAX_HEAD: usize = 16 * 1024;

/// Tells a connection that the worker is draining.
pub trait Drain: Send + Sync + 'static {
    /// Whether the drain has started.
    fn is_shutting_down(&self) -> bool;
    /// Resolves once the drain has started.
    fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + '_;
}

impl Drain for sockherd_worker::Listener {
    fn is_shutting_down(&self) -> bool {
        sockherd_worker::Listener::is_shutting_down(self)
    }

    fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + '_ {
        sockherd_worker::Listener::shutdown_requested(self)
    }
}

/// The body every response carries: `hello from worker ID (pid PID)`, with
/// the id from `SOCKHERD_WORKER_ID`, or `?` without one.
pub fn body() -> Arc<str> {
    format!(
        "hello from worker {} (pid {})\n",
        sockherd_worker::worker_id().map_or("?".into(), |id| id.to_string()),
        std::process::id()
    )
    .into()
}

/// At shutdown, how long a new connection may take to send its first request.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until the client or a drain ends it.
pub async fn handle<S, D>(mut stream: S, drain: Arc<D>, body: Arc<str>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Drain,
{
    let mut buf = Vec::with_capacity(1024);
    let mut served = 0u64;
    loop {
        // Wait for a request. At shutdown a keep-alive connection idle between
        // requests is closed (its client retries on a new one). A new
        // connection is not idle: it was handed over before the shutdown and
        // its first request is on its way, so it gets FIRST_REQUEST_GRACE.
        let closing = async {
            drain.shutdown_requested().await;
            if served == 0 {
                tokio::time::sleep(FIRST_REQUEST_GRACE).await;
            }
        };
        let head_end = tokio::select! {
            end = read_head(&mut stream, &mut buf) => match end {
                Some(end) => end,
                None => return,
            },
            _ = closing, if buf.is_empty() => {
                // Part of a request may have arrived meanwhile: finish it.
                if buf.is_empty() {
                    return;
                }
                continue;
            }
        };
        served += 1;
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let path = parts.nth(1).unwrap_or("/");
        let http10 = parts.next() == Some("HTTP/1.0");
        let close_asked = lines.any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        });
        if let Some(ms) = path
            .strip_prefix("/slow?ms=")
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
        let close = http10 || close_asked || drain.is_shutting_down();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
            body.len(),
            if close { "close" } else { "keep-alive" },
            body
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads until a full request head is buffered; returns its length including
/// the blank line, or `None` if the peer closed or sent too much.
async fn read_head<S>(stream: &mut S, buf: &mut Vec<u8>) -> Option<usize>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        if buf.len() > MAX_HEAD {
            let _ = stream
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await;
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
