//! Node's IPC wire format in JSON mode: framing, and the messages we send.
//!
//! Every message is one JSON text and a `\n` (`JSON.stringify(m) + '\n'`); a
//! read may carry several or part of one, so [`Lines`] reassembles them from
//! the byte stream, with a bound on how much one message may take. The
//! messages the manager sends are built here, compact and newline-free:
//! Node parses every line it gets, and a blank or invalid one kills the
//! worker with a `SyntaxError`.
//!
//! A message is *internal* when it is an object whose `cmd` is a string longer
//! than five characters starting `NODE_` (Node's `isInternal`); anything else
//! the app sent with `process.send()`.

use serde_json::{json, Value};

/// The largest message accepted from a worker. Node's own messages are a few
/// hundred bytes; an app's `process.send()` payloads are whatever it sends,
/// and past this the worker is taken for broken.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The `cmd` of an internal message, or `None` for an app's own message.
pub fn internal_cmd(message: &Value) -> Option<&str> {
    let cmd = message.get("cmd")?.as_str()?;
    (cmd.len() > 5 && cmd.starts_with("NODE_")).then_some(cmd)
}

/// Reassembles messages from the bytes of a channel.
#[derive(Debug, Default)]
pub struct Lines {
    /// The start of a message whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Lines {
    /// Takes the next bytes read and returns the messages they complete, in
    /// order. An error (invalid JSON, a message over [`MAX_MESSAGE`]) means the
    /// peer is broken; the buffer is then in an unspecified state.
    /// Whether no message is half-way in.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Value>, String> {
        let mut messages = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(end);
            rest = &tail[1..];
            let message = if self.partial.is_empty() {
                parse(head)?
            } else {
                self.take_room(head.len())?;
                self.partial.extend_from_slice(head);
                let message = parse(&self.partial);
                self.partial.clear();
                message?
            };
            messages.push(message);
        }
        self.take_room(rest.len())?;
        self.partial.extend_from_slice(rest);
        Ok(messages)
    }

    fn take_room(&self, more: usize) -> Result<(), String> {
        if self.partial.len() + more > MAX_MESSAGE {
            return Err(format!(
                "a message of more than {} KiB on the IPC channel",
                MAX_MESSAGE / 1024
            ));
        }
        Ok(())
    }
}

fn parse(line: &[u8]) -> Result<Value, String> {
    if line.len() > MAX_MESSAGE {
        return Err(format!(
            "a message of more than {} KiB on the IPC channel",
            MAX_MESSAGE / 1024
        ));
    }
    serde_json::from_slice(line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        format!("invalid JSON on the IPC channel ({e}): {shown:?}")
    })
}

/// One message as a line to send.
pub(crate) fn line(message: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(message).unwrap_or_else(|_| b"null".to_vec());
    bytes.push(b'\n');
    bytes
}

/// The answer to a handle the worker sent: we got the fd (`ACK`) or not (`NACK`).
pub(crate) fn handle_ack(received: bool) -> Vec<u8> {
    let cmd = if received {
        "NODE_HANDLE_ACK"
    } else {
        "NODE_HANDLE_NACK"
    };
    line(&json!({ "cmd": cmd }))
}

/// A cluster message from the primary: `{"cmd":"NODE_CLUSTER", …fields, "seq":seq}`.
pub(crate) fn cluster(mut fields: serde_json::Map<String, Value>, seq: u64) -> Vec<u8> {
    let mut message = serde_json::Map::new();
    message.insert("cmd".into(), "NODE_CLUSTER".into());
    message.append(&mut fields);
    message.insert("seq".into(), seq.into());
    line(&Value::Object(message))
}

/// A cluster message with a handle attached (the fd travels with its first
/// byte): `kind` is `net.Native` for a listening socket, `dgram.Native` for a
/// UDP one, as Node's primary sends a shared handle under `SCHED_NONE`.
pub(crate) fn with_handle(
    kind: &str,
    mut fields: serde_json::Map<String, Value>,
    seq: u64,
) -> Vec<u8> {
    let mut message = serde_json::Map::new();
    message.insert("cmd".into(), "NODE_CLUSTER".into());
    message.append(&mut fields);
    message.insert("seq".into(), seq.into());
    line(&json!({ "cmd": "NODE_HANDLE", "type": kind, "msg": Value::Object(message) }))
}

