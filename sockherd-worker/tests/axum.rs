//! `axum::serve` over the listener (feature `axum`), a fake manager at the
//! other end of the channel: requests are served with the client's address,
//! and the manager's `SHUTDOWN=1` drains gracefully — the request in flight
//! finishes, and so does the first request of a connection handed over just
//! before the shutdown, which had not sent it yet.
#![cfg(feature = "axum")]

mod fake;

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fake::{channel, tcp_pair, PATIENCE};
use sockherd_worker::{Listener, PeerAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

/// Reads a whole response (the server closes after it) and returns its body.
async fn response(mut client: TcpStream) -> String {
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, client.read_to_end(&mut raw))
        .await
        .expect("a response in time")
        .expect("read the response");
    let text = String::from_utf8(raw).expect("a text response");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:?}");
    let (_, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    body.to_owned()
}

#[tokio::test]
async fn axum_serves_and_drains_on_shutdown() {
    let (manager, worker) = channel();
    let listener = Listener::from_fd(worker).unwrap();
    listener.ready().unwrap();
    assert_eq!(manager.recv().await, "READY=1");
    let app = Router::new()
        .route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<PeerAddr>| async move { format!("hello {peer}") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        );
    let shutdown = listener.shutdown_signal();
    let app = app.into_make_service_with_connect_info::<PeerAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });

    let (mut client, conn) = tcp_pair().await;
    let me = client.local_addr().unwrap();
    manager.hand_over("http", conn);
    client.write_all(REQUEST).await.unwrap();
    assert_eq!(response(client).await, format!("hello {me}"));
    manager.closed(1).await;

    // A slow request in flight, and a connection whose request is not sent yet.
    let (mut slow, conn) = tcp_pair().await;
    manager.hand_over("http", conn);
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (mut late, conn) = tcp_pair().await;
    manager.hand_over("http", conn);
    manager.send("SHUTDOWN=1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    late.write_all(REQUEST).await.unwrap();

    assert_eq!(response(slow).await, "slow");
    assert!(response(late).await.starts_with("hello 127.0.0.1:"));
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("axum::serve ends after the drain")
        .expect("the server task")
        .expect("axum::serve");
    manager.closed(2).await;
}
