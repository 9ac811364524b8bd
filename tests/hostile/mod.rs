//! What "handles hostile input" means for each decoder a peer can reach, as
//! checks on one input: the property tests (`tests/hostile_input.rs`) and
//! the cargo-fuzz targets (`fuzz/`) drive the same checks, so a fuzzer's find
//! and a property test's find fail the same assertion.
//!
//! Each check calls the decoder under test and compares it with a model
//! written from the specification (`docs/protocol.md`, Node's IPC framing,
//! `sd_listen_fds(3)`); a panic anywhere is a failure too.

// The property tests use all of it, but each fuzz target (a crate of its own
// that includes this file by path) uses only its own part. An
// `#[allow(dead_code)]` on each fuzz target's `mod hostile;` would do instead.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;
use sockherd::decoders::activation::{self, Passed};
use sockherd::decoders::node::{self as listen, self as wire, Answer, Lines};
use sockherd::decoders::notice::{self as channel, Notice};
use sockherd::decoders::{config, Kind, Local};

/// One native channel message from a worker: `parse_notice` accepts exactly
/// what `docs/protocol.md` allows and reports exactly what it says.
pub fn check_notice(bytes: &[u8]) {
    let parsed = channel::parse_notice(bytes);
    let expected = notice_model(bytes);
    match (&parsed, &expected) {
        (Ok(got), Some(want)) => assert_eq!(got, want, "input {bytes:?}"),
        (Err(_), None) => {}
        _ => panic!("parse_notice({bytes:?}) = {parsed:?}, the protocol says {expected:?}"),
    }
}

/// The protocol's rules for a message, written independently of the parser.
fn notice_model(bytes: &[u8]) -> Option<Notice> {
    if bytes.len() > channel::MAX_MESSAGE {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut notice = Notice::default();
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=')?;
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !key_ok {
            return None;
        }
        match key {
            "READY" => notice.ready |= value == "1",
            "STOPPING" => notice.stopping |= value == "1",
            "WATCHDOG" => notice.heartbeat |= value == "1",
            "STATUS" => notice.status = Some(value.to_owned()),
            // A count, or garbage; several add up.
            "CLOSED" => notice.closed = notice.closed.saturating_add(value.parse().ok()?),
            // Only a version the manager offers: 1 or 2.
            "PROTOCOL" => match value.parse::<u32>() {
                Ok(version @ 1..=2) => notice.protocol = Some(version),
                _ => return None,
            },
            _ => {}
        }
    }
    Some(notice)
}

/// Bytes from a Node worker's IPC channel, arriving in `chunks`: the
/// reassembled messages are the same whatever the chunking, and the same as
/// splitting the whole stream at `\n` and parsing each line as JSON; the
/// decoder fails exactly when the stream has an invalid or oversized line.
/// Every message decoded is then taken apart as the manager would.
pub fn check_wire(chunks: &[&[u8]]) {
    let mut lines = Lines::default();
    let mut got = Vec::new();
    let mut failed = false;
    for chunk in chunks {
        match lines.feed(chunk) {
            Ok(messages) => got.extend(messages),
            Err(why) => {
                assert!(!why.is_empty());
                failed = true;
                break;
            }
        }
    }
    let whole: Vec<u8> = chunks.concat();
    let (want, want_failed) = wire_model(&whole);
    assert_eq!(
        failed, want_failed,
        "decoder failed: {failed}, the framing says {want_failed}, for {chunks:?}"
    );
    if failed {
        // The messages before the bad line, or some of them: a failing
        // chunk's complete messages are dropped with it.
        assert!(
            want.starts_with(&got),
            "{got:?} is not a prefix of {want:?}"
        );
    } else {
        assert_eq!(got, want, "chunks {chunks:?}");
    }
    for message in &got {
        check_message(message);
    }
}

/// Node's framing, as simply as it can be said: one JSON text per line.
fn wire_model(stream: &[u8]) -> (Vec<Value>, bool) {
    let mut parts: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    let partial = parts.pop().unwrap_or_default();
    let mut messages = Vec::new();
    for line in parts {
        if line.len() > wire::MAX_MESSAGE {
            return (messages, true);
        }
        match serde_json::from_slice(line) {
            Ok(message) => messages.push(message),
            Err(_) => return (messages, true),
        }
    }
    (messages, partial.len() > wire::MAX_MESSAGE)
}