/// A new connection for the server `key` (already JSON-encoded); its fd
/// rides on the same `sendmsg`.
pub(crate) fn newconn(key_json: &str, seq: u64) -> Vec<u8> {
    format!(
        "{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{{\"cmd\":\"NODE_CLUSTER\",\"act\":\"newconn\",\"key\":{key_json},\"seq\":{seq}}}}}\n"
    )
    .into_bytes()
}

/// A connection for a plain IPC child, as `child.send('socket', socket)` puts
/// it, minus the `key` that would make the child count sockets for us.
pub(crate) fn socket_handle() -> &'static [u8] {
    b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":\"socket\"}\n"
}

/// The shim's stop request: it counts its connections from now on, and with
/// a `signal`, the app's handler for it runs, or Node's cluster `disconnect`
/// when it has none (see `shim.js`).
pub(crate) fn stop(signal: Option<&str>) -> Vec<u8> {
    line(&json!({ "cmd": "NODE_SOCKHERD", "act": "stop", "signal": signal }))
}

/// PM2's graceful-stop message.
pub(crate) fn shutdown() -> &'static [u8] {
    b"\"shutdown\"\n"
}

/// A short, single-line rendering of a message for logs.
pub fn shown(message: &Value) -> String {
    const LIMIT: usize = 512;
    let text = message.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((at, _)) => format!("{}… [{} bytes]", &text[..at], text.len()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert_eq!(
            internal_cmd(&json!({"cmd": "NODE_CLUSTER"})),
            Some("NODE_CLUSTER")
        );
        assert_eq!(internal_cmd(&json!({"cmd": "NODE_"})), None);
        assert_eq!(internal_cmd(&json!({"cmd": "hello"})), None);
        assert_eq!(internal_cmd(&json!("ready")), None);
        assert_eq!(internal_cmd(&json!({"cmd": 3})), None);
    }

    #[test]
    fn reassembles_split_and_batched_messages() {
        let mut lines = Lines::default();
        let got = lines
            .feed(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n{\"cmd\":\"NODE_CLUSTER\",\"ack\":2,")
            .unwrap();
        assert_eq!(got, vec![json!({"cmd": "NODE_HANDLE_ACK"})]);
        let got = lines.feed(b"\"accepted\":true}\r\n\"ready\"\n").unwrap();
        assert_eq!(
            got,
            vec![
                json!({"cmd": "NODE_CLUSTER", "ack": 2, "accepted": true}),
                json!("ready")
            ]
        );
        assert!(lines.feed(b"").unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage_and_oversized_messages() {
        assert!(Lines::default().feed(b"{not json}\n").is_err());
        assert!(Lines::default().feed(b"\n").is_err());
        let mut lines = Lines::default();
        let big = vec![b' '; MAX_MESSAGE / 2 + 1];
        assert!(lines.feed(&big).is_ok());
        assert!(lines.feed(&big).is_err());
        let mut whole = vec![b'1'; MAX_MESSAGE + 1];
        whole.push(b'\n');
        assert!(Lines::default().feed(&whole).is_err());
    }

    #[test]
    fn builds_messages_node_accepts() {
        let newconn: Value =
            serde_json::from_slice(&newconn("\"null:8080:4:undefined:0\"", 7)).expect("valid JSON");
        assert_eq!(
            newconn,
            json!({"cmd": "NODE_HANDLE", "type": "net.Native", "msg": {
                "cmd": "NODE_CLUSTER", "act": "newconn", "key": "null:8080:4:undefined:0", "seq": 7}})
        );
        let mut fields = serde_json::Map::new();
        fields.insert("ack".into(), 3.into());
        let reply = cluster(fields, 9);
        assert!(reply.ends_with(b"\n") && !reply[..reply.len() - 1].contains(&b'\n'));
        assert_eq!(
            serde_json::from_slice::<Value>(&reply).unwrap(),
            json!({"cmd": "NODE_CLUSTER", "ack": 3, "seq": 9})
        );
        for sent in [
            socket_handle(),
            shutdown(),
            &handle_ack(true),
            &handle_ack(false),
        ] {
            assert!(serde_json::from_slice::<Value>(sent).is_ok());
        }
    }
}
