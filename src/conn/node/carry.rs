//! A Node.js app and its links, carried across a re-exec of the manager
//! ([`crate::conn::carried`]).
//!
//! What a link agreed on with its worker goes along: the servers its
//! `listen()` calls registered (their keys, and which of the manager's
//! sockets each gets), the next `seq`, whether it was ready and whether its
//! shim said hello. What is in flight does not: a link carries only when
//! nothing is — no connection unanswered, no reply unread, no fd or half a
//! message received — and says why not otherwise.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use tokio::sync::Notify;

use super::app::{App, Mode};
use super::link::{Link, Server, State};
use super::shim::Shim;
use crate::conn::carried::{Carried, CarriedProtocol, CarriedServers};
use crate::conn::peer::Peer;
use crate::conn::shared::Shared;
use crate::conn::socket::Socket;

impl App {
    /// The app as the next image rebuilds it.
    pub(crate) fn carry(&self) -> CarriedProtocol {
        CarriedProtocol::Node {
            cluster: self.mode == Mode::Cluster,
            wait_ready: self.wait_ready,
            shutdown_message: self.shutdown_message,
            server_data: self
                .server_data
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            sharing: self.shared.is_some(),
        }
    }

    /// The app an earlier image carried: its shim written again, its sockets
    /// `shared` under `--policy none`.
    pub(crate) fn adopt(
        cluster: bool,
        wait_ready: bool,
        shutdown_message: bool,
        server_data: Vec<(String, serde_json::Value)>,
        shim: Rc<Shim>,
        shared: Option<Rc<Shared>>,
    ) -> App {
        let mode = if cluster { Mode::Cluster } else { Mode::Ipc };
        let mut app = App::new(mode, wait_ready, shutdown_message, shim);
        app.shared = shared;
        app.server_data = RefCell::new(server_data.into_iter().collect::<HashMap<_, _>>());
        app
    }
}

impl Link {
    /// What the next image needs to go on with this worker, or why it
    /// cannot be carried now.
    pub(crate) fn carry(&self) -> Result<Carried, String> {
        let st = self.state.borrow();
        let unsettled = if st.handoff.is_some() {
            Some("has a connection it has not answered for")
        } else if st.has_output() {
            Some("has replies it has not read")
        } else if !st.fds.is_empty() || !st.lines.is_empty() {
            Some("is in the middle of a message")
        } else if !st.notices.is_empty() {
            Some("has news the pool has not heard")
        } else if st.dead || st.closed || st.stop_requested || st.leaving {
            Some("is going away")
        } else {
            None
        };
        if let Some(why) = unsettled {
            return Err(format!(
                "Node.js worker {} (pid {}) {why}",
                self.id, self.pid
            ));
        }
        Ok(Carried::Node {
            fd: self.raw_fd(),
            servers: st
                .servers
                .iter()
                .map(|s| (s.key.clone(), s.key_json.clone(), s.sockets.clone()))
                .collect(),
            seq: st.seq,
            ready: st.ready,
            shim: st.shim,
        })
    }

    /// The link an earlier image carried over `fd`.
    pub(crate) fn adopt(
        app: Rc<App>,
        fd: OwnedFd,
        carried: (CarriedServers, u64, bool, bool),
        peer: Peer,
        sockets: Vec<Rc<Socket>>,
        capacity: Rc<Notify>,
    ) -> io::Result<Link> {
        let (servers, seq, ready, shim) = carried;
        // Under `--policy none` a server's sockets are the shared ones.
        let known = app.shared().map_or(sockets.len(), |s| s.listeners().len());
        if let Some((key, _, _)) = servers
            .iter()
            .find(|(_, _, s)| s.iter().any(|i| *i >= known))
        {
            return Err(io::Error::other(format!(
                "its server {key} listens on a socket the manager does not have"
            )));
        }
        let state = State {
            servers: servers
                .into_iter()
                .map(|(key, key_json, sockets)| Server {
                    key,
                    key_json,
                    sockets,
                })
                .collect(),
            seq,
            ready,
            shim,
            ..State::default()
        };
        Link::with_state(app, fd, peer, sockets, capacity, state)
    }
}
