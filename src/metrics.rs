//! Metrics: Prometheus text over HTTP, on a socket of its own.
//!
//! The endpoint listens on the socket systemd passed under the name `metrics`
//! (`FileDescriptorName=metrics`) or on `--metrics ADDR`. A socket named
//! `metrics` is never a dispatch socket, so the two cannot be mixed up.
//!
//! [`Stats`] holds the counters that live on the connection path (dispatch
//! latency, accept errors); they are plain cells bumped by the accept loops,
//! which costs two clock reads per connection. Everything about workers is
//! asked of the pool when a scrape comes in, including each worker's open
//! connections: handed over and not reported closed, the count least-conn
//! goes by; memory and CPU figures are read from `/proc` off the event loop.
//! Under `--policy none` the workers accept by themselves and the manager sees
//! no connection, so the connection metrics stay at zero.
//!
//! What a scraper can cost is bounded: at most [`MAX_SCRAPES`] at once, each
//! done or dropped within [`SCRAPE_TIMEOUT`], a request head of at most 8 KiB.

use std::cell::Cell;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::dispatch::Dispatcher;
use crate::conn::stats::Stats;
use crate::pool::report::{Event, Handle, Request, Snapshot, Status, WorkerInfo};
use crate::pool::usage::{self, Usage};
use crate::shutdown::Token;
use crate::sockets::listener::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

/// How long a scrape may take, from accept to the last byte of the answer: a
/// client that says nothing holds a descriptor no longer than this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Scrapes answered at once. Past this the endpoint stops accepting until one
/// is done: further clients wait in its listen queue, and the manager's
/// descriptors stay for the app's connections.
const MAX_SCRAPES: usize = 8;

/// Counters of pool events, kept by the metrics task from the event stream.
#[derive(Debug, Default)]
struct Tallies {
    reloads_ok: Cell<u64>,
    reloads_failed: Cell<u64>,
}

impl Tallies {
    fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.set(counter.get() + 1);
    }
}

