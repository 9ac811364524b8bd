//! What a worker says: the `KEY=VALUE` messages of the native protocol.
//!
//! A native worker's messages to the manager are `sd_notify`-style lines:
//! `READY=1`, `STOPPING=1`, `WATCHDOG=1` (heartbeat), `STATUS=…`,
//! `CLOSED=<n>` (connections closed since the last report, for least-conn)
//! and `PROTOCOL=<n>` (the protocol version it speaks, beside `READY=1`);
//! other well-formed keys are ignored so the protocol can grow. Anything else
//! is garbage and costs the worker its life. `--policy none` workers speak
//! real `sd_notify` on a socket of their own ([`crate::conn::shared`]) in the
//! same format, and every transport reports what its worker said as a
//! [`Notice`], so the pool deals with one shape whatever the wire.
//! `docs/protocol.md` is the spec; [`parse_notice`] is pure, so fuzzers and
//! property tests drive it.

use super::protocol::{FIRST_VERSION, MAX_MESSAGE, PROTOCOL_VERSION};

/// What a worker told us in one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notice {
    /// `READY=1`: it accepts connections now.
    pub ready: bool,
    /// `STOPPING=1`: it is going away on its own; start its replacement now.
    pub stopping: bool,
    /// `WATCHDOG=1`: it is alive.
    pub heartbeat: bool,
    /// `STATUS=…`: a line of its own state, for logs.
    pub status: Option<String>,
    /// `CLOSED=<n>`: connections it closed since its last report, summed over
    /// the message's lines; what least-conn subtracts from what it handed over.
    pub closed: u64,
    /// `PROTOCOL=<n>`: the protocol version it speaks from now on.
    pub protocol: Option<u32>,
}

impl Notice {
    /// Folds a later notice of the same worker into this one, as if both had
    /// come in one message: what the pool acts on is the same, so a worker's
    /// notices can wait for the pool merged, in memory of one.
    pub(crate) fn merge(&mut self, later: Notice) {
        self.ready |= later.ready;
        self.stopping |= later.stopping;
        self.heartbeat |= later.heartbeat;
        if later.status.is_some() {
            self.status = later.status;
        }
        self.closed = self.closed.saturating_add(later.closed);
        if later.protocol.is_some() {
            self.protocol = later.protocol;
        }
    }

    /// Whether it says nothing but closes: what the channel's reader counts
    /// by itself, without troubling the pool.
    pub(crate) fn only_closes(&self) -> bool {
        !self.ready
            && !self.stopping
            && !self.heartbeat
            && self.status.is_none()
            && self.protocol.is_none()
    }
}

/// Why a worker's message was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage(pub String);

/// Parses one message from a worker. Pure, so fuzzers and tests can drive it.
pub fn parse_notice(bytes: &[u8]) -> Result<Notice, Garbage> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Garbage(format!("message of more than {MAX_MESSAGE} bytes")));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Garbage("message is not UTF-8".into()))?;
    let mut notice = Notice::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(Garbage(format!("line without '=': {:?}", truncated(line))));
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Garbage(format!("invalid key: {:?}", truncated(key))));
        }
        match (key, value) {
            ("READY", "1") => notice.ready = true,
            ("STOPPING", "1") => notice.stopping = true,
            ("WATCHDOG", "1") => notice.heartbeat = true,
            ("STATUS", status) => notice.status = Some(status.to_owned()),
            ("CLOSED", count) => {
                let count: u64 = count.parse().map_err(|_| {
                    Garbage(format!("CLOSED={:?} is not a count", truncated(count)))
                })?;
                notice.closed = notice.closed.saturating_add(count);
            }
            ("PROTOCOL", version) => {
                // Only a version the manager offered: it speaks no other.
                match version.parse::<u32>() {
                    Ok(v) if (FIRST_VERSION..=PROTOCOL_VERSION).contains(&v) => {
                        notice.protocol = Some(v)
                    }
                    _ => {
                        return Err(Garbage(format!(
                            "PROTOCOL={:?} is not a version this manager offered",
                            truncated(version)
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(notice)
}

fn truncated(s: &str) -> &str {
    let end = s.char_indices().nth(64).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notices() {
        let n = parse_notice(b"READY=1\nSTATUS=warming up").unwrap();
        assert!(n.ready && !n.stopping && !n.heartbeat);
        assert_eq!(n.status.as_deref(), Some("warming up"));
        assert!(parse_notice(b"WATCHDOG=1").unwrap().heartbeat);
        assert!(parse_notice(b"STOPPING=1\n").unwrap().stopping);
        assert_eq!(parse_notice(b"FUTURE_KEY=x").unwrap(), Notice::default());
        assert_eq!(parse_notice(b"CLOSED=3").unwrap().closed, 3);
        assert_eq!(parse_notice(b"CLOSED=3\nCLOSED=4\n").unwrap().closed, 7);
        let ready = parse_notice(b"READY=1\nPROTOCOL=2").unwrap();
        assert!(ready.ready && ready.protocol == Some(2));
        assert!(parse_notice(b"CLOSED=2").unwrap().only_closes());
        assert!(!ready.only_closes());
    }

    #[test]
    fn notices_merge_as_one_message_would_read() {
        let mut merged = parse_notice(b"STATUS=a\nCLOSED=2").unwrap();
        merged.merge(parse_notice(b"READY=1\nCLOSED=3").unwrap());
        merged.merge(parse_notice(b"STATUS=b\nWATCHDOG=1").unwrap());
        assert_eq!(
            merged,
            parse_notice(b"STATUS=a\nCLOSED=2\nREADY=1\nCLOSED=3\nSTATUS=b\nWATCHDOG=1").unwrap()
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"hello"[..],
            b"ready=1",
            b"=1",
            b"\xff\xfe",
            b"CLOSED=",
            b"CLOSED=-1",
            b"CLOSED=lots",
            b"PROTOCOL=3",
            b"PROTOCOL=0",
            b"PROTOCOL=two",
            &[b'A'; MAX_MESSAGE + 1],
        ] {
            assert!(parse_notice(bad).is_err(), "{bad:?}");
        }
    }
}
