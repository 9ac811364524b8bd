//! The socket systemd listens on for `sd_notify` messages (`NOTIFY_SOCKET`).
//!
//! Messages are built with the `sd-notify` crate's [`NotifyState`]. The socket
//! is ours: that crate opens a new socket per message, sends blocking (which
//! would stall the whole event loop if systemd fell behind) and cannot reach
//! abstract addresses (`@name`). Here one socket is connected once and written
//! asynchronously. A malformed or unreachable `NOTIFY_SOCKET` costs a warning,
//! never the service.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr;

use sd_notify::NotifyState;

/// The longest `sockaddr_un` path, without the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The service manager's notification socket.
pub(crate) struct Notifier {
    /// Connected once to systemd's socket, non-blocking.
    socket: tokio::net::UnixDatagram,
    /// `NOTIFY_SOCKET` as given, for warnings.
    address: String,
    /// Set after the first failed send, so a gone systemd costs one warning, not one per message.
    warned: Cell<bool>,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or `None` when it is unset or unusable
    /// (after a warning saying why).
    pub(crate) fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::connect(&value) {
            Ok(notifier) => Some(notifier),
            Err(why) => {
                tracing::warn!(event = "notify-unavailable", "{why}; not notifying systemd");
                None
            }
        }
    }

    /// Connects to the socket `NOTIFY_SOCKET` names: an absolute path, or
    /// `@name` for an abstract address.
    pub(crate) fn connect(value: &OsStr) -> Result<Notifier, String> {
        let shown = value.to_string_lossy().into_owned();
        let address = parse_address(value)?;
        let connect = || -> io::Result<tokio::net::UnixDatagram> {
            let socket = std::os::unix::net::UnixDatagram::unbound()?;
            socket.connect_addr(&address)?;
            socket.set_nonblocking(true)?;
            tokio::net::UnixDatagram::from_std(socket)
        };
        let socket = connect().map_err(|e| format!("cannot reach NOTIFY_SOCKET={shown:?}: {e}"))?;
        Ok(Notifier {
            socket,
            address: shown,
            warned: Cell::new(false),
        })
    }

    /// Sends one message holding `states`, one per line. Failures are logged
    /// (once) and otherwise ignored: systemd's view is not worth the service.
    pub(crate) async fn send(&self, states: &[NotifyState<'_>]) {
        if states.is_empty() {
            return;
        }
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        let result = match self.socket.send(message.as_bytes()).await {
            Ok(n) if n == message.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                message.len()
            ))),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => self.warned.set(false),
            Err(e) if !self.warned.replace(true) => {
                tracing::warn!(
                    event = "notify-failed",
                    "cannot notify systemd at {}: {e}",
                    self.address
                );
            }
            Err(_) => {}
        }
    }
}

/// Checks `NOTIFY_SOCKET` the way `sd_notify(3)` reads it.
fn parse_address(value: &OsStr) -> Result<SocketAddr, String> {
    let bytes = value.as_bytes();
    let shown = value.to_string_lossy();
    let invalid = |why: &str| format!("NOTIFY_SOCKET={shown:?} is not usable: {why}");
    match bytes.first() {
        Some(b'/' | b'@') if bytes.len() > 1 => {}
        _ => {
            return Err(invalid(
                "expected an absolute path or an @abstract socket name",
            ))
        }
    }
    if bytes.len() > MAX_SOCKET_PATH || bytes.contains(&0) {
        return Err(invalid("too long, or contains a NUL byte"));
    }
    let address = match bytes[0] {
        b'@' => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => SocketAddr::from_pathname(value),
    };
    address.map_err(|e| invalid(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values() {
        assert!(parse_address(OsStr::new("/run/systemd/notify")).is_ok());
        assert!(parse_address(OsStr::new("@abstract")).is_ok());
        for bad in ["", "/", "@", "relative/path", "garbage"] {
            assert!(parse_address(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(parse_address(OsStr::new(&long)).is_err());
    }
}
