//! What a Node.js worker says on its channel, and the primary's answers:
//! hand-off ACKs, `queryServer`, `listening`, `exitedAfterDisconnect`, and the
//! app's own `process.send()` messages (`'ready'` under `--wait-ready`).

use std::time::Instant;

use serde_json::{Map, Value};

use super::app::Mode;
use super::link::{Link, Server, State};
use super::listen::{self, Answer};
use super::wire;
use crate::conn::notice::Notice;
use crate::sockets::listener::{Kind, Local};

/// The most servers one worker may have; a `listen()` past this fails with
/// `EMFILE` (each is kept for as long as the worker runs).
const MAX_SERVERS: usize = 64;

impl Link {
    pub(super) fn on_message(&self, st: &mut State, message: Value) {
        match wire::internal_cmd(&message) {
            Some("NODE_HANDLE_ACK") => self.on_handle_answer(st, true),
            Some("NODE_HANDLE_NACK") => self.on_handle_answer(st, false),
            Some("NODE_HANDLE") => {
                // The app sent us a handle (`process.send(m, socket)`). Answer,
                // or Node holds back every later message; we have no use for it.
                let fd = st.fds.pop_front();
                self.send_line(st, &wire::handle_ack(fd.is_some()));
                let shown = wire::shown(message.get("msg").unwrap_or(&Value::Null));
                tracing::debug!(
                    worker_id = self.id,
                    worker_pid = self.pid,
                    "message with a handle from worker {} (pid {}), handle closed: {shown}",
                    self.id,
                    self.pid,
                );
            }
            Some("NODE_CLUSTER") if self.app.mode == Mode::Cluster => self.on_cluster(st, &message),
            Some("NODE_SOCKHERD") => self.on_shim(st, &message),
            Some(_) => tracing::debug!(
                worker_id = self.id,
                "ignoring internal message from worker {}: {}",
                self.id,
                wire::shown(&message)
            ),
            None => self.on_app_message(st, &message),
        }
    }

    /// The worker answered a handle: for a plain IPC child that is the
    /// answer to the hand-off; in a cluster only a NACK is (the `newconn` was
    /// dropped, no `accepted` follows).
    fn on_handle_answer(&self, st: &mut State, received: bool) {
        match (self.app.mode, received) {
            (Mode::Ipc, true) => self.handoff_done(st, true),
            (_, false) => self.handoff_done(st, false),
            (Mode::Cluster, true) => {}
        }
    }

    /// Settles the connection in flight: the app took it (close our copy) or not
    /// (dispatch it again).
    fn handoff_done(&self, st: &mut State, taken: bool) {
        let Some(handoff) = st.handoff.take() else {
            return;
        };
        if taken {
            st.last_taken = Some(Instant::now());
            drop(handoff);
        } else {
            tracing::debug!(
                worker_id = self.id,
                "worker {} (pid {}) refused a connection; dispatching it again",
                self.id,
                self.pid
            );
            self.give_back(handoff);
        }
        if !st.has_output() {
            self.capacity.notify_waiters();
        }
    }

    fn on_cluster(&self, st: &mut State, message: &Value) {
        if let Some(ack) = message.get("ack").and_then(Value::as_u64) {
            if st.handoff.as_ref().is_some_and(|h| h.seq == ack) {
                let taken = message.get("accepted").and_then(Value::as_bool) == Some(true);
                self.handoff_done(st, taken);
            }
            return;
        }
        match message.get("act").and_then(Value::as_str) {
            Some("online") => tracing::debug!(
                worker_id = self.id,
                "worker {} (pid {}) is online",
                self.id,
                self.pid
            ),
            Some("queryServer") => self.on_query_server(st, message),
            Some("listening") => {
                tracing::debug!(
                    worker_id = self.id,
                    "worker {} (pid {}) is listening on {}",
                    self.id,
                    self.pid,
                    listen::describe(message)
                );
                if !self.app.wait_ready {
                    self.report_ready(st);
                }
            }
            Some("close") => {
                if let Some(key) = message.get("key").and_then(Value::as_str) {
                    st.servers.retain(|s| s.key != key);
                }
            }
            Some("exitedAfterDisconnect" | "suicide") => {
                // Without this ack the worker never disconnects.
                let mut reply = Map::new();
                reply.insert(
                    "ack".into(),
                    message.get("seq").cloned().unwrap_or(Value::Null),
                );
                let seq = st.next_seq();
                self.send_line(st, &wire::cluster(reply, seq));
                if !st.leaving && !st.stop_requested {
                    st.notices.push_back(Notice {
                        stopping: true,
                        ..Notice::default()
                    });
                }
                st.leaving = true;
            }
            _ => tracing::debug!(
                worker_id = self.id,
                "ignoring cluster message from worker {}: {}",
                self.id,
                wire::shown(message)
            ),
        }
    }

