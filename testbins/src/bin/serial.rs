//! `serial`: an HTTP worker that serves one connection at a time, like a
//! pre-fork synchronous worker (gunicorn's sync workers, PHP-FPM, a Python
//! `socket.accept()` loop). For such apps the dispatch policy decides tail
//! latency: a connection handed to a worker busy with a slow request waits
//! for it. `bench/policies.sh` drives it under each policy.
//!
//! Every answer is `hello from worker N (pid P)` with `Connection: close`;
//! `GET /slow?ms=N` answers after N milliseconds. It runs either way sockherd
//! can start it:
//! - with `SOCKHERD_CHANNEL_FD` (the native protocol, `rr`, `least-conn`,
//!   `ip-hash`): connections arrive on the channel; each is dropped when
//!   answered, which reports its close for least-conn;
//! - with `LISTEN_FDS` (socket activation, `--policy none`, or systemd
//!   itself): it accepts on fd 3 in blocking mode and says `READY=1` on
//!   `NOTIFY_SOCKET`. SIGTERM ends it.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Request heads larger than this end the connection unanswered.
const MAX_HEAD: usize = 16 * 1024;

fn main() -> ExitCode {
    let body = format!(
        "hello from worker {} (pid {})\n",
        sockherd_worker::worker_id().map_or("?".into(), |id| id.to_string()),
        std::process::id()
    );
    let result = if std::env::var_os("LISTEN_FDS").is_some() {
        activated(&body)
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|runtime| runtime.block_on(native(&body)))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serial: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connections from the manager, one at a time.
async fn native(body: &str) -> io::Result<()> {
    let listener = sockherd_worker::Listener::from_env()?;
    listener.ready()?;
    while let Some(conn) = listener.accept().await? {
        let mut stream = conn;
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let complete = loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                break true;
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 && head.len() <= MAX_HEAD => head.extend_from_slice(&chunk[..n]),
                _ => break false,
            }
        };
        if complete {
            if let Some(wait) = slow(&head) {
                tokio::time::sleep(wait).await;
            }
            let _ = stream.write_all(response(body).as_bytes()).await;
        }
    }
    Ok(())
}

/// Its own `accept()` on the inherited socket, one connection at a time.
fn activated(body: &str) -> io::Result<()> {
    let mine = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    if !mine {
        return Err(io::Error::other("LISTEN_PID is not this process"));
    }
    // SAFETY: socket activation passed fd 3 to this process (LISTEN_PID says
    // so), and nothing else in it took the fd.
    let listener = std::net::TcpListener::from(unsafe { OwnedFd::from_raw_fd(3) });
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        std::os::unix::net::UnixDatagram::unbound()?.send_to(b"READY=1", path)?;
    }
    loop {
        let (mut stream, _) = listener.accept()?;
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let complete = loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                break true;
            }
            match stream.read(&mut chunk) {
                Ok(n) if n > 0 && head.len() <= MAX_HEAD => head.extend_from_slice(&chunk[..n]),
                _ => break false,
            }
        };
        if complete {
            if let Some(wait) = slow(&head) {
                std::thread::sleep(wait);
            }
            let _ = stream.write_all(response(body).as_bytes());
        }
    }
}

/// How long `GET /slow?ms=N` asks to wait (at most a minute).
fn slow(head: &[u8]) -> Option<Duration> {
    let line = head.split(|b| *b == b'\r').next()?;
    let path = std::str::from_utf8(line).ok()?.split(' ').nth(1)?;
    let ms: u64 = path.strip_prefix("/slow?ms=")?.parse().ok()?;
    Some(Duration::from_millis(ms.min(60_000)))
}

fn response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
