//! Closing the manager's copies of connections it has handed over, many at once.
//!
//! Once a connection is on its way to a worker, the manager's copy of the
//! descriptor must go at once: until it does, the worker's `close()` does
//! not end the connection. A wake-up that handed over several closes them
//! together. Descriptors accepted one after another mostly get consecutive
//! numbers (the kernel gives out the lowest free one), so a run of them
//! goes in one `close_range(2)`; where that call is missing (Linux < 5.9)
//! or filtered out, each is closed by itself, as before.

use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `close_range` was refused once: then it is not tried again.
static NO_CLOSE_RANGE: AtomicBool = AtomicBool::new(false);

/// Closes every descriptor of `fds`.
pub(crate) fn close_all(fds: &mut Vec<OwnedFd>) {
    match fds.len() {
        0 => return,
        1 => {
            fds.clear();
            return;
        }
        _ => {}
    }
    let mut raw: Vec<RawFd> = fds.drain(..).map(IntoRawFd::into_raw_fd).collect();
    raw.sort_unstable();
    let mut first = 0;
    for at in 1..=raw.len() {
        if at == raw.len() || raw[at] != raw[at - 1] + 1 {
            close_run(&raw[first..at]);
            first = at;
        }
    }
}

/// Closes `run`, consecutive descriptor numbers that are all ours.
fn close_run(run: &[RawFd]) {
    if run.len() > 1 && !NO_CLOSE_RANGE.load(Ordering::Relaxed) {
        let (low, high) = (
            run[0] as nix::libc::c_uint,
            run[run.len() - 1] as nix::libc::c_uint,
        );
        // SAFETY: every descriptor from `low` to `high` is one of ours, taken
        // out of its OwnedFd, and used for nothing after this.
        if unsafe { nix::libc::syscall(nix::libc::SYS_close_range, low, high, 0) } == 0 {
            return;
        }
        NO_CLOSE_RANGE.store(true, Ordering::Relaxed);
    }
    for fd in run {
        // SAFETY: ours, as above; closed once.
        unsafe { nix::libc::close(*fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn open(fd: RawFd) -> bool {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
    }

    #[test]
    fn closes_runs_and_strays_and_nothing_else() {
        let keep = std::fs::File::open("/dev/null").unwrap();
        let mut fds: Vec<OwnedFd> = (0..6)
            .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
            .collect();
        // Not in order, and with a gap where `keep`'s neighbour was.
        fds.swap(0, 4);
        let stray = fds.remove(2);
        let numbers: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        close_all(&mut fds);
        assert!(fds.is_empty());
        for fd in numbers {
            assert!(!open(fd), "fd {fd} left open");
        }
        assert!(open(stray.as_raw_fd()) && open(keep.as_raw_fd()));
    }
}
