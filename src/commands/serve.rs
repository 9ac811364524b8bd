//! `sockherd serve`: wires the path of a connection together and runs it.
//!
//! listening sockets ([`crate::sockets`]) → one accept loop each
//! ([`crate::conn::accept`]) → the [`Dispatcher`] → workers started and kept
//! by the [`Pool`]. Beside it: what systemd hears ([`crate::systemd`]), the
//! D-Bus service ([`crate::bus`]), metrics ([`crate::metrics`]) and the
//! signal handlers ([`crate::signals`]).
//!
//! The way out is told once, in [`serve`], in two stages ([`Shutdown`]):
//! SIGTERM or SIGINT asks the *serving* stage to stop — the accept loops stop
//! accepting (new connections wait in the kernel's queue, or systemd's) and
//! the pool drains its workers — and when the pool is done, the *reporting*
//! stage stops: the last status goes to systemd, the watchdog falls silent and
//! the D-Bus name is released. Each stage waits for every one of its tasks.
//! If every slot gave up, the pool ends by itself and the same two stages run.
//!
//! Under `--policy none` the middle drops out: the sockets go to the workers
//! ([`crate::conn::shared`]) and no accept loop runs. A socket named `metrics`
//! is never a dispatch socket nor passed to workers, whatever the policy.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{spawn_local, LocalSet};

use crate::bus;
use crate::cli::config;
use crate::cli::serve::Serve;
use crate::conn::accept;
use crate::conn::dispatch::Dispatcher;
use crate::conn::node::{self, Shim};
use crate::conn::policy::Policy;
use crate::conn::rundir::RunDir;
use crate::conn::shared::Shared;
use crate::conn::transport::Protocol;
use crate::metrics;
use crate::pool::backoff::Limit;
use crate::pool::carried::CarriedPool;
use crate::pool::launch::Processes;
use crate::pool::orphans;
use crate::pool::report::Handle;
use crate::pool::settings::Configured;
use crate::pool::spawn::{self, Spec};
use crate::pool::usage;
use crate::pool::{Outcome, Pool, Reconfigure, Settings, REAP_GRACE};
use crate::reexec;
use crate::shutdown::Shutdown;
use crate::signals::Signals;
use crate::sockets::activation;
use crate::sockets::listener::{Kind, Listener};
use crate::systemd::notify::Notifier;
use crate::systemd::{status, watchdog};

/// The name of the socket that serves metrics instead of being dispatched.
const METRICS: &str = "metrics";

/// How long a reload waits for the config file to be read.
const REREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything checked before anything starts, so bad input is one clear line.
pub(crate) struct Prepared {
    /// The sockets the manager accepts on (none under `--policy none`).
    listeners: Vec<Listener>,
    /// Under `--policy none`: the sockets the workers accept on themselves.
    shared: Option<Rc<Shared>>,
    /// Where metrics are served, if anywhere.
    metrics: Option<Listener>,
    spec: Spec,
    settings: Settings,
    /// Re-reads the config file for a reload, when one is used.
    reconfigure: Option<Reconfigure>,
    /// Where the control interface goes.
    bus: bus::plan::Plan,
    /// What systemd is told needs to know: when the service counts as
    /// ready, and how long starts, reloads and drains may take.
    notify: status::Settings,
    /// Said once logging works: what is allowed but will not behave as hoped.
    warnings: Vec<String>,
    /// The manager's directory, kept while it runs: a re-exec hands it on.
    rundir: Rc<RunDir>,
    /// When this image was started by a re-exec: what the last one carried.
    adopted: Option<Adopted>,
}

/// What a re-exec carried into this image, besides the sockets.
struct Adopted {
    pool: CarriedPool,
    from_version: String,
    asked_usec: u64,
}

