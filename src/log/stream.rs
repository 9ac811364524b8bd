//! A worker's own journal streams: under systemd, each worker's stdout and
//! stderr are connected to journald by the worker itself, and the manager is
//! out of the path of its lines.
//!
//! Between fork and exec ([`crate::pool::spawn`]) the new worker opens two
//! connections to `/run/systemd/journal/stdout`, sends each the stream
//! protocol's header (identifier `app/ID`, priority 6 for stdout and 3 for
//! stderr, no level prefix parsing) and puts them at fds 1 and 2. journald
//! takes the peer's credentials at connect time, so every line carries the
//! worker's own `_PID` (and `_COMM`, `_EXE`, `_CMDLINE`), `_SYSTEMD_UNIT` is
//! the app's, and `SYSLOG_IDENTIFIER=app/ID` names the worker
//! (`journalctl -u app -t app/3`). The header is followed by an empty line:
//! journald logs nothing for it, but reading it makes journald look the
//! worker up (its cgroup, hence its unit), and the worker does not exec
//! until journald has read it (a bounded wait): so it is looked up while it
//! surely runs, and the lines of a worker that dies at once (a crash at
//! start) are still filed under the app's unit. Without that wait, a worker
//! that crashed and was reaped before journald came to its stream had its
//! lines filed under no unit.
//!
//! Back-pressure is the socket's: when journald lags, the worker's writes
//! wait; nothing is dropped on the way (journald's own rate limit aside,
//! which the units set: docs/systemd.md). The stream protocol allows no
//! fields of the sender's own, which is why worker lines have no
//! `SOCKHERD_*` fields in this mode.
//!
//! Everything is prepared before the fork ([`Streams::prepare`]); the child
//! only makes async-signal-safe calls. If a connection cannot be made, the
//! worker keeps the pipe to the manager that fd 1 or 2 already is, and the
//! manager forwards its lines as in the embedded mode, with fields
//! ([`super::pump`]). Streams are used only when the manager itself logs to
//! the journal ([`enable`]).

use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;

/// journald's socket for stream connections.
pub(crate) const SOCKET: &str = "/run/systemd/journal/stdout";

/// The send buffer asked for, as systemd asks for its services' streams.
const SEND_BUFFER: libc::c_int = 8 << 20;

/// How long a new worker waits for journald to read its streams' headers, ms.
const HEADER_PATIENCE_MS: u32 = 250;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// From now on, workers connect their own journal streams.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The `SYSLOG_IDENTIFIER` of worker `id`'s lines: `app/3`. Control
/// characters and blanks, which would end the header line or be stripped,
/// become `_`.
pub(crate) fn identifier(app: &str, id: u32) -> String {
    let app: String = app
        .chars()
        .take(200)
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{app}/{id}")
}

/// What a new worker needs to connect its streams, made before the fork.
pub(crate) struct Streams {
    address: libc::sockaddr_un,
    address_len: libc::socklen_t,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Streams {
    /// The streams of worker `id`, if the manager logs to the journal.
    pub(crate) fn prepare(app: &str, id: u32) -> Option<Streams> {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
        let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = SOCKET.as_bytes();
        for (to, from) in address.sun_path.iter_mut().zip(path) {
            *to = *from as libc::c_char;
        }
        let address_len =
            (std::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t;
        let identifier = identifier(app, id);
        // identifier, unit (only root may set it), priority, level prefix,
        // forward to syslog, to kmsg, to the console; then the empty line.
        let header =
            |priority: u8| format!("{identifier}\n\n{priority}\n0\n0\n0\n0\n\n").into_bytes();
        Some(Streams {
            address,
            address_len,
            stdout: header(6),
            stderr: header(3),
        })
    }

    /// Connects the streams and puts them at fds 1 and 2; each one that
    /// fails leaves its fd as it was.
    ///
    /// # Safety
    ///
    /// For the forked child between fork and exec: it makes only
    /// async-signal-safe calls and allocates nothing.
    pub(crate) unsafe fn connect_in_child(&self) {
        let stdout = self.connect_one(&self.stdout, libc::STDOUT_FILENO);
        let stderr = self.connect_one(&self.stderr, libc::STDERR_FILENO);
        for (connected, fd) in [(stdout, libc::STDOUT_FILENO), (stderr, libc::STDERR_FILENO)] {
            if connected {
                wait_read(fd);
            }
        }
    }

    /// Connects one stream and puts it at `target`; whether it did.
    unsafe fn connect_one(&self, header: &[u8], target: libc::c_int) -> bool {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let address = std::ptr::addr_of!(self.address).cast::<libc::sockaddr>();
        if libc::connect(fd, address, self.address_len) < 0 {
            libc::close(fd);
            return false;
        }
        libc::shutdown(fd, libc::SHUT_RD);
        let size = SEND_BUFFER;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut sent = 0;
        while sent < header.len() {
            let n = libc::write(fd, header[sent..].as_ptr().cast(), header.len() - sent);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                libc::close(fd);
                return false;
            }
            sent += n as usize;
        }
        let placed = libc::dup2(fd, target) == target;
        libc::close(fd);
        placed
    }
}

/// Waits until journald has read what was written to stream `fd` (the
/// header and the empty line, so it has looked the worker up while it
/// surely runs), for at most [`HEADER_PATIENCE_MS`]: a journald that lags
/// delays a worker's start that long, no longer.
///
/// # Safety
///
/// Async-signal-safe (ioctl, nanosleep): for the child between fork and exec.
unsafe fn wait_read(fd: libc::c_int) {
    let tick = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    for _ in 0..HEADER_PATIENCE_MS {
        let mut unread: libc::c_int = 0;
        if libc::ioctl(fd, libc::TIOCOUTQ, &mut unread) < 0 || unread == 0 {
            return;
        }
        libc::nanosleep(&tick, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifier_fits_in_a_header_line() {
        assert_eq!(identifier("web", 3), "web/3");
        assert_eq!(identifier("we b\nx", 0), "we_b_x/0");
    }
}
