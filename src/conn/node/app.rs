//! A Node.js app as the manager drives it: cluster or plain IPC, and what its
//! workers agree on between them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::rc::Rc;

use serde_json::Value;

use super::shim::Shim;
use crate::conn::shared::Shared;

/// How a Node.js worker is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A cluster worker (`NODE_UNIQUE_ID` set): its `listen()` calls come to
    /// the manager and connections arrive as `newconn` messages.
    Cluster,
    /// A plain `child_process` IPC child: connections arrive as `net.Socket`
    /// handles with the message `"socket"`.
    Ipc,
}

/// `--protocol`: what the workers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProtocolArg {
    /// `node` if the worker program is `node` or `nodejs`, `native` otherwise.
    Auto,
    /// sockherd's own channel.
    Native,
    /// Node.js cluster worker: the app's `listen()` is served by sockherd.
    Node,
    /// Node.js `child_process` IPC: connections arrive as `net.Socket` messages.
    NodeIpc,
}

/// The mode for worker command `program` (as given and as resolved) under
/// `--protocol`, or `None` for the native protocol.
pub(crate) fn mode(protocol: ProtocolArg, given: &OsStr, resolved: &Path) -> Option<Mode> {
    match protocol {
        ProtocolArg::Native => None,
        ProtocolArg::Node => Some(Mode::Cluster),
        ProtocolArg::NodeIpc => Some(Mode::Ipc),
        ProtocolArg::Auto => {
            (is_node(Path::new(given)) || is_node(resolved)).then_some(Mode::Cluster)
        }
    }
}

fn is_node(program: &Path) -> bool {
    matches!(
        program.file_name().and_then(|n| n.to_str()),
        Some("node" | "nodejs")
    )
}

/// What the manager knows about one Node.js app: how to drive its workers,
/// and what they agreed on between them.
#[derive(Debug)]
pub(crate) struct App {
    /// Cluster or plain IPC.
    pub mode: Mode,
    /// Ready on `process.send('ready')` instead of on `listening` (cluster) or
    /// at once (IPC).
    pub wait_ready: bool,
    /// Ask a worker to stop with the message `'shutdown'` (PM2's
    /// `shutdown_with_message`) rather than with the stop signal.
    pub shutdown_message: bool,
    /// What every worker loads before the app ([`super::shim`]).
    pub(super) shim: Rc<Shim>,
    /// Under `--policy none`: the sockets a worker's `listen()` is answered
    /// with, as Node's primary does under `SCHED_NONE`; the worker accepts
    /// (or receives) on them itself.
    pub(super) shared: Option<Rc<Shared>>,
    /// The `data` the first worker sent with each server key (an https
    /// server's TLS ticket keys), echoed to every later worker so that all of
    /// them share it, as Node's primary does.
    pub(super) server_data: RefCell<HashMap<String, Value>>,
}

/// Server keys whose `data` is remembered; an app has a handful, this bounds
/// what a misbehaving worker can make the manager keep.
const MAX_SERVER_DATA: usize = 256;

impl App {
    pub(crate) fn new(mode: Mode, wait_ready: bool, shutdown_message: bool, shim: Rc<Shim>) -> App {
        App {
            mode,
            wait_ready,
            shutdown_message,
            shim,
            shared: None,
            server_data: RefCell::new(HashMap::new()),
        }
    }

    /// The same app, its workers answered with `shared`'s sockets rather
    /// than dispatched connections (`--policy none`).
    pub(crate) fn sharing(&self, shared: Rc<Shared>) -> App {
        App {
            shared: Some(shared),
            ..App::new(
                self.mode,
                self.wait_ready,
                self.shutdown_message,
                Rc::clone(&self.shim),
            )
        }
    }

    /// The sockets workers get under `--policy none`.
    pub(super) fn shared(&self) -> Option<&Rc<Shared>> {
        self.shared.as_ref()
    }