/// Validates the command line (and config file) and takes the sockets.
/// Errors are one line each.
pub(crate) fn prepare(args: &Serve) -> Result<Prepared, String> {
    if let Some(image) = reexec::Image::take() {
        let image = image.map_err(|e| format!("re-exec: cannot take over: {e}"))?;
        return adopt(args, image);
    }
    let rundir = Rc::new(RunDir::create().map_err(|e| e.to_string())?);
    let shim = Rc::new(Shim::write(Rc::clone(&rundir)).map_err(|e| e.to_string())?);
    let (spec, settings) = configure(args, None, find(args)?, &shim)?;
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
    // A socket named `metrics` serves metrics and is never dispatched.
    let (mut metrics, listeners): (Vec<_>, Vec<_>) =
        listeners.into_iter().partition(|l| l.name == METRICS);
    if metrics.len() > 1 {
        return Err("systemd passed more than one socket named `metrics`".into());
    }
    let metrics = match (metrics.pop(), &args.metrics) {
        (Some(_), Some(_)) => {
            return Err(
                "systemd passed a socket named `metrics` and --metrics was given too".into(),
            )
        }
        (Some(passed), None) => Some(passed),
        (None, Some(addr)) => Some(Listener::bind(&addr.clone().named(METRICS))?),
        (None, None) => None,
    };
    if listeners.is_empty() {
        return Err("the only socket is the metrics socket: nothing to dispatch".into());
    }
    if let Some(metrics) = metrics.as_ref().filter(|m| m.kind == Kind::Datagram) {
        return Err(format!(
            "the metrics socket {} is a UDP socket; metrics are served over TCP or a Unix stream socket",
            metrics.shown()
        ));
    }
    if let Some(udp) = listeners.iter().find(|l| l.kind == Kind::Datagram) {
        if settings.policy.dispatches() {
            return Err(format!(
                "the socket {} ({}) is a UDP socket: datagrams are not dispatched; \
                 serve it with --policy none, where the workers receive on it themselves",
                udp.shown(),
                udp.name
            ));
        }
    }
    let notify = notify_settings(args, &settings)?;
    let (listeners, shared) = if settings.policy.dispatches() {
        (listeners, None)
    } else {
        let shared = Shared::new(listeners, Rc::clone(&rundir))
            .map_err(|e| format!("--policy none: {e}"))?;
        (Vec::new(), Some(Rc::new(shared)))
    };
    let mut spec = spec;
    share(&mut spec, &settings, shared.as_ref())?;
    let bus = bus::plan::plan(&args.bus, &spec.app)?;
    let reconfigure = reconfigure(args, &spec.app, shared.as_ref(), &shim);
    let warnings = spawn::outliving(&spec.program).into_iter().collect();
    Ok(Prepared {
        bus,
        notify,
        warnings,
        listeners,
        shared,
        metrics,
        spec,
        settings,
        reconfigure,
        rundir,
        adopted: None,
    })
}

/// What systemd is told needs to know, from the flags and the settings.
fn notify_settings(args: &Serve, settings: &Settings) -> Result<status::Settings, String> {
    let min_ready = args.min_ready.unwrap_or(settings.workers);
    if min_ready == 0 || min_ready > settings.workers {
        return Err(format!(
            "--min-ready {min_ready} must be between 1 and the worker count ({})",
            settings.workers
        ));
    }
    Ok(status::Settings {
        min_ready,
        ready_timeout: settings.ready_timeout,
        drain_timeout: settings.kill_timeout + REAP_GRACE,
        max_restarts: settings.limit.max_restarts,
    })
}

/// How a reload re-reads the config file, when one is used.
fn reconfigure(
    args: &Serve,
    app: &str,
    shared: Option<&Rc<Shared>>,
    shim: &Rc<Shim>,
) -> Option<Reconfigure> {
    args.config.as_ref().map(|_| {
        let args = args.clone();
        let app = app.to_owned();
        let shared = shared.cloned();
        let shim = Rc::clone(shim);
        Box::new(move || {
            let (args, app, shared) = (args.clone(), app.clone(), shared.clone());
            let shim = Rc::clone(&shim);
            Box::pin(async move {
                let found = reread(args.clone()).await?;
                let (mut spec, settings) = configure(&args, Some(&app), found, &shim)?;
                share(&mut spec, &settings, shared.as_ref())?;
                Ok((spec, settings))
            }) as Pin<Box<dyn Future<Output = Configured>>>
        }) as Reconfigure
    })
}

