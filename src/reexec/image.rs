//! The state one image of the manager hands to the next: what it is, how it
//! travels, and how the next image reads it.
//!
//! It travels as JSON in a memfd the exec keeps open, named by
//! `SOCKHERD_REEXEC=<fd>`; the descriptors it names (sockets, channels,
//! pipes) are kept open across the exec too, and the next image takes each
//! over exactly once ([`Image::read`] takes the variable out of the
//! environment, so the image is read once). Its format is versioned
//! ([`STATE_VERSION`]): the running image asks the new binary whether it
//! reads this version before it execs ([`super::check`]).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pool::carried::CarriedPool;
use crate::sockets::listener::CarriedListener;

/// The version of [`Image`]'s format. A binary reads only its own.
pub(crate) const STATE_VERSION: u32 = 1;

/// Names the memfd holding the image, in the next image's environment.
pub(crate) const REEXEC_ENV: &str = "SOCKHERD_REEXEC";

/// Images larger than this are not read: a pool of thousands of workers
/// fits in a few MiB.
const MAX_IMAGE: u64 = 64 << 20;

/// Everything the manager carries across a re-exec.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Image {
    pub state_version: u32,
    /// The version of the image that wrote it.
    pub from_version: String,
    /// `CLOCK_MONOTONIC` when the re-exec was asked for, µs: how long it took.
    pub asked_usec: u64,
    /// The dispatch sockets, in the order their indexes refer to.
    pub listeners: Vec<CarriedListener>,
    /// Under `--policy none`: the sockets the workers share, and how many
    /// notify sockets were made.
    pub shared: Option<(Vec<CarriedListener>, u64)>,
    pub metrics: Option<CarriedListener>,
    /// The manager's directory (the Node.js shim, the notify sockets).
    pub rundir: PathBuf,
    pub pool: CarriedPool,
}

impl Image {
    /// Writes the image into a memfd the exec keeps open.
    pub(crate) fn write(&self) -> std::io::Result<OwnedFd> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        // Not close-on-exec: it is what crosses.
        // SAFETY: a NUL-terminated name and no flags; returns a new fd.
        let fd = unsafe { nix::libc::memfd_create(c"sockherd-image".as_ptr(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: just created; nothing else owns it.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(&json)?;
        file.rewind()?;
        Ok(OwnedFd::from(file))
    }

    /// Every descriptor the image names, the memfd aside.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd).collect();
        if let Some((shared, _)) = &self.shared {
            fds.extend(shared.iter().map(|l| l.fd));
        }
        fds.extend(self.metrics.iter().map(|l| l.fd));
        for worker in &self.pool.workers {
            fds.push(worker.transport.fd());
            fds.extend(worker.stdout);
            fds.extend(worker.stderr);
        }
        fds
    }

    /// The image an earlier image of this manager left, if this process was
    /// started by a re-exec; the variable is removed, so no worker sees it.
    pub(crate) fn take() -> Option<Result<Image, String>> {
        let value = std::env::var_os(REEXEC_ENV)?;
        // SAFETY: no other thread runs yet: the runtime is a current-thread
        // one that has run nothing, and the log thread starts later.
        unsafe { std::env::remove_var(REEXEC_ENV) };
        let fd: RawFd = match value.to_str().and_then(|v| v.parse().ok()) {
            Some(fd) if fd > 2 => fd,
            _ => return Some(Err(format!("{REEXEC_ENV}={value:?} is not a descriptor"))),
        };
        Some(Image::read(fd))
    }

    fn read(fd: RawFd) -> Result<Image, String> {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(format!("{REEXEC_ENV}: descriptor {fd} is not open"));
        }
        // SAFETY: the fd was passed for the image alone; it is closed here.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut json = Vec::new();
        file.take(MAX_IMAGE)
            .read_to_end(&mut json)
            .map_err(|e| format!("cannot read the state: {e}"))?;
        let probe: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| format!("the state is not JSON: {e}"))?;
        let version = probe.get("state_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(STATE_VERSION)) {
            return Err(format!(
                "the state is version {version:?}; this build reads version {STATE_VERSION}"
            ));
        }
        serde_json::from_value(probe).map_err(|e| format!("the state is malformed: {e}"))
    }
}

/// `CLOCK_MONOTONIC` now, µs: the same clock on both sides of the exec.
pub(crate) fn monotonic_usec() -> u64 {
    let mut t = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `t`.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// Makes `fds` cross the exec (`inherit`), or not again.
pub(crate) fn keep_open(fds: &[RawFd], inherit: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    for fd in fds {
        let flags = if inherit {
            FdFlag::empty()
        } else {
            FdFlag::FD_CLOEXEC
        };
        fcntl(*fd, FcntlArg::F_SETFD(flags))?;
    }
    Ok(())
}
