//! A shared-accept worker's `NOTIFY_SOCKET`: a datagram socket the manager
//! binds for it and reads, as systemd reads a service's.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::cmsg_space;
use nix::sys::socket::{
    bind, recvmsg, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use tokio::io::unix::AsyncFd;

use crate::conn::notice::{parse_notice, Garbage, Notice};
use crate::conn::protocol::MAX_MESSAGE;

/// The manager's end of one worker's `NOTIFY_SOCKET`: a datagram socket bound
/// to a path, removed when the worker is gone.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// The bound socket, non-blocking, watched by the runtime.
    fd: AsyncFd<OwnedFd>,
    /// Its path, the worker's `NOTIFY_SOCKET`; removed on drop.
    path: PathBuf,
}

impl Inbox {
    pub(crate) fn bind(path: PathBuf) -> io::Result<Inbox> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new(&path).map_err(|e| {
            io::Error::other(format!("notify socket {}: {}", path.display(), e.desc()))
        })?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| {
            io::Error::other(format!(
                "cannot bind notify socket {}: {}",
                path.display(),
                e.desc()
            ))
        })?;
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let fd = match unsafe { AsyncFd::register(fd) } {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(io::Error::from(e));
            }
        };
        Ok(Inbox { fd, path })
    }

    /// The notify socket an earlier image bound and carried across a re-exec.
    pub(crate) fn adopt(fd: OwnedFd, path: PathBuf) -> io::Result<Inbox> {
        // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Inbox { fd, path })
    }

    /// Its descriptor, for a re-exec to carry.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// The path the worker sends to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next message a process of the worker sent. Descriptors sent along
    /// (`FDSTORE=1`) are closed: the manager keeps no fd store.
    pub(crate) async fn recv(&self) -> io::Result<Result<Notice, Garbage>> {
        let mut buf = [0u8; MAX_MESSAGE + 1];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| receive(fd.get_ref().as_raw_fd(), &mut buf)) {
                Ok(Ok(Some(len))) => return Ok(parse_notice(&buf[..len])),
                Ok(Ok(None)) => {
                    return Ok(Err(Garbage(format!(
                        "message of more than {MAX_MESSAGE} bytes"
                    ))))
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one datagram: its length, or `None` if it was cut short.
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = cmsg_space!([RawFd; 16]);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let msg =
        recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), flags).map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed these fds for us; we own
                // them and close them at once.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Ok(None);
    }
    Ok(Some(msg.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notifications_arrive_and_the_path_goes_with_the_inbox() {
        let dir = std::env::temp_dir().join(format!("sockherd-inbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inbox = Inbox::bind(dir.join("0.0")).unwrap();
        let path = inbox.path().to_owned();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        sender.send_to(b"not a notification", &path).unwrap();
        let notice = inbox.recv().await.unwrap().unwrap();
        assert!(notice.ready);
        assert_eq!(notice.status.as_deref(), Some("up"));
        assert!(inbox.recv().await.unwrap().is_err());
        drop(inbox);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