    pub(crate) fn mode_name(&self) -> &'static str {
        match (self.mode, self.shared.is_some()) {
            (Mode::Cluster, false) => "node",
            (Mode::Cluster, true) => "node, shared accept",
            (Mode::Ipc, _) => "node-ipc",
        }
    }

    /// What "ready" means for this app, and what to do about an app that
    /// takes longer: said when a worker misses `--ready-timeout`.
    pub(crate) fn ready_hint(&self) -> &'static str {
        match (self.mode, self.wait_ready) {
            (Mode::Cluster, false) => {
                "a Node.js worker is ready when its server listens; an app that boots \
                 slower needs a longer --ready-timeout (PM2's listen_timeout, but PM2 keeps \
                 a worker that misses it, sockherd restarts it), and a worker that never \
                 listens (a queue consumer) runs with --protocol node-ipc (see docs/node.md)"
            }
            (_, true) => {
                "with --wait-ready a Node.js worker is ready when it calls \
                 process.send('ready'); an app that boots slower needs a longer \
                 --ready-timeout (PM2's listen_timeout, but PM2 keeps a worker that misses \
                 it, sockherd restarts it)"
            }
            (Mode::Ipc, false) => "a node-ipc worker is ready as soon as it runs",
        }
    }

    /// The environment that makes Node open its IPC channel on fd `fd`, in
    /// cluster mode become worker `id + 1` (Node numbers workers from 1; the
    /// number is stable across restarts, like `NODE_APP_INSTANCE`), and load
    /// the shim before the app.
    pub(crate) fn worker_env(&self, id: u32, fd: i32) -> Vec<(&'static str, OsString)> {
        let mut env = vec![
            ("NODE_CHANNEL_FD", fd.to_string().into()),
            ("NODE_CHANNEL_SERIALIZATION_MODE", "json".into()),
            (
                "NODE_OPTIONS",
                self.shim.node_options(std::env::var_os("NODE_OPTIONS")),
            ),
        ];
        if self.mode == Mode::Cluster {
            env.push(("NODE_UNIQUE_ID", (u64::from(id) + 1).to_string().into()));
        }
        env
    }

    /// The data to answer a `queryServer` for `key` with: the first worker's,
    /// or `offered` if this is the first (or it had none).
    pub(super) fn server_data(&self, key: &str, offered: &Value) -> Value {
        let mut known = self.server_data.borrow_mut();
        if let Some(data) = known.get(key) {
            return data.clone();
        }
        if !offered.is_null() && known.len() < MAX_SERVER_DATA {
            known.insert(key.to_owned(), offered.clone());
        }
        offered.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_node_from_the_command() {
        let auto = ProtocolArg::Auto;
        let node = Path::new("/usr/bin/node");
        assert_eq!(mode(auto, "node".as_ref(), node), Some(Mode::Cluster));
        assert_eq!(
            mode(auto, "nodejs".as_ref(), Path::new("/usr/bin/nodejs")),
            Some(Mode::Cluster)
        );
        let py = Path::new("/usr/bin/python3");
        assert_eq!(mode(auto, "python3".as_ref(), py), None);
        assert_eq!(mode(ProtocolArg::Native, "node".as_ref(), node), None);
        assert_eq!(
            mode(ProtocolArg::Node, "./start.sh".as_ref(), py),
            Some(Mode::Cluster)
        );
        assert_eq!(
            mode(ProtocolArg::NodeIpc, "node".as_ref(), node),
            Some(Mode::Ipc)
        );
    }

    fn app(mode: Mode) -> App {
        let shim = Shim::at("/run/sockherd.1/node-shim.js".into());
        App::new(mode, false, false, Rc::new(shim))
    }

    #[test]
    fn first_server_data_wins() {
        let app = app(Mode::Cluster);
        let first = serde_json::json!({"ticketKeys": "aa"});
        let second = serde_json::json!({"ticketKeys": "bb"});
        assert_eq!(app.server_data("k", &Value::Null), Value::Null);
        assert_eq!(app.server_data("k", &first), first);
        assert_eq!(app.server_data("k", &second), first);
        assert_eq!(app.server_data("other", &second), second);
    }

    #[test]
    fn cluster_workers_get_a_unique_id() {
        let env = app(Mode::Cluster).worker_env(2, 3);
        assert!(env.contains(&("NODE_CHANNEL_FD", "3".into())));
        assert!(env.contains(&("NODE_UNIQUE_ID", "3".into())));
        assert!(env
            .iter()
            .any(|(k, v)| *k == "NODE_OPTIONS" && v.to_string_lossy().contains("node-shim.js")));
        let ipc = app(Mode::Ipc);
        assert!(!ipc
            .worker_env(0, 3)
            .iter()
            .any(|(k, _)| *k == "NODE_UNIQUE_ID"));
    }
}
