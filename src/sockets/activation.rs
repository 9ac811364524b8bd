//! Socket activation: the listening sockets systemd passes us.
//!
//! systemd hands a service its sockets as inherited file descriptors starting at
//! fd 3 and describes them in three environment variables: `LISTEN_PID` (the
//! process they are meant for), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES`
//! (a `:`-separated name for each, from `FileDescriptorName=`). See
//! `sd_listen_fds(3)`.
//!
//! The parser is ours rather than `libsystemd::activation`: that crate silently
//! ignores variables meant for another PID (we must refuse them loudly, since a
//! wrapper that forgot to exec is a configuration bug), returns *no* sockets when
//! `LISTEN_FDNAMES` is absent, and reads and mutates the process environment,
//! which makes it untestable. [`parse`] is a pure function of the three values,
//! and [`take`] applies it to the real environment and fds.
//!
//! Every descriptor taken here is marked close-on-exec, so no worker inherits a
//! listening socket by accident, and is checked to really be a listening stream
//! socket or a bound UDP socket (`ListenDatagram=`, served under `--policy
//! none` only). We never `shutdown()` one: systemd keeps its own copy, and the
//! connections queued in it must survive a restart of the manager.

use std::fmt;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType};

use super::listener::{valid_name, Kind, Listener};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub(crate) const FIRST_FD: RawFd = 3;

/// More sockets than this in `LISTEN_FDS` is a corrupt environment, not a config.
const MAX_FDS: usize = 4096;

/// What the environment says we were passed: a name per descriptor.
#[derive(Debug, PartialEq, Eq)]
pub struct Passed {
    /// One entry per fd, starting at [`FIRST_FD`]; systemd's name for it.
    pub names: Vec<String>,
}

/// Why the activation environment cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// `LISTEN_PID` names a process other than us.
    WrongPid { listen_pid: String, ours: u32 },
    /// A variable is present but not what systemd would write.
    Malformed {
        variable: &'static str,
        value: String,
    },
    /// `LISTEN_FDNAMES` has a different number of names than `LISTEN_FDS`.
    NameCount { fds: usize, names: usize },
    /// A passed descriptor is not a listening stream socket nor a UDP socket.
    NotListening { fd: RawFd, why: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongPid { listen_pid, ours } => write!(
                f,
                "LISTEN_PID={listen_pid} is not this process (pid {ours}): the sockets were meant for another program"
            ),
            Error::Malformed { variable, value } => {
                write!(f, "{variable}={value:?} is not valid socket-activation input")
            }
            Error::NameCount { fds, names } => write!(
                f,
                "LISTEN_FDS={fds} but LISTEN_FDNAMES has {names} names"
            ),
            Error::NotListening { fd, why } => {
                write!(
                    f,
                    "passed fd {fd} is not a listening stream socket nor a UDP socket: {why}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// Interprets the activation variables, given as they are found in the environment.
///
/// `Ok(None)` means socket activation is not in use: no `LISTEN_FDS`, zero of
/// them, or no `LISTEN_PID` to say they are ours (as `sd_listen_fds(3)`
/// decides). A `LISTEN_PID` that names another process is refused loudly: a
/// wrapper that forgot to exec is a configuration bug.
///
/// Numbers must be plain decimal, as systemd writes them. `sd_listen_fds(3)`
/// also takes a sign, leading blanks and C's octal and hex notation (its
/// `strtoul` has base 0, so `LISTEN_PID=0123` is octal there); a value in
/// such a form was not written by systemd, so it is refused as malformed
/// rather than read one way or the other.
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> Result<Option<Passed>, Error> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let malformed = |variable: &'static str, value: &str| Error::Malformed {
        variable,
        value: value.to_owned(),
    };
    let parsed = decimal(pid).ok_or_else(|| malformed("LISTEN_PID", pid))?;
    if parsed != u64::from(our_pid) {
        return Err(Error::WrongPid {
            listen_pid: pid.to_owned(),
            ours: our_pid,
        });
    }
    let count = decimal(fds)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_FDS)
        .ok_or_else(|| malformed("LISTEN_FDS", fds))?;
    if count == 0 {
        return Ok(None);
    }
    let names = match listen_fdnames {
        // systemd names unnamed sockets "unknown"; so do we when no names came.
        None => vec!["unknown".to_owned(); count],
        Some(list) => {
            let names: Vec<String> = list.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(Error::NameCount {
                    fds: count,
                    names: names.len(),
                });
            }
            if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
                return Err(Error::Malformed {
                    variable: "LISTEN_FDNAMES",
                    value: bad.clone(),
                });
            }
            names
        }
    };
    Ok(Some(Passed { names }))
}

