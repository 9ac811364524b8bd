//! Signals: SIGTERM and SIGINT drain the pool and stop it; SIGHUP reloads it.
//!
//! systemd stops a service with SIGTERM to the manager alone (`KillMode=mixed`);
//! a terminal's Ctrl-C sends SIGINT to the manager alone too, because every
//! worker leads its own process group. Either way the manager runs the ordered
//! drain in [`crate::pool`]. A second signal during the drain changes nothing:
//! the kill timeout already bounds it. SIGHUP starts a rolling reload, as
//! `kill -HUP $MAINPID` has always meant for daemons.

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::spawn_local;

use crate::report::{Handle, Request};

/// Installs the handlers and turns each signal into a pool request.
pub fn listen(pool: Handle) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    spawn_local(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!(event = "reload-requested", "SIGHUP received; reloading");
                    let pool = pool.clone();
                    spawn_local(async move {
                        if let Err(e) = pool.ask(Request::Reload).await {
                            tracing::error!("reload after SIGHUP: {e}");
                        }
                    });
                    continue;
                }
            };
            tracing::info!(
                event = "stop-requested",
                "{name} received; draining workers"
            );
            if pool.requests.send(Request::Shutdown).is_err() {
                return;
            }
        }
    });
    Ok(())
}
