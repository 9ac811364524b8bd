//! The listener over a real socket pair, a fake manager at the other end:
//! connections arrive with their names and read and write, each reports its
//! close, and `SHUTDOWN=1` ends `accept` after the queued connections.

mod fake;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use fake::{channel, tcp_pair, PATIENCE};
use sockherd_worker::{Connection, Listener, PeerAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener on a new channel, and the fake manager at its other end.
fn listener() -> (fake::Manager, Listener) {
    let (manager, worker) = channel();
    (
        manager,
        Listener::from_fd(worker).expect("take the channel"),
    )
}

/// The next connection, which must come.
async fn next(listener: &Listener) -> Connection {
    tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("a connection in time")
        .expect("accept")
        .expect("a connection, not the end")
}

#[tokio::test]
async fn a_connection_arrives_with_its_name_and_reads_and_writes() {
    let (manager, listener) = listener();
    let (mut client, server) = tcp_pair().await;
    manager.hand_over("http", server);

    let mut conn = next(&listener).await;
    assert_eq!(conn.socket_name(), "http");
    let Ok(PeerAddr::Tcp(peer)) = conn.peer_addr() else {
        panic!("a TCP peer, got {:?}", conn.peer_addr());
    };
    assert_eq!(peer, client.local_addr().unwrap());
    assert!(conn.as_tcp().is_some() && conn.as_unix().is_none());

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    conn.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn a_unix_connection_is_one() {
    let (manager, listener) = listener();
    let (client, server) = StdUnixStream::pair().unwrap();
    manager.hand_over("admin", server);

    let mut conn = next(&listener).await;
    assert_eq!(conn.socket_name(), "admin");
    assert!(matches!(conn.peer_addr(), Ok(PeerAddr::Unix(_))));
    assert_eq!(conn.peer_addr().unwrap().to_string(), "(unnamed)");
    let mut client = tokio::net::UnixStream::from_std({
        client.set_nonblocking(true).unwrap();
        client
    })
    .unwrap();
    conn.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi");

    let conn = conn
        .into_tcp()
        .expect_err("a Unix connection is no TCP one");
    let (_stream, report) = conn.into_unix().expect("a Unix connection");
    assert_eq!(manager.try_recv(), None);
    drop(report);
    manager.closed(1).await;
}

#[tokio::test]
async fn dropping_a_connection_reports_it_before_closing_it() {
    let (manager, listener) = listener();
    let (mut client, server) = tcp_pair().await;
    manager.hand_over("http", server);
    let conn = next(&listener).await;
    assert_eq!(manager.try_recv(), None, "nothing to report yet");

    drop(conn);
    // The client sees the end only after the manager was told.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(manager.try_recv().as_deref(), Some("CLOSED=1"));
}

#[tokio::test]
async fn into_tcp_reports_when_its_close_report_is_dropped() {
    let (manager, listener) = listener();
    let (mut client, server) = tcp_pair().await;
    manager.hand_over("http", server);

    let conn = next(&listener).await;
    let (mut stream, report) = conn.into_tcp().expect("a TCP connection");
    stream.write_all(b"raw").await.unwrap();
    let mut buf = [0u8; 3];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"raw");
    drop(stream);
    assert_eq!(manager.try_recv(), None, "the stream alone reports nothing");
    drop(report);
    manager.closed(1).await;
}

#[tokio::test]
async fn shutdown_ends_accept_after_the_queued_connections() {
    let (manager, listener) = listener();
    let (_a, a) = tcp_pair().await;
    let (_b, b) = tcp_pair().await;
    manager.hand_over("first", a);
    manager.hand_over("second", b);
    manager.send("SHUTDOWN=1");

    tokio::time::timeout(PATIENCE, listener.shutdown_requested())
        .await
        .expect("the shutdown request is seen");
    assert!(listener.is_shutting_down());
    assert_eq!(next(&listener).await.socket_name(), "first");
    assert_eq!(next(&listener).await.socket_name(), "second");
    assert!(listener.accept().await.unwrap().is_none());
    assert!(
        listener.accept().await.unwrap().is_none(),
        "and it stays so"
    );
    manager.closed(2).await;
}

#[tokio::test]
async fn the_manager_going_away_ends_accept() {
    let (manager, listener) = listener();
    drop(manager);
    let end = tokio::time::timeout(PATIENCE, listener.accept()).await;
    assert!(end.expect("accept ends").unwrap().is_none());
    assert!(listener.is_shutting_down());
}

#[tokio::test]
async fn the_worker_speaks_to_the_manager() {
    let (manager, listener) = listener();
    listener.ready().unwrap();
    assert_eq!(manager.recv().await, "READY=1");
    listener.heartbeat().unwrap();
    assert_eq!(manager.recv().await, "WATCHDOG=1");
    listener.notify("STATUS=warm").unwrap();
    assert_eq!(manager.recv().await, "STATUS=warm");
    listener.stopping().unwrap();
    assert_eq!(manager.recv().await, "STOPPING=1");
    // from_fd reads no SOCKHERD_HEARTBEAT_USEC: no heartbeats by themselves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(manager.try_recv(), None);
}

#[tokio::test]
async fn a_connection_without_its_descriptor_is_an_error_and_reported() {
    let (manager, listener) = listener();
    manager.send("CONN=http");
    let (_client, server) = tcp_pair().await;
    manager.hand_over("http", server);

    let lost = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("accept answers")
        .expect_err("a connection without its descriptor");
    assert!(
        lost.to_string().contains("without its descriptor"),
        "{lost}"
    );
    // The manager counted it as handed over: it hears it is gone.
    manager.closed(1).await;
    assert_eq!(next(&listener).await.socket_name(), "http");
}

#[tokio::test]
async fn other_messages_are_ignored() {
    let (manager, listener) = listener();
    manager.send("FUTURE=1\n");
    manager.send("");
    let (_client, server) = tcp_pair().await;
    manager.hand_over("http", server);
    assert_eq!(next(&listener).await.socket_name(), "http");
}

#[tokio::test]
async fn a_stream_socket_is_no_channel() {
    let (worker, _other) = StdUnixStream::pair().unwrap();
    let err = Listener::from_fd(OwnedFd::from(worker)).expect_err("refused");
    assert!(err.to_string().contains("not SOCK_SEQPACKET"), "{err}");
}

#[test]
fn a_listener_needs_a_runtime() {
    let (_manager, worker) = channel();
    let err = Listener::from_fd(worker).expect_err("refused");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn the_shutdown_signal_waits_for_new_connections_to_be_read() {
    let (manager, listener) = listener();
    let (mut client, server) = tcp_pair().await;
    manager.hand_over("http", server);
    manager.send("SHUTDOWN=1");
    let mut signal = Box::pin(listener.shutdown_signal());

    listener.shutdown_requested().await;
    let pending = tokio::time::timeout(Duration::from_millis(100), &mut signal).await;
    assert!(pending.is_err(), "a connection has not been accepted yet");

    let mut conn = next(&listener).await;
    assert!(listener.accept().await.unwrap().is_none());
    let pending = tokio::time::timeout(Duration::from_millis(100), &mut signal).await;
    assert!(pending.is_err(), "the new connection has not been read yet");

    client.write_all(b"GET /").await.unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).await.unwrap();
    tokio::time::timeout(Duration::from_millis(500), signal)
        .await
        .expect("everything accepted is read: the drain can start");
}

#[tokio::test]
async fn the_shutdown_signal_gives_a_silent_client_a_second() {
    let (manager, listener) = listener();
    let (_client, server) = tcp_pair().await;
    manager.hand_over("http", server);
    manager.send("SHUTDOWN=1");
    let signal = listener.shutdown_signal();
    let _conn = next(&listener).await;
    assert!(listener.accept().await.unwrap().is_none());

    let start = std::time::Instant::now();
    tokio::time::timeout(PATIENCE, signal)
        .await
        .expect("the signal comes anyway");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_shutdown_signal_resolves_when_the_listener_is_dropped() {
    let (_manager, listener) = listener();
    let signal = listener.shutdown_signal();
    drop(listener);
    tokio::time::timeout(PATIENCE, signal)
        .await
        .expect("no listener, nothing to wait for");
}

#[tokio::test]
async fn version_2_takes_many_connections_in_one_message_and_reports_closes_as_asked() {
    let (manager, worker) = channel();
    let listener = Listener::from_fd_speaking(worker, 2).expect("take the channel");
    listener.ready().unwrap();
    assert_eq!(manager.recv().await, "READY=1\nPROTOCOL=2");

    let (client_a, a) = tcp_pair().await;
    let (client_b, b) = tcp_pair().await;
    let (_c, c) = StdUnixStream::pair().unwrap();
    manager.hand_over_many(vec![
        ("http", a.into()),
        ("http", b.into()),
        ("admin", c.into()),
    ]);
    let first = next(&listener).await;
    let second = next(&listener).await;
    let third = next(&listener).await;
    // In the order of the lines, each with its own descriptor.
    let names = [
        first.socket_name(),
        second.socket_name(),
        third.socket_name(),
    ];
    assert_eq!(names, ["http", "http", "admin"]);
    let peer = |conn: &Connection| conn.as_tcp().map(|s| s.peer_addr().unwrap());
    assert_eq!(peer(&first), Some(client_a.local_addr().unwrap()));
    assert_eq!(peer(&second), Some(client_b.local_addr().unwrap()));
    assert!(third.as_unix().is_some());

    // Lazy: closes are gathered, and go together within a second.
    manager.send("CLOSED_REPORTS=lazy");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first);
    drop(second);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(manager.try_recv(), None, "a lazy report went at once");
    assert_eq!(manager.recv().await, "CLOSED=2");

    // Each: at once again.
    manager.send("CLOSED_REPORTS=each");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(third);
    assert_eq!(manager.try_recv().as_deref(), Some("CLOSED=1"));
}

#[tokio::test]
async fn closes_gathered_lazily_go_at_once_when_the_manager_asks_for_each() {
    let (manager, worker) = channel();
    let listener = Listener::from_fd_speaking(worker, 2).expect("take the channel");
    manager.send("CLOSED_REPORTS=lazy");
    let (_client, server) = tcp_pair().await;
    manager.hand_over("http", server);
    drop(next(&listener).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(manager.try_recv(), None);
    manager.send("CLOSED_REPORTS=each");
    let started = std::time::Instant::now();
    assert_eq!(manager.recv().await, "CLOSED=1");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the gathered close waited"
    );
}