    fn on_query_server(&self, st: &mut State, query: &Value) {
        let shared = self.app.shared();
        let sockets: Vec<(Kind, Local)> = match shared {
            Some(shared) => shared
                .listeners()
                .iter()
                .map(|l| (l.kind, l.local.clone()))
                .collect(),
            None => self
                .sockets
                .iter()
                .map(|s| (Kind::Stream, s.local.clone()))
                .collect(),
        };
        let key = listen::key(query);
        let offered = query.get("data").unwrap_or(&Value::Null);
        let answer = if st.servers.len() >= MAX_SERVERS && !st.servers.iter().any(|s| s.key == key)
        {
            Answer::Refuse {
                errno: listen::EMFILE,
                why: format!("the app has {MAX_SERVERS} servers already"),
            }
        } else {
            listen::resolve(query, &sockets)
        };
        let mut reply = Map::new();
        match answer {
            Answer::Serve {
                sockets: mut found,
                sockname,
            } => {
                if shared.is_some() {
                    // Under `SCHED_NONE` a listen() gets one socket: the best match.
                    found.truncate(1);
                }
                tracing::debug!(
                    worker_id = self.id,
                    "worker {} (pid {}) listens on {}: serving {}",
                    self.id,
                    self.pid,
                    listen::describe(query),
                    found
                        .iter()
                        .map(|i| sockets[*i].1.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                reply.insert("key".into(), key.clone().into());
                reply.insert("ack".into(), seq_of(query));
                // An https server crashes on `data: null`; all share the first's.
                reply.insert("data".into(), self.app.server_data(&key, offered));
                let key_json = Value::String(key.clone()).to_string();
                st.servers.retain(|s| s.key != key);
                st.servers.push(Server {
                    key,
                    key_json,
                    sockets: found.clone(),
                });
                if let (Some(&socket), Some(_)) = (found.first(), shared) {
                    // Node's shared handle: the worker listens on it itself.
                    reply.insert("errno".into(), 0.into());
                    let kind = match sockets[socket].0 {
                        Kind::Stream => "net.Native",
                        Kind::Datagram => "dgram.Native",
                    };
                    let seq = st.next_seq();
                    let line = wire::with_handle(kind, reply, seq);
                    self.send_handle(st, line, socket);
                    return;
                }
                reply.insert("errno".into(), Value::Null);
                if let Some(sockname) = sockname {
                    reply.insert("sockname".into(), sockname);
                }
                self.capacity.notify_waiters();
            }
            Answer::Refuse { errno, why } => {
                tracing::error!(
                    event = "node-listen-refused",
                    worker_id = self.id,
                    worker_pid = self.pid,
                    "worker {} (pid {}): {why}; its listen() fails with {}",
                    self.id,
                    self.pid,
                    listen::errno_name(errno)
                );
                reply.insert("errno".into(), errno.into());
                reply.insert("key".into(), key.into());
                reply.insert("ack".into(), seq_of(query));
                reply.insert("data".into(), offered.clone());
            }
        }
        let seq = st.next_seq();
        self.send_line(st, &wire::cluster(reply, seq));
    }

    /// What the worker's shim says ([`super::shim`]): that it is there, how
    /// many connections it holds while it stops, and a `listen()` that will
    /// never reach the manager.
    fn on_shim(&self, st: &mut State, message: &Value) {
        match message.get("act").and_then(Value::as_str) {
            Some("hello") => st.shim = true,
            Some("open") => {
                if let Some(n) = message.get("connections").and_then(Value::as_u64) {
                    st.open_reported = Some(n);
                }
            }
            // Said once per worker: the app retries, or crash-loops on it.
            Some("exclusive") if !st.exclusive_said => {
                st.exclusive_said = true;
                let port = message.get("port").map_or_else(String::new, wire::shown);
                tracing::error!(
                    event = "node-listen-refused",
                    worker_id = self.id,
                    worker_pid = self.pid,
                    "worker {} (pid {}) listens with `exclusive: true` (port {port}): such a \
                     listen() binds in the worker itself, past the manager's sockets, and fails \
                     with EADDRINUSE; sockherd serves every listen() that reaches the cluster \
                     primary, so drop `exclusive`",
                    self.id,
                    self.pid
                );
            }
            _ => tracing::debug!(
                worker_id = self.id,
                "ignoring a shim message from worker {}: {}",
                self.id,
                wire::shown(message)
            ),
        }
    }

    fn on_app_message(&self, st: &mut State, message: &Value) {
        tracing::debug!(
            worker_id = self.id,
            worker_pid = self.pid,
            "message from worker {} (pid {}): {}",
            self.id,
            self.pid,
            wire::shown(message)
        );
        if self.app.wait_ready && message.as_str() == Some("ready") {
            self.report_ready(st);
        }
    }

    fn report_ready(&self, st: &mut State) {
        if !st.ready {
            st.ready = true;
            st.notices.push_back(Notice {
                ready: true,
                ..Notice::default()
            });
        }
    }
}

/// The `seq` of a worker's request, which our answer acks.
fn seq_of(message: &Value) -> Value {
    message.get("seq").cloned().unwrap_or(Value::Null)
}