/// A number as systemd writes it: decimal digits, no sign, no leading zero.
fn decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

/// Reads the activation variables of this process and takes ownership of the
/// descriptors they describe. The caller strips the variables from workers.
pub(crate) fn take() -> Result<Option<Vec<Listener>>, Error> {
    let var = |name| std::env::var(name).ok();
    let passed = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    let Some(passed) = passed else {
        return Ok(None);
    };
    let mut listeners = Vec::with_capacity(passed.names.len());
    for (offset, name) in passed.names.into_iter().enumerate() {
        let fd = FIRST_FD + offset as RawFd;
        let kind = check_listening(fd)?;
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| Error::NotListening {
            fd,
            why: e.desc().to_owned(),
        })?;
        // SAFETY: `check_listening` proved fd is an open socket, and systemd
        // passed it to this process alone: nothing else here owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = Listener::from_passed(owned, name, kind)
            .map_err(|why| Error::NotListening { fd, why })?;
        listeners.push(listener);
    }
    Ok(Some(listeners))
}

/// Checks that `fd` is a listening stream socket or a datagram socket, and
/// says which.
fn check_listening(fd: RawFd) -> Result<Kind, Error> {
    let not = |why: &str| Error::NotListening {
        fd,
        why: why.to_owned(),
    };
    if fcntl(fd, FcntlArg::F_GETFD).is_err() {
        return Err(not("it is not open"));
    }
    // SAFETY: fd was just checked to be open, and is only borrowed for the calls below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind = getsockopt(&borrowed, sockopt::SockType).map_err(|_| not("it is not a socket"))?;
    match kind {
        SockType::Stream => {}
        SockType::Datagram => return Ok(Kind::Datagram),
        _ => return Err(not("it is neither a stream nor a datagram socket")),
    }
    match getsockopt(&borrowed, sockopt::AcceptConn) {
        Ok(true) => Ok(Kind::Stream),
        _ => Err(not(
            "listen() was not called on it (Accept=no sockets only)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_means_not_activated() {
        assert_eq!(parse(None, None, None, 7), Ok(None));
        assert_eq!(parse(Some("7"), Some("0"), None, 7), Ok(None));
    }

    #[test]
    fn names_are_read_or_defaulted() {
        let p = parse(Some("7"), Some("2"), Some("http:admin"), 7).unwrap();
        assert_eq!(
            p,
            Some(Passed {
                names: vec!["http".into(), "admin".into()]
            })
        );
        let p = parse(Some("7"), Some("1"), None, 7).unwrap();
        assert_eq!(
            p,
            Some(Passed {
                names: vec!["unknown".into()]
            })
        );
    }

    #[test]
    fn sockets_without_a_pid_are_not_ours() {
        // sd_listen_fds(3): no LISTEN_PID, no sockets.
        assert_eq!(parse(None, Some("1"), None, 7), Ok(None));
        assert_eq!(parse(None, Some("1"), Some("http"), 7), Ok(None));
    }

    #[test]
    fn only_the_decimal_that_systemd_writes_is_taken() {
        for (pid, fds) in [
            ("7", "+1"),
            ("07", "1"),
            ("+7", "1"),
            (" 7", "1"),
            ("7", "01"),
            ("7", " 1"),
            ("0x7", "1"),
        ] {
            assert!(
                matches!(
                    parse(Some(pid), Some(fds), None, 7),
                    Err(Error::Malformed { .. })
                ),
                "LISTEN_PID={pid:?} LISTEN_FDS={fds:?}"
            );
        }
    }

    #[test]
    fn another_pid_is_refused() {
        let e = parse(Some("8"), Some("1"), None, 7).unwrap_err();
        assert!(matches!(e, Error::WrongPid { .. }));
        assert!(e.to_string().contains("not this process"));
    }

    #[test]
    fn malformed_values_are_refused() {
        for (pid, fds, names) in [
            (Some("x"), Some("1"), None),
            (Some("7"), Some("-1"), None),
            (Some("7"), Some("1e3"), None),
            (Some("7"), Some("99999999"), None),
            (Some("7"), Some("2"), Some("a")),
            (Some("7"), Some("1"), Some("")),
            (Some("7"), Some("1"), Some("bad name")),
        ] {
            assert!(
                parse(pid, fds, names, 7).is_err(),
                "{pid:?} {fds:?} {names:?}"
            );
        }
    }
}
