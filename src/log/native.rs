//! journald's native protocol: one datagram per entry, `FIELD=value` lines,
//! sent to `/run/systemd/journal/socket`.
//!
//! A value that holds a newline is sent in the binary-safe form (the name, a
//! newline, the length as 64-bit little-endian, the bytes, a newline). The
//! socket is blocking: when journald's queue is full, a send waits, which is
//! the back-pressure the log thread passes on to the workers
//! ([`super::pump`]). When journald cannot be reached (it is gone, or its
//! socket was replaced), the socket is opened again, at most once a second
//! ([`Journal::send`]); what could not be sent meanwhile is the caller's to
//! count. Nothing here runs on the event loop: entries are *formatted* there
//! ([`super::events`]) and *sent* from the log thread.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// journald's socket for native-protocol datagrams.
pub(crate) const SOCKET: &str = "/run/systemd/journal/socket";

/// How long after a failed send the socket is opened again.
const RETRY: Duration = Duration::from_secs(1);

/// The send buffer asked for (the kernel caps it at `net.core.wmem_max`): an
/// entry must fit in one datagram.
const SEND_BUFFER: usize = 8 << 20;

/// Appends `NAME=value` to `entry`, binary-safe when `value` holds a newline.
pub(crate) fn put(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// A field name for a tracing field: `worker_id` with prefix `SOCKHERD`
/// becomes `SOCKHERD_WORKER_ID`. journald takes `A-Z`, `0-9` and `_`.
pub(crate) fn field_name(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + name.len());
    out.push_str(prefix);
    out.push('_');
    out.extend(name.chars().map(|c| match c {
        'a'..='z' => c.to_ascii_uppercase(),
        'A'..='Z' | '0'..='9' => c,
        _ => '_',
    }));
    out
}

/// A connection to journald's native socket that survives journald going
/// away and coming back.
pub(crate) struct Journal {
    socket: Option<UnixDatagram>,
    /// When to try opening the socket again after a failure.
    retry_at: Option<Instant>,
}

impl Journal {
    /// Connects now; fails if journald cannot be reached.
    pub(crate) fn connect() -> io::Result<Journal> {
        Ok(Journal {
            socket: Some(open()?),
            retry_at: None,
        })
    }

    /// Sends one entry, waiting while journald's queue is full. An error
    /// means the entry was not sent: journald cannot be reached (the socket
    /// is opened again on a later call, not sooner than a second from now),
    /// or the entry is too large.
    pub(crate) fn send(&mut self, entry: &[u8]) -> io::Result<()> {
        let socket = match &self.socket {
            Some(socket) => socket,
            None => {
                if self.retry_at.is_some_and(|at| Instant::now() < at) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the journal was unreachable a moment ago",
                    ));
                }
                match open() {
                    Ok(socket) => {
                        self.retry_at = None;
                        self.socket.insert(socket)
                    }
                    Err(e) => {
                        self.retry_at = Some(Instant::now() + RETRY);
                        return Err(e);
                    }
                }
            }
        };
        loop {
            match socket.send(entry) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Too large for a datagram: this entry is lost, not the socket.
                Err(e) if e.raw_os_error() == Some(nix::libc::EMSGSIZE) => return Err(e),
                Err(e) => {
                    self.socket = None;
                    self.retry_at = Some(Instant::now() + RETRY);
                    return Err(e);
                }
            }
        }
    }
}

fn open() -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    // Best effort: a larger buffer only means fewer waits.
    let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
    socket.connect(SOCKET)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_plain_or_binary_safe() {
        let mut entry = Vec::new();
        put(&mut entry, "MESSAGE", b"one line");
        put(&mut entry, "MESSAGE", b"two\nlines");
        let mut expected = b"MESSAGE=one line\nMESSAGE\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\n");
        assert_eq!(entry, expected);
    }

    #[test]
    fn field_names_are_what_journald_takes() {
        assert_eq!(field_name("SOCKHERD", "worker_id"), "SOCKHERD_WORKER_ID");
        assert_eq!(field_name("SOCKHERD", "exit.code"), "SOCKHERD_EXIT_CODE");
    }
}