/// Takes over what an earlier image of this manager carried across a
/// re-exec ([`crate::reexec`]): its directory, sockets, spec and pool. The
/// command line is the same; what a reload or a `Scale` changed since the
/// start comes from the image, not from the flags.
fn adopt(args: &Serve, image: reexec::Image) -> Result<Prepared, String> {
    let adopting = |e: String| format!("re-exec: cannot take over: {e}");
    let rundir = Rc::new(RunDir::adopt(image.rundir).map_err(|e| adopting(e.to_string()))?);
    let shim = Rc::new(Shim::write(Rc::clone(&rundir)).map_err(|e| adopting(e.to_string()))?);
    let listeners = image
        .listeners
        .into_iter()
        .map(Listener::adopt)
        .collect::<Result<Vec<_>, _>>()
        .map_err(adopting)?;
    let metrics = image
        .metrics
        .map(Listener::adopt)
        .transpose()
        .map_err(adopting)?;
    let shared = match image.shared {
        Some((carried, made)) => {
            let listeners = carried
                .into_iter()
                .map(Listener::adopt)
                .collect::<Result<Vec<_>, _>>()
                .map_err(adopting)?;
            let shared =
                Shared::new(listeners, Rc::clone(&rundir)).map_err(|e| adopting(e.to_string()))?;
            shared.made_before(made);
            Some(Rc::new(shared))
        }
        None => None,
    };
    let settings = Settings::adopt(&image.pool.settings).map_err(adopting)?;
    let mut pool = image.pool;
    let spec = pool
        .spec
        .take()
        .ok_or_else(|| adopting("the state has no spec".into()))?;
    let spec = Spec::adopt(spec, &shim, shared.as_ref()).map_err(adopting)?;
    let notify = notify_settings(args, &settings)?;
    let bus = bus::plan::plan(&args.bus, &spec.app)?;
    let reconfigure = reconfigure(args, &spec.app, shared.as_ref(), &shim);
    Ok(Prepared {
        bus,
        notify,
        warnings: Vec::new(),
        listeners,
        shared,
        metrics,
        spec,
        settings,
        reconfigure,
        rundir,
        adopted: Some(Adopted {
            pool,
            from_version: image.from_version,
            asked_usec: image.asked_usec,
        }),
    })
}

/// Makes the workers of a `--policy none` app share the sockets: a Node.js
/// cluster worker's `listen()` is answered with the socket itself (Node's
/// `SCHED_NONE`), any other worker inherits them as systemd passes them. It
/// refuses what cannot be: a plain IPC Node.js worker (it takes connections
/// only from the manager), and a reload that moves the manager into or out
/// of the connection path (`shared` is what the manager started with).
fn share(spec: &mut Spec, settings: &Settings, shared: Option<&Rc<Shared>>) -> Result<(), String> {
    match (settings.policy.dispatches(), shared) {
        (true, None) => Ok(()),
        (false, Some(shared)) => match &spec.protocol {
            Protocol::Node(app) if app.mode == node::Mode::Ipc => Err(
                "--policy none: node-ipc workers take their connections from the manager; \
                 run the app as a cluster worker (--protocol node) or with a dispatching \
                 policy (rr, least-conn or ip-hash)"
                    .into(),
            ),
            Protocol::Node(app) => {
                spec.protocol = Protocol::Node(Rc::new(app.sharing(Rc::clone(shared))));
                Ok(())
            }
            _ => {
                spec.protocol = Protocol::Shared(Rc::clone(shared));
                Ok(())
            }
        },
        (_, shared) => Err(format!(
            "policy {} cannot take effect on reload: moving between none and the \
             dispatching policies needs a restart (the manager started with {})",
            settings.policy,
            if shared.is_some() {
                "none"
            } else {
                "a dispatching policy"
            }
        )),
    }
}

/// What configuring takes from the filesystem: the config file, and the
/// worker program it or the flags name, found in `PATH`.
struct Found {
    file: config::Overrides,
    /// The command as given: the program, then its arguments.
    command: Vec<OsString>,
    /// The program, resolved.
    program: PathBuf,
}

/// Reads what [`configure`] needs from the filesystem. It may block (a slow
/// disk, a hung network mount), so a reload runs it off the event loop.
fn find(args: &Serve) -> Result<Found, String> {
    let file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::Overrides::default(),
    };
    let command = file.command.clone().unwrap_or_else(|| args.command.clone());
    let given = command
        .first()
        .ok_or("no worker command: give it after -- (or as `command` in --config)")?;
    let program = spawn::resolve(given)?;
    Ok(Found {
        file,
        command,
        program,
    })
}

/// [`find`] for a reload: on a blocking thread, within [`REREAD_TIMEOUT`].
async fn reread(args: Serve) -> Result<Found, String> {
    let finding = tokio::task::spawn_blocking(move || find(&args));
    match tokio::time::timeout(REREAD_TIMEOUT, finding).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => Err(format!("cannot read the config file: {e}")),
        Err(_) => Err(format!(
            "reading the config file took more than {}s",
            REREAD_TIMEOUT.as_secs()
        )),
    }
}

