//! A worker process as a child of the manager, held by a pidfd.
//!
//! A pidfd names one process for as long as the descriptor is open, recycled
//! pid or not, and it is an ordinary fd: readable when the process exits,
//! and reaped with `waitid(P_PIDFD)`. So a worker is held the same way
//! whether this image of the manager started it or an earlier one did and
//! handed it over in a re-exec ([`crate::reexec`]): the worker is a child of
//! the same process either way, and [`Child::adopt`] is all it takes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A child process of the manager, until it is reaped.
pub(crate) struct Child {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

impl Child {
    /// Holds child `pid`. It must be a child of this process that has not
    /// been reaped (a zombie is fine: it is reaped by [`Child::wait`]).
    pub(crate) fn adopt(pid: u32) -> io::Result<Child> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // pidfd_open's fds are close-on-exec.
        Ok(Child {
            pid,
            // SAFETY: the AsyncFd owns the fd, so it stays open while registered.
            pidfd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(io::Error::from)?,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for it to exit and reaps it.
    pub(crate) async fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            let mut guard = self.pidfd.readable().await?;
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            guard.clear_ready();
        }
    }

    /// Whether it has not exited yet: until it is reaped its pid cannot be
    /// recycled, so a signal sent while this holds reaches it and nothing else.
    pub(crate) fn running(&self) -> bool {
        matches!(self.check(libc::WNOWAIT), Ok(None))
    }

    /// Reaps it if it has exited.
    pub(crate) fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.check(0)
    }

    /// `waitid` without waiting; `flags` may add `WNOWAIT` (leave it a zombie).
    fn check(&self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        // SAFETY: zeroed siginfo is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own pidfd, writing into `info`.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.get_ref().as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | flags,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(None);
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` (si_pid is 0 when nothing exited).
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(match code {
            libc::CLD_EXITED => ExitStatus::from_raw((status & 0xff) << 8),
            libc::CLD_DUMPED => ExitStatus::from_raw((status & 0x7f) | 0x80),
            _ => ExitStatus::from_raw(status & 0x7f),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    // Reaped through the pidfd, not the std handle.
    #[allow(clippy::zombie_processes)]
    async fn exits_are_reported_as_waitpid_would() {
        for (script, code, signal) in [("exit 3", Some(3), None), ("kill -9 $$", None, Some(9))] {
            let spawned = std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .expect("sh");
            let child = Child::adopt(spawned.id()).expect("pidfd");
            let status = child.wait().await.expect("reaped");
            assert_eq!(status.code(), code, "{script}");
            assert_eq!(status.signal(), signal, "{script}");
        }
    }
}