/// Everything the manager does with a decoded message from a Node worker,
/// none of which may panic: classify it, log it, and treat it as a
/// `queryServer` against a few socket layouts.
pub fn check_message(message: &Value) {
    if let Some(cmd) = wire::internal_cmd(message) {
        assert!(cmd.len() > 5 && cmd.starts_with("NODE_"));
    }
    let shown = wire::shown(message);
    assert!(shown.chars().count() <= 512 + 64, "log line too long");
    listen::describe(message);
    let key = listen::key(message);
    assert!(key.matches(':').count() >= 4, "{key}");
    for sockets in socket_layouts() {
        match listen::resolve(message, &sockets) {
            Answer::Serve { sockets: found, .. } => {
                assert!(!found.is_empty());
                assert!(found.iter().all(|i| *i < sockets.len()));
            }
            Answer::Refuse { errno, why } => {
                assert!(errno < 0, "{errno}");
                assert!(!why.is_empty());
            }
        }
    }
}

fn socket_layouts() -> [Vec<(Kind, Local)>; 3] {
    let inet = |s: &str| Local::Inet(s.parse::<SocketAddr>().expect("a socket address"));
    let stream = |s: &str| (Kind::Stream, inet(s));
    [
        Vec::new(),
        vec![stream("127.0.0.1:8080"), stream("[::]:8080")],
        vec![
            stream("0.0.0.0:1"),
            (Kind::Stream, Local::Unix(PathBuf::from("/run/app.sock"))),
            (Kind::Stream, Local::UnixUnnamed),
            (Kind::Datagram, inet("127.0.0.1:1")),
            stream("[::1]:65535"),
        ],
    ]
}

/// A config file's text: `parse` either refuses it with a message or returns
/// settings that keep the invariants the pool relies on.
pub fn check_config(text: &str) {
    match config::parse(text) {
        Ok(o) => {
            assert_ne!(o.workers, Some(0), "{text:?}");
            assert_ne!(o.reload_batch, Some(0), "{text:?}");
            assert!(
                o.command.as_ref().map_or(true, |c| !c.is_empty()),
                "{text:?}"
            );
            assert_ne!(o.max_memory, Some(0), "{text:?}");
        }
        Err(why) => assert!(!why.is_empty(), "{text:?}"),
    }
}

/// A size or a duration as an operator may write one: parsed or refused.
pub fn check_units(text: &str) {
    if let Ok(bytes) = config::parse_size(text) {
        assert!(bytes > 0, "{text:?}");
    }
    let _ = config::parse_duration(text);
}

/// The three activation variables (absent, or any text) as the environment
/// may hold them, for a process whose pid is `ours`: `parse` returns what
/// `sd_listen_fds(3)` would, or refuses.
pub fn check_activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    ours: u32,
) {
    let parsed = activation::parse(listen_pid, listen_fds, listen_fdnames, ours);
    // Numbers as systemd writes them: decimal digits, no sign, no leading zero.
    let decimal = |text: &str| {
        let plain =
            text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
        if plain {
            text.parse::<u64>().ok()
        } else {
            None
        }
    };
    let pid_ok = listen_pid.and_then(decimal) == Some(u64::from(ours));
    let count = listen_fds.and_then(decimal);
    match &parsed {
        Ok(None) => {
            assert!(
                listen_fds.is_none() || listen_pid.is_none() || (pid_ok && count == Some(0)),
                "not activated for {listen_pid:?} {listen_fds:?} {listen_fdnames:?}"
            );
        }
        Ok(Some(Passed { names })) => {
            assert!(pid_ok, "LISTEN_PID={listen_pid:?} accepted for pid {ours}");
            assert_eq!(count, Some(names.len() as u64));
            match listen_fdnames {
                None => assert!(names.iter().all(|n| n == "unknown")),
                Some(list) => {
                    assert_eq!(names.join(":"), list, "names do not round-trip");
                    for name in names {
                        assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
                        assert!(
                            name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                            "{name:?}"
                        );
                    }
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
