//! A minimal HTTP/1.1 worker: the example app, and the worker the tests and
//! benchmarks drive.
//!
//! Every response names the worker that served it — `hello from worker 2 (pid
//! 4242)` — so round-robin is visible with curl. `GET /slow?ms=N` answers after
//! N milliseconds, to have a request in flight during a drain. Keep-alive is
//! honoured (HTTP/1.1 by default, `Connection: close` ends it).
//!
//! On shutdown it stops taking connections, finishes the requests it has,
//! closes idle keep-alive connections, and exits 0. A connection that has not
//! sent its first request is not idle: it was handed over just before the
//! shutdown, its client is sending, and closing it would reset it. It is
//! served (the manager's kill timeout bounds a client that never sends).
//!
//! Run it under sockherd: `sockherd serve --listen 127.0.0.1:8080 -- target/release/examples/hello`.

use std::sync::Arc;
use std::time::Duration;

use sockherd_worker::{Listener, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Requests larger than this (headers) are answered 431 and the connection closed.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let listener = Arc::new(Listener::from_env()?);
    let body: Arc<str> = format!(
        "hello from worker {} (pid {})\n",
        sockherd_worker::worker_id().map_or("?".into(), |id| id.to_string()),
        std::process::id()
    )
    .into();
    listener.ready()?;
    let mut connections = JoinSet::new();
    while let Some(conn) = listener.accept().await? {
        connections.spawn(handle(
            conn.stream,
            Arc::clone(&listener),
            Arc::clone(&body),
        ));
        while connections.try_join_next().is_some() {}
    }
    // Shutting down: finish what we have.
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn handle(mut stream: Stream, listener: Arc<Listener>, body: Arc<str>) {
    let mut buf = Vec::with_capacity(1024);
    // Whether a request was answered: only then is a quiet connection idle.
    let mut answered = false;
    loop {
        // Wait for a request; an idle keep-alive connection is closed at shutdown.
        let head_end = tokio::select! {
            end = read_head(&mut stream, &mut buf) => match end {
                Some(end) => end,
                None => return,
            },
            _ = listener.shutdown_requested(), if answered && buf.is_empty() => return,
        };
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
        let close = http10 || close_asked || listener.is_shutting_down();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
            body.len(),
            if close { "close" } else { "keep-alive" },
            body
        );
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
        answered = true;
    }
}

/// Reads until a full request head is buffered; returns its length including
/// the blank line, or `None` if the peer closed or sent too much.
async fn read_head(stream: &mut Stream, buf: &mut Vec<u8>) -> Option<usize> {
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
