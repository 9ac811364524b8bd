//! How a Node.js worker is asked to stop: once the last connection handed to
//! it has settled, `'shutdown'` (with `--shutdown-message`), then the
//! cluster `disconnect` (or, for a plain IPC child, the end of its channel),
//! and SIGTERM if it is still running a while later. The pool SIGKILLs at the
//! kill timeout.

use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{shutdown, Shutdown};
use serde_json::Map;
use tokio::task::spawn_local;
use tokio::time::{sleep, sleep_until};

use super::app::Mode;
use super::link::Link;
use super::wire;

/// How long after the app took its last connection a stop waits before it
/// closes the app's servers: long enough for the app to read that
/// connection's request, since Node's `server.close()` drops connections on
/// which no request has arrived yet.
const SETTLE: Duration = Duration::from_millis(100);

/// How often a stop checks whether the last hand-off has been answered.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// How long a worker that closed its channel after a stop request has to exit
/// by itself before it gets SIGTERM (something other than its servers, a
/// timer say, keeps it alive).
const EXIT_GRACE: Duration = Duration::from_secs(1);

impl Link {
    /// Starts a graceful stop: once the last connection handed over has
    /// settled, `'shutdown'` (with `--shutdown-message`), then the cluster
    /// `disconnect` (the app closes its servers, finishes its connections and
    /// exits) or, for a plain IPC child, the end of its channel; SIGTERM if it
    /// is still running a while later. The pool SIGKILLs at the kill timeout.
    pub(crate) fn ask_to_stop(link: &Rc<Link>) {
        {
            let mut st = link.state.borrow_mut();
            if st.stop_requested {
                return;
            }
            st.stop_requested = true;
        }
        spawn_local(stop(Rc::clone(link)));
    }

    /// The stop messages themselves (see [`Link::ask_to_stop`]).
    fn send_stop(&self) {
        let mut st = self.state.borrow_mut();
        if self.app.shutdown_message {
            self.send_line(&mut st, wire::shutdown());
        }
        match self.app.mode {
            Mode::Cluster if !st.leaving => {
                let mut message = Map::new();
                message.insert("act".into(), "disconnect".into());
                let seq = st.next_seq();
                self.send_line(&mut st, &wire::cluster(message, seq));
            }
            Mode::Cluster => {}
            Mode::Ipc => {
                // End of file tells the child no more connections will come:
                // it leaves once those it has are done. Not before our last
                // bytes are out, though.
                if st.output.is_empty() && !st.dead {
                    let _ = shutdown(self.raw_fd(), Shutdown::Write);
                }
            }
        }
    }
}

/// The stop sequence of one worker, from the request to SIGTERM.
async fn stop(link: Rc<Link>) {
    let asked = Instant::now();
    let term_at = asked + link.app.term_after;
    loop {
        let wait_until = {
            let st = link.state.borrow();
            let now = Instant::now();
            if st.dead {
                None
            } else if st.handoff.is_some() || !st.output.is_empty() {
                Some(now + SETTLE_POLL)
            } else {
                st.last_taken.map(|t| t + SETTLE).filter(|t| *t > now)
            }
        };
        match wait_until {
            Some(at) if at < term_at => sleep_until(at.into()).await,
            _ => break,
        }
    }
    link.send_stop();
    let exited_late = async {
        let closed = link.state.borrow().closed;
        if !closed {
            link.closed.notified().await;
        }
        sleep(EXIT_GRACE).await;
    };
    tokio::select! {
        _ = exited_late => {}
        _ = sleep_until(term_at.into()) => {}
    }
    // Reaches nothing if the worker has already been reaped.
    let _ = link.signals.send(Signal::SIGTERM);
}
