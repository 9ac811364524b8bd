//! A minimal HTTP/1.1 worker: the example app, and the worker the tests and
//! benchmarks drive.
//!
//! Every response names the worker that served it — `hello from worker 2 (pid
//! 4242)` — so round-robin is visible with curl. `GET /slow?ms=N` answers after
//! N milliseconds, to have a request in flight during a drain. Keep-alive is
//! honoured (HTTP/1.1 by default, `Connection: close` ends it).
//!
//! On shutdown it stops taking connections, finishes the requests it has,
//! closes idle keep-alive connections, and exits 0.
//!
//! The HTTP handling lives in `common/http.rs`, shared with `hello_shared`
//! (the shared-accept baseline of `bench/dispatch.sh`).
//!
//! Run it under sockherd: `sockherd serve --listen 127.0.0.1:8080 -- target/release/examples/hello`.

use std::sync::Arc;

use sockherd_worker::Listener;
use tokio::task::JoinSet;

#[path = "common/http.rs"]
mod http;

fn main() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let listener = Arc::new(Listener::from_env()?);
    let body = http::body();
    listener.ready()?;
    let mut connections = JoinSet::new();
    while let Some(conn) = listener.accept().await? {
        connections.spawn(http::handle(conn, Arc::clone(&listener), Arc::clone(&body)));
        while connections.try_join_next().is_some() {}
    }
    // Shutting down: finish what we have.
    while connections.join_next().await.is_some() {}
    Ok(())
}
