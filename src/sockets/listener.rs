//! Listening sockets, whoever opened them.
//!
//! A [`Listener`] is one listening socket and the name workers know it by.
//! It either came from systemd ([`super::activation`]) or was bound here from a
//! `--listen` address, the embedded default for running without systemd.
//! Everything after this point treats both the same way.
//!
//! Most are stream sockets (TCP or Unix), which the manager accepts on and
//! dispatches. A UDP socket (systemd's `ListenDatagram=`, or `--listen
//! udp:IP:PORT`) has no connections to dispatch: it is served only under
//! `--policy none`, where the workers receive on it themselves.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
};

/// Queue length for sockets we bind ourselves; the kernel caps it at `somaxconn`.
/// Generous, because this queue is what holds connections while no worker is ready.
const BACKLOG: i32 = 4096;

/// A listening socket as a re-exec carries it ([`Listener::carry`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CarriedListener {
    pub fd: RawFd,
    pub name: String,
    pub datagram: bool,
    pub created_path: Option<PathBuf>,
}

/// One listening socket.
#[derive(Debug)]
pub(crate) struct Listener {
    /// The socket itself, close-on-exec, owned by the manager.
    pub fd: OwnedFd,
    /// Its name (`FileDescriptorName=` or the `NAME=` of `--listen`); workers
    /// receive it with every connection so they can tell sockets apart.
    pub name: String,
    /// Where it listens, for logs and for matching a Node app's `listen(port)`.
    pub local: Local,
    /// A stream socket, or a UDP socket.
    pub kind: Kind,
    /// A Unix socket file we created and must remove when we are done with it.
    created_path: Option<PathBuf>,
}

/// What a listening socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connections: TCP or a Unix stream socket, listening.
    Stream,
    /// UDP datagrams: a bound socket, served under `--policy none` only.
    Datagram,
}

/// The local address of a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Inet(SocketAddr),
    Unix(PathBuf),
    /// An abstract or unnamed Unix socket: nothing to show but the fact.
    UnixUnnamed,
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Local::Inet(addr) => write!(f, "{addr}"),
            Local::Unix(path) => write!(f, "{}", path.display()),
            Local::UnixUnnamed => f.write_str("unix:(abstract)"),
        }
    }
}

/// A parsed `--listen` argument: `[NAME=]IP:PORT`, `[NAME=][IPv6]:PORT`,
/// `[NAME=]PATH` or `[NAME=]udp:IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenAddr {
    name: String,
    target: Local,
    kind: Kind,
}

impl ListenAddr {
    /// The same address under another name.
    pub(crate) fn named(mut self, name: &str) -> ListenAddr {
        name.clone_into(&mut self.name);
        self
    }
}

/// systemd's rule for `FileDescriptorName=`: 1–255 printable ASCII, no `:`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(arg: &str) -> Result<Self, String> {
        let (name, addr) = match arg.split_once('=') {
            // A path or an address may hold a `=` of its own; a name holds
            // neither `/` nor `:`.
            Some((name, addr)) if !name.contains(['/', ':']) => {
                if !valid_name(name) {
                    return Err(format!(
                        "invalid listen address {arg:?}: the socket name before `=` must be 1 to \
                         255 printable ASCII characters without `:` (as FileDescriptorName=)"
                    ));
                }
                (name.to_owned(), addr)
            }
            _ => ("unknown".to_owned(), arg),
        };
        let invalid = || {
            format!(
                "invalid listen address {arg:?}: expected IP:PORT, [IPv6]:PORT, \
                 udp:IP:PORT or a socket path starting with / or ."
            )
        };
        let (target, kind) = if let Some(udp) = addr.strip_prefix("udp:") {
            let ip: SocketAddr = udp.parse().map_err(|_| invalid())?;
            (Local::Inet(ip), Kind::Datagram)
        } else if addr.starts_with('/') || addr.starts_with('.') {
            (Local::Unix(PathBuf::from(addr)), Kind::Stream)
        } else {
            (
                Local::Inet(addr.parse().map_err(|_| invalid())?),
                Kind::Stream,
            )
        };
        Ok(ListenAddr { name, target, kind })
    }
}