/// Serves scrapes on `listener` until `stop` is requested.
pub(crate) async fn serve(
    listener: Listener,
    dispatcher: Rc<Dispatcher>,
    pool: Handle,
    usage: Arc<usage::Cache>,
    mut stop: Token,
) {
    let tallies = Rc::new(Tallies::default());
    let mut events = pool.events.subscribe();
    // A duplicate: `listener` stays alive to remove its socket file when done.
    let accepting = match listener.fd.try_clone().and_then(into_tokio) {
        Ok(accepting) => accepting,
        Err(e) => {
            tracing::error!("cannot serve metrics on {}: {e}", listener.local);
            return;
        }
    };
    tracing::info!("metrics on http://{}/metrics", listener.local);
    let mut scrapes = JoinSet::new();
    loop {
        let conn = tokio::select! {
            _ = stop.requested() => break,
            Some(_) = scrapes.join_next() => continue,
            event = events.recv() => {
                match event {
                    Ok(Event::Reloaded { ok, .. }) => tallies.reloaded(ok),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
                continue;
            }
            conn = accepting.accept(), if scrapes.len() < MAX_SCRAPES => conn,
        };
        match conn {
            Ok(stream) => {
                let (dispatcher, pool, usage, tallies) = (
                    Rc::clone(&dispatcher),
                    pool.clone(),
                    Arc::clone(&usage),
                    Rc::clone(&tallies),
                );
                scrapes.spawn_local(async move {
                    let answering = answer(stream, &dispatcher.stats, &pool, &usage, &tallies);
                    let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answering).await;
                });
            }
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    scrapes.shutdown().await;
}

/// The metrics socket as a tokio listener, TCP or Unix.
enum Accepting {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

type Stream = Box<dyn AsyncStream>;
trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncStream for T {}

impl Accepting {
    async fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Accepting::Tcp(l) => Box::new(l.accept().await?.0),
            Accepting::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

fn into_tokio(fd: OwnedFd) -> std::io::Result<Accepting> {
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    if addr.family() == Some(AddressFamily::Unix) {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(Accepting::Unix(tokio::net::UnixListener::from_std(std)?))
    } else {
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(Accepting::Tcp(tokio::net::TcpListener::from_std(std)?))
    }
}

async fn answer(
    mut stream: Stream,
    stats: &Stats,
    pool: &Handle,
    usage: &usage::Cache,
    tallies: &Tallies,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let path = request_line
        .split(|b| *b == b' ')
        .nth(1)
        .unwrap_or_default();
    if path != b"/metrics" && path != b"/" {
        return stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .await;
    }
    let status = match pool.ask(Request::Status).await {
        Ok(status) => {
            let usage = usage
                .of(status.workers.iter().map(|w| w.pid).collect())
                .await;
            Some((status, usage))
        }
        Err(_) => None,
    };
    let body = render(stats, &pool.snapshot.borrow(), status.as_ref(), tallies);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

fn render(
    stats: &Stats,
    snapshot: &Snapshot,
    status: Option<&(Status, Vec<Option<Usage>>)>,
    tallies: &Tallies,
) -> String {
    let mut out = String::with_capacity(4096);
    let app = format!("app=\"{}\"", escape(&snapshot.app));
    let pool: [(&str, &str, &str, u64); 7] = [
        (
            "workers_target",
            "gauge",
            "Workers wanted.",
            snapshot.target.into(),
        ),
        (
            "workers_ready",
            "gauge",
            "Workers in the dispatch ring.",
            snapshot.ready.into(),
        ),
        (
            "workers_gave_up",
            "gauge",
            "Worker slots that gave up after too many crashes.",
            snapshot.gave_up.len() as u64,
        ),
        (
            "restarts_total",
            "counter",
            "Worker restarts after crashes.",
            snapshot.restarts.into(),
        ),
        (
            "generation",
            "gauge",
            "The current reload generation.",
            snapshot.generation.into(),
        ),
        (
            "accept_errors_total",
            "counter",
            "accept() failures (out of descriptors, memory, ...).",
            stats.accept_errors(),
        ),
        (
            "log_lines_lost_total",
            "counter",
            "Log lines lost to a broken log sink (stderr closed, journal gone), and manager log messages dropped from a full queue.",
            crate::log::sink::LOST.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in pool {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "sockherd_{name}{{{app}}} {value}");
    }
    header(
        &mut out,
        "policy_info",
        "gauge",
        "The dispatch policy in force (label policy).",
    );
    let _ = writeln!(
        out,
        "sockherd_policy_info{{{app},policy=\"{}\"}} 1",
        escape(&snapshot.policy)
    );
    header(
        &mut out,
        "reloads_total",
        "counter",
        "Rolling reloads, by result.",
    );
    let _ = writeln!(
        out,
        "sockherd_reloads_total{{{app},result=\"ok\"}} {}",
        tallies.reloads_ok.get()
    );
    let _ = writeln!(
        out,
        "sockherd_reloads_total{{{app},result=\"failed\"}} {}",
        tallies.reloads_failed.get()
    );

    let name = "dispatch_latency_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time from accept() to hand-over to a worker.",
    );
    let mut cumulative = 0;
    for (bound, count) in stats.latency() {
        cumulative += count;
        let bound = bound.map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "sockherd_{name}_bucket{{{app},le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "sockherd_{name}_sum{{{app}}} {}", stats.latency_sum());
    let _ = writeln!(out, "sockherd_{name}_count{{{app}}} {cumulative}");

    let Some((status, usage)) = status else {
        return out;
    };
    header(
        &mut out,
        "connections_total",
        "counter",
        "Connections dispatched since the manager started.",
    );
    let _ = writeln!(
        out,
        "sockherd_connections_total{{{app}}} {}",
        status.connections
    );
    type Value = fn(&WorkerInfo, Option<&Usage>) -> String;
    let per_worker: [(&str, &str, &str, Value); 5] = [
        (
            "worker_connections_total",
            "counter",
            "Connections handed to this worker process.",
            |w, _| w.connections.to_string(),
        ),
        (
            "worker_connections_open",
            "gauge",
            "Connections handed to this worker process and not reported closed yet.",
            |w, _| w.open.to_string(),
        ),
        (
            "worker_restarts_total",
            "counter",
            "Restarts of this worker slot.",
            |w, _| w.restarts.to_string(),
        ),
        (
            "worker_rss_bytes",
            "gauge",
            "Resident memory of this worker process.",
            |_, u| u.map_or(0, |u| u.rss_bytes).to_string(),
        ),
        (
            "worker_cpu_seconds_total",
            "counter",
            "CPU time (user + system) of this worker process.",
            |_, u| (u.map_or(0, |u| u.cpu_usec) as f64 / 1e6).to_string(),
        ),
    ];
    for (name, kind, help, value) in per_worker {
        header(&mut out, name, kind, help);
        for (w, u) in status.workers.iter().zip(usage) {
            let _ = writeln!(
                out,
                "sockherd_{name}{{{app},worker=\"{}\",pid=\"{}\"}} {}",
                w.id,
                w.pid,
                value(w, u.as_ref())
            );
        }
    }
    header(
        &mut out,
        "worker_state",
        "gauge",
        "1 for the state each worker process is in.",
    );
    for w in &status.workers {
        let _ = writeln!(
            out,
            "sockherd_worker_state{{{app},worker=\"{}\",pid=\"{}\",state=\"{}\"}} 1",
            w.id, w.pid, w.state
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP sockherd_{name} {help}\n# TYPE sockherd_{name} {kind}"
    );
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
