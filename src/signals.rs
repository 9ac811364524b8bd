//! Signals: SIGTERM and SIGINT drain the pool and stop it; SIGHUP reloads it.
//!
//! systemd stops a service with SIGTERM to the manager alone (`KillMode=mixed`);
//! a terminal's Ctrl-C sends SIGINT to the manager alone too, because every
//! worker leads its own process group. Either way the manager runs the ordered
//! drain ([`crate::commands::serve`]). A second signal during the drain
//! changes nothing: the kill timeout already bounds it. SIGHUP starts a
//! rolling reload, as `kill -HUP $MAINPID` has always meant for daemons.
//! SIGUSR2 re-executes the manager from its binary on disk, keeping its
//! workers ([`crate::reexec`]), as it means for nginx and einhorn.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinSet;

use crate::pool::report::{Handle, Request};
use crate::reexec;
use crate::shutdown::{Token, Trigger};

/// The manager's signal handlers, installed but not yet listening.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    /// Installs the handlers: from here on these signals no longer kill the
    /// process with their default action.
    pub(crate) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Turns SIGTERM and SIGINT into `stop`, SIGHUP into a reload of
    /// `pool` and SIGUSR2 into a re-exec, until `done` is requested.
    pub(crate) async fn listen(
        mut self,
        stop: Trigger,
        pool: Handle,
        reexec: reexec::Trigger,
        mut done: Token,
    ) {
        // Reloads asked for by SIGHUP, each waiting for its outcome to log it.
        let mut reloads = JoinSet::new();
        loop {
            let name = tokio::select! {
                _ = done.requested() => break,
                Some(_) = reloads.join_next() => continue,
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => {
                    tracing::info!(event = "reload-requested", "SIGHUP received; reloading");
                    let pool = pool.clone();
                    reloads.spawn_local(async move {
                        if let Err(e) = pool.ask(Request::Reload).await {
                            tracing::error!("reload after SIGHUP: {e}");
                        }
                    });
                    continue;
                }
                _ = self.usr2.recv() => {
                    tracing::info!(event = "reexec-requested", "SIGUSR2 received; re-executing");
                    reexec.fire();
                    continue;
                }
            };
            tracing::info!(
                event = "stop-requested",
                "{name} received; draining workers"
            );
            stop.request();
        }
        // The pool is gone by now: whatever reload was still waiting ends.
        while reloads.join_next().await.is_some() {}
    }
}