/// Flags, then the config file over them: what to run and how. `app` is the
/// name fixed at start (a reload cannot rename the app).
fn configure(
    args: &Serve,
    app: Option<&str>,
    found: Found,
    shim: &Rc<Shim>,
) -> Result<(Spec, Settings), String> {
    let Found {
        file,
        command,
        program,
    } = found;
    let (given, rest) = command
        .split_first()
        .ok_or("no worker command: give it after -- (or as `command` in --config)")?;
    let kill_timeout = file.kill_timeout.unwrap_or(args.kill_timeout);
    let protocol = match node::mode(args.node.protocol, given, &program) {
        Some(mode) => Protocol::Node(Rc::new(node::App::new(
            mode,
            args.node.wait_ready,
            args.node.shutdown_message,
            Rc::clone(shim),
        ))),
        None if args.node.wait_ready || args.node.shutdown_message => return Err(
            "--wait-ready and --shutdown-message apply to Node.js workers only (see --protocol)"
                .into(),
        ),
        None => Protocol::Native,
    };
    let app = match (app, &args.name) {
        (Some(app), _) => app.to_owned(),
        (None, Some(name)) => name.clone(),
        (None, None) => program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into()),
    };
    let workers = match file.workers.unwrap_or(args.workers) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    let max_workers = file.max_workers.unwrap_or(args.max_workers);
    if workers > max_workers {
        return Err(format!(
            "{workers} workers is more than --max-workers {max_workers}"
        ));
    }
    let reload_batch = file.reload_batch.unwrap_or(args.reload_batch);
    if reload_batch == 0 {
        return Err("--reload-batch must be at least 1".into());
    }
    let heartbeat_timeout = file.heartbeat_timeout.or(args.heartbeat_timeout);
    Ok((
        Spec {
            app,
            program,
            args: rest.to_vec(),
            heartbeat_interval: heartbeat_timeout.map(|t| t / 2),
            protocol,
        },
        Settings {
            workers,
            max_workers,
            ready_timeout: file.ready_timeout.unwrap_or(args.ready_timeout),
            kill_timeout,
            kill_signal: file.kill_signal.unwrap_or(args.kill_signal),
            limit: Limit {
                max_restarts: file.max_restarts.unwrap_or(args.max_restarts),
                window: file.restart_window.unwrap_or(args.restart_window),
            },
            reload_batch,
            policy: file.policy.unwrap_or(args.policy),
            heartbeat_timeout,
            max_memory: file.max_memory.or(args.max_memory),
        },
    ))
}

impl Prepared {
    pub(crate) fn app(&self) -> &str {
        &self.spec.app
    }
}

/// Runs the cluster until it is told to stop.
pub(crate) fn run(prepared: Prepared, runtime: &tokio::runtime::Runtime) -> ExitCode {
    LocalSet::new().block_on(runtime, serve(prepared))
}