impl Listener {
    /// Adopts a socket systemd passed us, of the `kind` it was found to be.
    pub(crate) fn from_passed(fd: OwnedFd, name: String, kind: Kind) -> Result<Listener, String> {
        let local = local_of(&fd).map_err(|e| e.to_string())?;
        if kind == Kind::Datagram && !matches!(local, Local::Inet(_)) {
            return Err(
                "it is a Unix datagram socket; only UDP datagram sockets are served".into(),
            );
        }
        Ok(Listener {
            fd,
            name,
            local,
            kind,
            created_path: None,
        })
    }

    /// What the next image needs to take this socket over in a re-exec: its
    /// descriptor (kept open across the exec), name and kind, and the
    /// socket file it must remove when done, if it created one.
    pub(crate) fn carry(&self) -> CarriedListener {
        CarriedListener {
            fd: self.fd.as_raw_fd(),
            name: self.name.clone(),
            datagram: self.kind == Kind::Datagram,
            created_path: self.created_path.clone(),
        }
    }

    /// The socket an earlier image carried.
    pub(crate) fn adopt(carried: CarriedListener) -> Result<Listener, String> {
        // SAFETY: the fd was inherited across the exec for this socket alone.
        let fd = unsafe { OwnedFd::from_raw_fd(carried.fd) };
        let kind = if carried.datagram {
            Kind::Datagram
        } else {
            Kind::Stream
        };
        let local = local_of(&fd).map_err(|e| format!("socket {}: {e}", carried.name))?;
        Ok(Listener {
            fd,
            name: carried.name,
            local,
            kind,
            created_path: carried.created_path,
        })
    }

    /// How logs show it: its address, `udp:` before a UDP one.
    pub(crate) fn shown(&self) -> String {
        match self.kind {
            Kind::Stream => self.local.to_string(),
            Kind::Datagram => format!("udp:{}", self.local),
        }
    }

