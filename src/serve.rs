//! `sockherd serve`: wires the path of a connection together and runs it.
//!
//! listening sockets ([`crate::activation`] or `--listen`) → one accept loop
//! each ([`crate::accept`]) → the [`Dispatcher`] → workers started and kept
//! by the [`Pool`]. Signals become pool requests ([`crate::shutdown`]). On
//! the way out the order is explicit: stop accepting, drain the workers, exit.

use std::process::ExitCode;
use std::rc::Rc;

use tokio::sync::{mpsc, watch};
use tokio::task::{spawn_local, LocalSet};

use crate::backoff::Limit;
use crate::cli::Serve;
use crate::dispatch::Dispatcher;
use crate::listener::Listener;
use crate::pool::{Outcome, Pool, Settings};
use crate::spawn::{self, Spec};
use crate::{accept, activation, notify, shutdown};

/// Everything checked before anything starts, so bad input is one clear line.
pub struct Prepared {
    listeners: Vec<Listener>,
    spec: Spec,
    settings: Settings,
    notify: notify::Settings,
}

/// Validates the command line and takes the sockets. Errors are one line each.
pub fn prepare(args: &Serve) -> Result<Prepared, String> {
    let passed = activation::take().map_err(|e| format!("socket activation: {e}"))?;
    let listeners =
        match (passed, args.listen.is_empty()) {
            (Some(_), false) => return Err(
                "systemd passed listening sockets and --listen was given too; use one or the other"
                    .into(),
            ),
            (Some(passed), true) => passed,
            (None, false) => args
                .listen
                .iter()
                .map(Listener::bind)
                .collect::<Result<Vec<_>, _>>()?,
            (None, true) => return Err(
                "no listening sockets: run under systemd socket activation or give --listen ADDR"
                    .into(),
            ),
        };
    let (program, rest) = args
        .command
        .split_first()
        .ok_or("no worker command given after --")?;
    let program = spawn::resolve(program)?;
    let app = match &args.name {
        Some(name) => name.clone(),
        None => program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into()),
    };
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    if workers > args.max_workers {
        return Err(format!(
            "--workers {workers} is more than --max-workers {}",
            args.max_workers
        ));
    }
    let min_ready = args.min_ready.unwrap_or(workers);
    if min_ready == 0 || min_ready > workers {
        return Err(format!(
            "--min-ready {min_ready} must be between 1 and the worker count ({workers})"
        ));
    }
    if args.reload_batch == 0 {
        return Err("--reload-batch must be at least 1".into());
    }
    Ok(Prepared {
        listeners,
        spec: Spec {
            app,
            program,
            args: rest.to_vec(),
        },
        settings: Settings {
            workers,
            ready_timeout: args.ready_timeout,
            kill_timeout: args.kill_timeout,
            limit: Limit {
                max_restarts: args.max_restarts,
                window: args.restart_window,
            },
            max_workers: args.max_workers,
            reload_batch: args.reload_batch,
            policy: "rr".to_owned(),
        },
        notify: notify::Settings {
            min_ready,
            ready_timeout: args.ready_timeout,
            kill_timeout: args.kill_timeout,
            max_restarts: args.max_restarts,
        },
    })
}

impl Prepared {
    pub fn app(&self) -> &str {
        &self.spec.app
    }
}

/// Runs the cluster until it is told to stop.
pub fn run(prepared: Prepared) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sockherd: cannot start the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    LocalSet::new().block_on(&runtime, serve(prepared))
}

async fn serve(prepared: Prepared) -> ExitCode {
    let Prepared {
        listeners,
        spec,
        settings,
        notify,
    } = prepared;
    for listener in &listeners {
        tracing::info!(socket = %listener.local, name = %listener.name, "listening on {} ({})", listener.local, listener.name);
    }
    let (broken_tx, broken_rx) = mpsc::unbounded_channel();
    let dispatcher = Rc::new(Dispatcher::new(broken_tx));
    tracing::info!(
        event = "starting",
        "starting {} workers: {}",
        settings.workers,
        spec.program.display()
    );
    let (pool, handle) = Pool::new(spec, settings, Rc::clone(&dispatcher), broken_rx);
    if let Err(e) = shutdown::listen(handle.clone()) {
        tracing::error!("cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let notifying = notify::spawn(&handle, notify);

    let (stop_tx, stop_rx) = watch::channel(false);
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            spawn_local(accept::run(
                Rc::new(listener),
                Rc::clone(&dispatcher),
                stop_rx.clone(),
            ))
        })
        .collect();

    let pool = spawn_local(pool.run(stop_tx));
    let outcome = pool.await;
    for task in accepting {
        let _ = task.await;
    }
    // STOPPING=1 and the last status line go out before the process does.
    let _ = notifying.await;
    match outcome {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::AllGaveUp) => {
            tracing::error!(event = "gave-up", "every worker gave up; exiting");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("the pool failed: {e}");
            ExitCode::FAILURE
        }
    }
}