/// The manager's life, from the first accept to the exit status.
async fn serve(prepared: Prepared) -> ExitCode {
    let Prepared {
        listeners,
        shared,
        metrics,
        spec,
        settings,
        reconfigure,
        bus,
        notify,
        warnings,
        rundir,
        adopted,
    } = prepared;
    reexec::image_starts();
    for warning in warnings {
        tracing::warn!(event = "worker-privileged", "{warning}");
    }
    let kept = if adopted.is_some() {
        ", kept across the re-exec"
    } else {
        ""
    };
    for listener in &listeners {
        tracing::info!(
            socket = %listener.local,
            name = %listener.name,
            "listening on {} ({}){kept}",
            listener.shown(),
            listener.name
        );
    }
    for listener in shared.iter().flat_map(|s| s.listeners()) {
        let how = match listener.kind {
            Kind::Stream => "they accept by themselves",
            Kind::Datagram => "they receive by themselves",
        };
        tracing::info!(
            socket = %listener.local,
            name = %listener.name,
            "listening on {} ({}), shared with the workers: {how}",
            listener.shown(),
            listener.name
        );
    }
    let shared = shared.map(|shared| {
        let carried = shared.listeners().iter().map(Listener::carry).collect();
        (carried, shared)
    });
    if let Err(e) = orphans::adopt() {
        tracing::warn!(
            "cannot become the reaper of the workers' orphans ({e}): what a worker \
             starts outside its process group may outlive it"
        );
    }
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Held across a re-exec until the handlers were in place: they are now.
    reexec::release_signals();
    // What serves stops first; what reports on it stops once it has.
    let serving = Shutdown::new();
    let reporting = Shutdown::new();
    let (broken_tx, broken_rx) = mpsc::unbounded_channel();
    let dispatcher = Rc::new(Dispatcher::new(broken_tx));
    dispatcher.set_policy(settings.policy);
    if settings.policy == Policy::LeastConn && matches!(spec.protocol, Protocol::Node(_)) {
        tracing::warn!(
            "least-conn with Node.js workers counts hand-offs, not open connections: \
             Node's cluster protocol does not report closes (see docs/policies.md)"
        );
    }
    // The sockets are known to dispatch before any worker is: a worker
    // taken over in a re-exec comes with the sockets it listens on.
    let carried_listeners = listeners.iter().map(Listener::carry).collect();
    for listener in listeners {
        accept::spawn(listener, Rc::clone(&dispatcher), serving.token());
    }
    let (pool, handle) = match adopted {
        None => {
            tracing::info!(
                event = "starting",
                "starting {} workers ({} protocol, policy {}): {}",
                settings.workers,
                spec.protocol.name(),
                settings.policy,
                spec.program.display()
            );
            Pool::new(
                spec,
                settings,
                reconfigure,
                Rc::clone(&dispatcher),
                broken_rx,
                Box::new(Processes),
            )
        }
        Some(adopted) => {
            let kept = adopted.pool.workers.len();
            match Pool::adopt(
                adopted.pool,
                spec,
                reconfigure,
                Rc::clone(&dispatcher),
                broken_rx,
                Box::new(Processes),
            ) {
                Ok(pool) => {
                    let took = reexec::monotonic_usec().saturating_sub(adopted.asked_usec);
                    tracing::info!(
                        event = "reexec-done",
                        "re-executed: {} → {} in {} ms, {kept} workers kept",
                        adopted.from_version,
                        reexec::version(),
                        took / 1000
                    );
                    pool
                }
                Err(e) => {
                    tracing::error!("re-exec: cannot take over the pool: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };

    let (reexec, asked) = reexec::channel();
    spawn_local(signals.listen(
        serving.trigger(),
        handle.clone(),
        reexec.clone(),
        reporting.token(),
    ));
    // Memory and CPU figures, read off the loop and shared by every reader.
    let usage = Arc::new(usage::Cache::default());
    spawn_local(bus::service::serve(
        bus,
        handle.clone(),
        Arc::clone(&usage),
        reexec,
        reporting.token(),
    ));
    tell_systemd(&handle, notify, &reporting);
    let carrier = reexec::Carrier {
        binary: own_binary(),
        pool: handle.clone(),
        dispatcher: Rc::clone(&dispatcher),
        listeners: carried_listeners,
        shared,
        metrics: metrics.as_ref().map(Listener::carry),
        rundir,
    };
    spawn_local(reexec::run(carrier, asked, serving.token()));
    if let Some(listener) = metrics {
        spawn_local(metrics::serve(
            listener,
            Rc::clone(&dispatcher),
            handle.clone(),
            usage,
            serving.token(),
        ));
    }
    let outcome = spawn_local(pool.run(serving.token())).await;
    serving.shutdown().await;
    drop(handle);
    reporting.shutdown().await;
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

/// The binary at the manager's path on disk: what a re-exec runs (after an
/// upgrade, the new file at the same path).
fn own_binary() -> PathBuf {
    let exe =
        std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    // A file replaced since the start shows as `PATH (deleted)`.
    match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// Starts telling systemd about the pool, if systemd listens (`NOTIFY_SOCKET`),
/// and the watchdog heartbeat, if systemd asked for one (`WATCHDOG_USEC`).
fn tell_systemd(pool: &Handle, settings: status::Settings, stage: &Shutdown) {
    let interval = watchdog::from_env();
    let Some(notifier) = Notifier::from_env() else {
        if interval.is_some() {
            tracing::warn!(
                event = "watchdog-unavailable",
                "WATCHDOG_USEC is set but there is no usable NOTIFY_SOCKET; no watchdog heartbeats"
            );
        }
        return;
    };
    let notifier = Rc::new(notifier);
    if let Some(interval) = interval {
        spawn_local(watchdog::run(
            pool.clone(),
            Rc::clone(&notifier),
            interval,
            stage.token(),
        ));
    }
    spawn_local(status::run(pool.clone(), notifier, settings, stage.token()));
}