    /// Binds and listens on a `--listen` address.
    pub(crate) fn bind(addr: &ListenAddr) -> Result<Listener, String> {
        let fail =
            |what: &str, e: nix::Error| format!("cannot {what} {}: {}", addr.target, e.desc());
        let (fd, created_path) = match &addr.target {
            Local::Inet(sa) => {
                let family = if sa.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                let kind = match addr.kind {
                    Kind::Stream => SockType::Stream,
                    Kind::Datagram => SockType::Datagram,
                };
                let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)
                    .map_err(|e| fail("create a socket for", e))?;
                setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail("configure", e))?;
                bind(fd.as_raw_fd(), &SockaddrStorage::from(*sa)).map_err(|e| fail("bind", e))?;
                (fd, None)
            }
            Local::Unix(path) => {
                remove_stale_socket(path)?;
                let fd = socket(
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .map_err(|e| fail("create a socket for", e))?;
                let ua = UnixAddr::new(path).map_err(|e| fail("use the path", e))?;
                bind(fd.as_raw_fd(), &ua).map_err(|e| fail("bind", e))?;
                (fd, Some(path.clone()))
            }
            Local::UnixUnnamed => unreachable!("ListenAddr never parses to an unnamed socket"),
        };
        if addr.kind == Kind::Stream {
            let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
            listen(&fd, backlog).map_err(|e| fail("listen on", e))?;
        }
        let local = local_of(&fd).map_err(|e| fail("read the address of", e))?;
        Ok(Listener {
            fd,
            name: addr.name.clone(),
            local,
            kind: addr.kind,
            created_path,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.created_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn local_of(fd: &impl AsFd) -> Result<Local, nix::Error> {
    let addr: SockaddrStorage = getsockname(fd.as_fd().as_raw_fd())?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Ok(Local::Inet(SocketAddr::V4((*v4).into())));
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Ok(Local::Inet(SocketAddr::V6((*v6).into())));
    }
    match addr.as_unix_addr().and_then(|u| u.path()) {
        Some(path) => Ok(Local::Unix(path.to_path_buf())),
        None if addr.family() == Some(AddressFamily::Unix) => Ok(Local::UnixUnnamed),
        None => Err(nix::Error::EAFNOSUPPORT),
    }
}

/// A socket file left behind by a previous run blocks `bind`. Remove it only if
/// it is a socket nobody listens on, of any type; anything else is in use, or
/// the user's file.
fn remove_stale_socket(path: &std::path::Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "cannot listen on {}: it exists and is not a socket",
            path.display()
        ));
    }
    let address =
        UnixAddr::new(path).map_err(|e| format!("cannot use {}: {}", path.display(), e.desc()))?;
    // A socket of another type refuses a connection with EPROTOTYPE, which
    // says nothing about whether it is alive: ask it in each type in turn.
    for kind in [SockType::Stream, SockType::Datagram, SockType::SeqPacket] {
        let probe = socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| format!("cannot probe {}: {}", path.display(), e.desc()))?;
        match connect(probe.as_raw_fd(), &address) {
            Err(Errno::EPROTOTYPE) => continue,
            // Nobody is bound to it: it is stale.
            Err(Errno::ECONNREFUSED) => break,
            _ => {
                return Err(format!(
                    "cannot listen on {}: the socket is in use by another process",
                    path.display()
                ))
            }
        }
    }
    std::fs::remove_file(path)
        .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        let a: ListenAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(a.name, "unknown");
        assert_eq!(a.target, Local::Inet("127.0.0.1:8080".parse().unwrap()));
        let a: ListenAddr = "admin=[::1]:9000".parse().unwrap();
        assert_eq!(a.name, "admin");
        assert_eq!(a.target, Local::Inet("[::1]:9000".parse().unwrap()));
        let a: ListenAddr = "/run/app.sock".parse().unwrap();
        assert_eq!(a.target, Local::Unix("/run/app.sock".into()));
        let a: ListenAddr = "dns=udp:127.0.0.1:5353".parse().unwrap();
        assert_eq!((a.name.as_str(), a.kind), ("dns", Kind::Datagram));
        assert_eq!(a.target, Local::Inet("127.0.0.1:5353".parse().unwrap()));
        let bad_ones = [
            "8080",
            "localhost:80",
            "127.0.0.1",
            "[::1]",
            "x=y",
            "udp:/run/a.sock",
            "udp:5353",
        ];
        for bad in bad_ones {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_systemds_rule_for_file_descriptor_names() {
        let long = format!("{}=127.0.0.1:80", "n".repeat(256));
        for bad in [
            "a b=127.0.0.1:80",
            "line\nbreak=127.0.0.1:80",
            "tab\t=127.0.0.1:80",
            "é=127.0.0.1:80",
            long.as_str(),
        ] {
            let refused = bad.parse::<ListenAddr>().expect_err(bad);
            assert!(refused.contains("name"), "{refused}");
        }
        let longest = format!("{}=127.0.0.1:80", "n".repeat(255));
        assert!(longest.parse::<ListenAddr>().is_ok());
        let a: ListenAddr = "/run/with=sign.sock".parse().unwrap();
        assert_eq!(a.target, Local::Unix("/run/with=sign.sock".into()));
    }

    #[test]
    fn a_live_socket_of_any_type_is_not_removed() {
        let dir = std::env::temp_dir().join(format!("sockherd-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dgram.sock");
        let live = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let refused = remove_stale_socket(&path).expect_err("a datagram socket is listening");
        assert!(refused.contains("in use"), "{refused}");
        assert!(path.exists());
        let seq = dir.join("seq.sock");
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &UnixAddr::new(&seq).unwrap()).unwrap();
        listen(&fd, Backlog::new(1).unwrap()).unwrap();
        assert!(
            remove_stale_socket(&seq).is_err(),
            "a seqpacket socket is listening"
        );
        drop((live, fd));
        remove_stale_socket(&path).expect("nobody listens any more");
        remove_stale_socket(&seq).expect("nobody listens any more");
        assert!(!path.exists() && !seq.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
