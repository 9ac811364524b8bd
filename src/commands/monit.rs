//! `sockherd monit [APP]`: a live, full-screen view of every app on the bus
//! (or one), PM2's `pm2 monit` for sockherd, refreshed every second.
//!
//! It is a client of the D-Bus interface like `status`, on the system bus,
//! the session bus (`--user`) or a bus at an address (`--address`). Four
//! things arrive, and the screen is drawn again after each:
//! - a reading of every manager, every second ([`reading`]), taken on a
//!   task of its own so that a manager slow to answer never holds up the
//!   keys;
//! - the managers' signals ([`heard`]), which fill the events pane;
//! - keys ([`keys`]): arrows select, `r` reloads the selected app, `+`/`-`
//!   scale it, `R` replaces the selected worker, `q` quits;
//! - the outcome of a key's call ([`act`]), refusals included, as a line.
//!
//! [`view`] keeps what is shown and computes what takes two readings;
//! [`draw`] draws it; [`screen`] sets the terminal up and puts it back, and
//! refuses, pointing to `status`, where there is no terminal to draw on.

mod act;
mod draw;
mod heard;
mod keys;
mod reading;
mod screen;
mod view;

use std::future::poll_fn;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use zbus::export::futures_core::Stream;
use zbus::MessageStream;

use act::Change;
use keys::Key;
use reading::Reader;
use screen::Screen;
use view::View;

use super::control::client::Client;
use crate::cli::monit::MonitArgs;
use crate::print::errln;

/// How often the managers are read.
const EVERY: Duration = Duration::from_secs(1);

/// Runs `sockherd monit`.
pub(crate) fn run(args: &MonitArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    if let Err(why) = screen::usable() {
        errln!("sockherd: {why}");
        return ExitCode::from(2);
    }
    match runtime.block_on(monit(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("sockherd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn monit(args: &MonitArgs) -> Result<(), String> {
    let client = Arc::new(Client::connect(&args.target).await?);
    // An app that is not there is said before the screen is taken over.
    if let Some(app) = &args.app {
        client.resolve(app).await?;
    }
    let mut signals = heard::subscribe(client.connection())
        .await
        .map_err(|e| format!("cannot watch the signals on {}: {e}", client.bus))?;
    let mut terminate = signal(SignalKind::terminate())
        .and_then(|term| Ok((term, signal(SignalKind::hangup())?)))
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let mut readings = start_reading(Arc::clone(&client), args.app.as_deref());
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut view = View::new(client.bus.to_string());
    let mut screen = Screen::enter()?;
    let mut keys = keys::start();
    loop {
        screen
            .terminal
            .draw(|frame| draw::draw(frame, &view))
            .map_err(|e| format!("cannot draw: {e}"))?;
        tokio::select! {
            key = keys.recv() => match key {
                None | Some(Key::Quit) => break,
                Some(Key::Move(by)) => view.select(by),
                Some(Key::Redraw) => {}
                Some(Key::Reload) => ask(&client, &mut view, &done_tx, |_| Some(Change::Reload)),
                Some(Key::Scale(by)) => ask(&client, &mut view, &done_tx, |_| Some(Change::ScaleBy(by))),
                Some(Key::RestartWorker) => ask(&client, &mut view, &done_tx, |worker| {
                    worker.map(Change::RestartWorker)
                }),
            },
            reading = readings.recv() => match reading {
                Some(reading) => view.update(reading),
                None => break,
            },
            message = next(&mut signals) => {
                if let Some((sender, heard)) = message.as_ref().and_then(heard::decode) {
                    view.heard(&sender, heard);
                }
            }
            Some(outcome) = done.recv() => {
                view.status = Some(format!("{}: {}", outcome.app, outcome.text));
            }
            _ = terminate.0.recv() => break,
            _ = terminate.1.recv() => break,
        }
    }
    drop(screen);
    Ok(())
}

/// Reads the managers every [`EVERY`] on a task of its own.
fn start_reading(client: Arc<Client>, app: Option<&str>) -> mpsc::Receiver<reading::Reading> {
    let (tx, rx) = mpsc::channel(1);
    let mut reader = Reader::new(client, app);
    tokio::spawn(async move {
        loop {
            let reading = reader.read().await;
            if tx.send(reading).await.is_err() {
                return;
            }
            tokio::time::sleep(EVERY).await;
        }
    });
    rx
}

/// Starts the change `which` makes of the selection (given the selected
/// worker, if a worker is selected), or says why there is none.
fn ask(
    client: &Arc<Client>,
    view: &mut View,
    done: &mpsc::UnboundedSender<act::Outcome>,
    which: impl FnOnce(Option<u32>) -> Option<Change>,
) {
    let Some(target) = view.target() else {
        view.status = Some("no app to act on".into());
        return;
    };
    let Some(change) = which(target.worker) else {
        view.status = Some(format!(
            "{}: select a worker (↑↓) to restart it",
            target.app
        ));
        return;
    };
    view.status = Some(change.doing(&target.app));
    act::start(
        Arc::clone(client),
        target.bus_name,
        target.app,
        change,
        done.clone(),
    );
}

/// The next signal; `None` once the subscription ends (then never again).
async fn next(signals: &mut MessageStream) -> Option<zbus::Message> {
    poll_fn(|cx| Pin::new(&mut *signals).poll_next(cx))
        .await
        .and_then(Result::ok)
}
