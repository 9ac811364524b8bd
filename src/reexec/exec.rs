//! The exec itself: the last step of a re-exec, run by the pool's loop once
//! it has carried itself ([`crate::pool::image`]), with nothing else running.
//!
//! It writes the [`Image`], lets every descriptor the image names cross the
//! exec, blocks the signals whose handlers the next image has yet to
//! install (they wait, pending, rather than kill the manager with their
//! default action), tells systemd `RELOADING=1` with a watchdog ping, and
//! `execve`s the binary with the same arguments. It runs on the thread that
//! started the workers — the main thread — whose parent-death signal their
//! lives hang on; an exec keeps that thread. If the exec fails, everything
//! is put back as it was and the caller hears why.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use sd_notify::NotifyState;

use super::image::{keep_open, Image, REEXEC_ENV};
use crate::log::{self, Pipe, Stream};
use crate::pool::carried::CarriedPool;
use crate::sockets::listener::CarriedListener;

/// The manager's own variables that described the first start and are
/// stale after it (the sockets crossed in the image).
const STALE: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// What the serving side hands to the exec, besides the pool.
pub(crate) struct Plan {
    pub binary: PathBuf,
    /// The image being replaced, and the one that replaces it.
    pub from_version: String,
    pub to_version: String,
    pub asked_usec: u64,
    pub listeners: Vec<CarriedListener>,
    pub shared: Option<(Vec<CarriedListener>, u64)>,
    pub metrics: Option<CarriedListener>,
    pub rundir: PathBuf,
    /// The workers' pipes, taken back from the log thread; put back here
    /// if the exec fails.
    pub pipes: Arc<Mutex<Vec<Pipe>>>,
}

/// The signals held across the exec: those the manager handles.
fn held() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// Lets the signals held across the exec through again: the next image
/// calls it once its handlers are installed.
pub(crate) fn release_signals() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&held()), None);
}

/// Replaces the process with `plan.binary`, handing it `pool`. Returns only
/// if it could not, with why; everything is then as it was.
pub(crate) fn exec(plan: Plan, mut pool: CarriedPool) -> String {
    let Plan {
        binary,
        from_version,
        to_version,
        asked_usec,
        listeners,
        shared,
        metrics,
        rundir,
        pipes,
    } = plan;
    let taken = pipes.lock().unwrap_or_else(|e| e.into_inner());
    for pipe in taken.iter() {
        if let Some(worker) = pool.workers.iter_mut().find(|w| w.pid == pipe.pid) {
            let slot = match pipe.stream {
                Stream::Stdout => &mut worker.stdout,
                Stream::Stderr => &mut worker.stderr,
            };
            *slot = Some(pipe.fd.as_raw_fd());
        }
    }
    let image = Image {
        state_version: super::image::STATE_VERSION,
        from_version: from_version.clone(),
        asked_usec,
        listeners,
        shared,
        metrics,
        rundir,
        pool,
    };
    let why = match replace(&binary, &image, &to_version) {
        Ok(never) => match never {},
        Err(why) => why,
    };
    drop(taken);
    why
}

/// Gives the pipes back to the log thread, after a re-exec that did not happen.
pub(crate) fn give_back(pipes: &Mutex<Vec<Pipe>>) {
    let mut pipes = pipes.lock().unwrap_or_else(|e| e.into_inner());
    for pipe in pipes.drain(..) {
        log::forward(pipe.fd, pipe.stream, pipe.id, pipe.pid);
    }
}

/// The exec, and the undoing of what led to it if it fails.
fn replace(
    binary: &std::path::Path,
    image: &Image,
    to_version: &str,
) -> Result<std::convert::Infallible, String> {
    let memfd = image
        .write()
        .map_err(|e| format!("cannot write the state: {e}"))?;
    let path = CString::new(binary.as_os_str().as_bytes())
        .map_err(|_| "the binary's path holds a NUL byte".to_owned())?;
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !STALE.iter().any(|s| k == s) && k != REEXEC_ENV)
        .filter_map(|(k, v)| {
            let mut pair = k;
            pair.push("=");
            pair.push(v);
            CString::new(pair.as_bytes()).ok()
        })
        .collect();
    env.push(
        CString::new(format!("{REEXEC_ENV}={}", memfd.as_raw_fd()))
            .map_err(|_| "unreachable: a number holds no NUL".to_owned())?,
    );
    let fds = image.fds();
    if let Err(e) = keep_open(&fds, true) {
        let _ = keep_open(&fds, false);
        return Err(format!("cannot keep the descriptors open: {e}"));
    }
    let mut old_mask = SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&held()),
        Some(&mut old_mask),
    );
    let _ = sd_notify::notify(false, &[NotifyState::Reloading, NotifyState::Watchdog]);
    tracing::info!(
        event = "reexec",
        "re-executing {}: {} → {}",
        binary.display(),
        image.from_version,
        to_version
    );
    log::flush();
    let err = nix::unistd::execve(&path, &args, &env)
        .err()
        .map_or_else(|| "execve returned".to_owned(), |e| e.desc().to_owned());
    // Still here: put everything back.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    let _ = keep_open(&fds, false);
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    drop(memfd);
    Err(format!("execve {}: {err}", binary.display()))
}
