//! How a Node.js worker is asked to stop, so that the app's own shutdown runs
//! with its servers still open and has the whole kill timeout.
//!
//! Once the last connection handed to the worker has settled (an app drops a
//! connection on which no request has arrived yet when its server closes),
//! the worker is asked once, in the first of these ways that applies:
//! - with `--shutdown-message`, the message `'shutdown'` (PM2's
//!   `shutdown_with_message`): the app's `process.on('message')` handler
//!   does the rest;
//! - when the worker's shim said hello ([`super::shim`]), the stop signal
//!   (`--kill-signal`, SIGTERM by default) through the shim: the app's own
//!   handler runs if it has one, and Node's cluster `disconnect` (close the
//!   servers, finish what is in flight, exit) otherwise;
//! - without a shim, the cluster `disconnect`, or, for a plain IPC child, the
//!   end of its channel.
//!
//! Nothing more is sent: no signal on a timer. A stopping cluster worker that
//! has closed all its servers itself must still leave the cluster, or its IPC
//! channel keeps it alive: its shim sees to that from inside (a `disconnect`
//! from the manager while the worker disconnects by itself makes Node throw).
//! For a worker without a shim the manager does it, once the worker has
//! closed its last server and shown no sign of leaving on its own. The pool
//! SIGKILLs a worker still running at the kill timeout.

use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{shutdown, Shutdown};
use serde_json::Map;
use tokio::task::spawn_local;
use tokio::time::{sleep, sleep_until};

use super::app::Mode;
use super::link::{Link, State};
use super::wire;

/// How long after the app took its last connection a stop waits before it
/// asks: long enough for the app to read that connection's request, since
/// Node's `server.close()` drops connections on which no request has arrived
/// yet.
const SETTLE: Duration = Duration::from_millis(100);

/// How often a stop checks whether the last hand-off has been answered.
const SETTLE_POLL: Duration = Duration::from_millis(10);

/// How often a stopping worker without a shim is checked for closed servers,
/// and how long after its last one closed it has to start leaving by itself
/// (its `exitedAfterDisconnect` follows its `close` messages at once).
const LEAVE_POLL: Duration = Duration::from_millis(100);

impl Link {
    /// Starts a stop with `signal` (see the module docs). The pool SIGKILLs
    /// the worker at the kill timeout if it is still running then.
    pub(crate) fn ask_to_stop(link: &Rc<Link>, signal: Signal) {
        {
            let mut st = link.state.borrow_mut();
            if st.stop_requested {
                return;
            }
            st.stop_requested = true;
        }
        spawn_local(stop(Rc::clone(link), signal));
    }

    /// The stop request itself.
    fn send_stop(&self, signal: Signal) {
        let mut st = self.state.borrow_mut();
        if self.app.shutdown_message {
            if st.shim {
                // Only to count what the worker still holds.
                self.send_line(&mut st, &wire::stop(None));
            }
            self.send_line(&mut st, wire::shutdown());
        } else if st.shim {
            self.send_line(&mut st, &wire::stop(Some(signal.as_str())));
        } else {
            match self.app.mode {
                Mode::Cluster => self.disconnect(&mut st),
                Mode::Ipc => {
                    // End of file tells the child no more connections will
                    // come: it leaves once those it has are done. Not before
                    // our last bytes are out, though.
                    if !st.has_output() && !st.dead {
                        let _ = shutdown(self.raw_fd(), Shutdown::Write);
                    }
                }
            }
        }
    }

    /// Whether the manager must see to it that this stopping worker leaves
    /// the cluster once its servers are closed (see the module docs).
    fn must_let_go(&self) -> bool {
        let st = self.state.borrow();
        self.app.mode == Mode::Cluster && !st.shim && !st.dead && !st.leaving && !st.disconnected
    }

    /// Sends the cluster `disconnect`, once, unless the worker is leaving on
    /// its own (asking again would make Node throw).
    pub(super) fn disconnect(&self, st: &mut State) {
        if st.leaving || st.disconnected || self.app.mode != Mode::Cluster {
            return;
        }
        st.disconnected = true;
        let mut message = Map::new();
        message.insert("act".into(), "disconnect".into());
        let seq = st.next_seq();
        self.send_line(st, &wire::cluster(message, seq));
    }
}

/// The stop sequence of one worker: let the last hand-off settle, then ask.
async fn stop(link: Rc<Link>, signal: Signal) {
    loop {
        let wait_until = {
            let st = link.state.borrow();
            let now = Instant::now();
            if st.dead {
                return;
            } else if st.handoff.is_some() || st.has_output() {
                Some(now + SETTLE_POLL)
            } else {
                st.last_taken.map(|t| t + SETTLE).filter(|t| *t > now)
            }
        };
        match wait_until {
            Some(at) => sleep_until(at.into()).await,
            None => break,
        }
    }
    link.send_stop(signal);
    let mut closed_since: Option<Instant> = None;
    while link.must_let_go() {
        sleep(LEAVE_POLL).await;
        if !link.state.borrow().servers.is_empty() {
            closed_since = None;
        } else if closed_since.is_some_and(|t| t.elapsed() >= LEAVE_POLL) {
            let mut st = link.state.borrow_mut();
            link.disconnect(&mut st);
        } else {
            closed_since.get_or_insert_with(Instant::now);
        }
    }
}
