//! Signals: SIGTERM and SIGINT ask the pool to drain and stop.
//!
//! systemd stops a service with SIGTERM to the manager alone (`KillMode=mixed`);
//! a terminal's Ctrl-C sends SIGINT to the manager alone too, because every
//! worker leads its own process group. Either way the manager runs the ordered
//! drain in [`crate::pool`]. A second signal during the drain changes nothing:
//! the kill timeout already bounds it.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::spawn_local;

use crate::pool::Request;

/// Installs the handlers and forwards each signal to the pool as a [`Request`].
pub fn listen(requests: mpsc::UnboundedSender<Request>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    spawn_local(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                event = "stop-requested",
                "{name} received; draining workers"
            );
            if requests.send(Request::Shutdown).is_err() {
                return;
            }
        }
    });
    Ok(())
}
