//! `axum::serve` support (feature `axum`): [`Listener`] is an axum 0.8
//! `serve::Listener`, so `axum::serve(listener, app)` serves the connections
//! the manager hands over, and [`PeerAddr`] is its connect info, for
//! `ConnectInfo<PeerAddr>` in handlers. Its `accept` cannot fail, so it deals
//! with errors itself, and stays pending after the manager's shutdown
//! request, leaving the end of `axum::serve` to [`Listener::shutdown_signal`].

use std::io;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::{Connection, Listener, PeerAddr};

/// How long `accept` pauses after an error (out of descriptors, out of
/// memory), as axum's own listeners do, so that a worker in trouble does not
/// spin, and its channel fills and turns the manager to other workers.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Connection, PeerAddr) {
        loop {
            match Listener::accept(self).await {
                // A client that has already reset its connection has no
                // address; dropping the connection reports it closed.
                Ok(Some(conn)) => match conn.peer_addr() {
                    Ok(addr) => return (conn, addr),
                    Err(_) => continue,
                },
                // Shutting down: nothing more comes, and only the shutdown
                // signal ends axum::serve.
                Ok(None) => std::future::pending::<()>().await,
                // The connection is lost (and reported), and so may be the
                // next few: the worker's trouble, not a client's. (After an
                // error on the channel itself, None follows.)
                Err(_) => tokio::time::sleep(ERROR_PAUSE).await,
            }
        }
    }

    /// Fails: a worker has no address of its own, the manager listens (on
    /// one socket or several). [`Connection::socket_name`] tells them apart.
    fn local_addr(&self) -> io::Result<PeerAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a sockherd worker listens on no address of its own: the manager does",
        ))
    }
}

/// `app.into_make_service_with_connect_info::<PeerAddr>()` gives handlers the
/// client's address as `ConnectInfo<PeerAddr>`.
impl Connected<IncomingStream<'_, Listener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> PeerAddr {
        stream.remote_addr().clone()
    }
}
