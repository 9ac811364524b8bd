//! The hello worker written with axum: `sockherd_worker::Listener` goes
//! straight into `axum::serve` (the crate's `axum` feature).
//!
//! `GET /` answers `hello from worker 2 (pid 4242)`, like `hello`;
//! `GET /slow?ms=N` answers the same after N milliseconds (at most a minute),
//! to have a request in flight during a drain. When the manager asks the
//! worker to shut down, axum stops accepting, finishes the requests it has
//! (and the first request of connections handed over just before), closes
//! idle keep-alive connections, and the worker exits 0.
//!
//! Run it under sockherd: `sockherd serve --listen 127.0.0.1:8080 -- target/release/examples/axum_hello`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Router;
use sockherd_worker::Listener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listener = Listener::from_env()?;
    let body = format!(
        "hello from worker {} (pid {})\n",
        sockherd_worker::worker_id().map_or("?".into(), |id| id.to_string()),
        std::process::id()
    );
    let app = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow))
        .with_state(body);
    // READY=1 and the shutdown signal first: axum::serve takes the listener.
    listener.ready()?;
    let shutdown = listener.shutdown_signal();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn hello(State(body): State<String>) -> String {
    body
}

async fn slow(State(body): State<String>, RawQuery(query): RawQuery) -> String {
    let ms = query
        .as_deref()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    body
}
