//! A Node.js app as the manager drives it: cluster or plain IPC, and what its
//! workers agree on between them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

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
    /// Send `'shutdown'` as the first step of a stop.
    pub shutdown_message: bool,
    /// A worker still running this long after it was asked to stop gets
    /// SIGTERM (the pool SIGKILLs at the kill timeout).
    pub term_after: Duration,
    /// The `data` the first worker sent with each server key (an https
    /// server's TLS ticket keys), echoed to every later worker so that all of
    /// them share it, as Node's primary does.
    server_data: RefCell<HashMap<String, Value>>,
}

/// Server keys whose `data` is remembered; an app has a handful, this bounds
/// what a misbehaving worker can make the manager keep.
const MAX_SERVER_DATA: usize = 256;

impl App {
    pub(crate) fn new(
        mode: Mode,
        wait_ready: bool,
        shutdown_message: bool,
        kill_timeout: Duration,
    ) -> App {
        App {
            mode,
            wait_ready,
            shutdown_message,
            term_after: kill_timeout / 2,
            server_data: RefCell::new(HashMap::new()),
        }
    }

    pub(crate) fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Cluster => "node",
            Mode::Ipc => "node-ipc",
        }
    }

    /// The environment that makes Node open its IPC channel on fd `fd`, and in
    /// cluster mode become worker `id + 1` (Node numbers workers from 1; the
    /// number is stable across restarts, like `NODE_APP_INSTANCE`).
    pub(crate) fn worker_env(&self, id: u32, fd: i32) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NODE_CHANNEL_FD", fd.to_string()),
            ("NODE_CHANNEL_SERIALIZATION_MODE", "json".to_owned()),
        ];
        if self.mode == Mode::Cluster {
            env.push(("NODE_UNIQUE_ID", (u64::from(id) + 1).to_string()));
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

    #[test]
    fn first_server_data_wins() {
        let app = App::new(Mode::Cluster, false, false, Duration::from_secs(4));
        assert_eq!(app.term_after, Duration::from_secs(2));
        let first = serde_json::json!({"ticketKeys": "aa"});
        let second = serde_json::json!({"ticketKeys": "bb"});
        assert_eq!(app.server_data("k", &Value::Null), Value::Null);
        assert_eq!(app.server_data("k", &first), first);
        assert_eq!(app.server_data("k", &second), first);
        assert_eq!(app.server_data("other", &second), second);
    }

    #[test]
    fn cluster_workers_get_a_unique_id() {
        let app = App::new(Mode::Cluster, false, false, Duration::from_secs(1));
        let env = app.worker_env(2, 3);
        assert!(env.contains(&("NODE_CHANNEL_FD", "3".to_owned())));
        assert!(env.contains(&("NODE_UNIQUE_ID", "3".to_owned())));
        let ipc = App::new(Mode::Ipc, false, false, Duration::from_secs(1));
        assert!(!ipc
            .worker_env(0, 3)
            .iter()
            .any(|(k, _)| *k == "NODE_UNIQUE_ID"));
    }
}
