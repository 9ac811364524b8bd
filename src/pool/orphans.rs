//! What a worker leaves behind: the processes it started.
//!
//! A worker leads its own process group, and whatever it starts joins that
//! group unless it moves away; when the worker exits, its group is killed.
//! What moved away (`setsid()`, `setpgid()`) would outlive it. So the manager
//! is a *child subreaper* ([`adopt`]): a process whose parent dies is
//! re-parented to the manager rather than to init. The manager then knows
//! every such process as a child of its own, and [`tidy`] kills those that
//! belong to no live worker's process group and reaps those that exited.
//!
//! Where it ends: a process that moved out of its worker's group while the
//! worker still runs is left alone until its own parent dies (only then is it
//! the manager's); one whose parent is still alive is not the manager's to
//! see. If the manager itself is SIGKILLed nothing here runs: the workers die
//! by their parent-death signal, and what they left behind is init's, or, under
//! systemd, killed with the unit's cgroup.

use std::collections::HashSet;
use std::io::Read;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// Children the manager starts for itself (not workers): [`tidy`] leaves
/// them alone. Held while one is spawned, so none is seen unregistered.
static HELPERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Starts a helper process of the manager's own and runs it to its end
/// within `patience` (killed past it): its exit status and what it printed.
/// Blocks: call it off the event loop.
pub(crate) fn run_helper(
    command: &mut std::process::Command,
    patience: Duration,
) -> std::io::Result<(ExitStatus, String, String)> {
    let mut child = {
        let mut helpers = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        helpers.push(child.id());
        child
    };
    let pid = child.id();
    let deadline = Instant::now() + patience;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("did not answer within {}s", patience.as_secs()),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(e),
        }
    };
    HELPERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
    let status = status?;
    // What it printed is a line or two: it fitted in the pipes.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    Ok((status, out, err))
}

/// Makes the manager the reaper of its workers' orphaned descendants.
pub(crate) fn adopt() -> std::io::Result<()> {
    // SAFETY: a plain prctl on this process; no pointers are passed.
    if unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Kills the manager's children that are no live worker and belong to no live
/// worker's process group (`workers`: the pids of the live workers, each
/// leading its group), and reaps those that exited. Only children the manager
/// adopted are touched: the workers are reaped by the tasks that watch them.
pub(crate) fn tidy(workers: &HashSet<u32>) {
    let helpers = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
    for pid in children() {
        if workers.contains(&pid) || helpers.contains(&pid) {
            continue;
        }
        let Some((state, group)) = state_and_group(pid) else {
            continue;
        };
        let child = Pid::from_raw(pid as i32);
        if state == 'Z' {
            let _ = waitpid(child, Some(WaitPidFlag::WNOHANG));
        } else if !workers.contains(&group) {
            // A child of ours cannot be a recycled pid until we reap it.
            tracing::warn!(
                event = "orphan-killed",
                "a process a worker left behind (pid {pid}, process group {group}) is killed"
            );
            let _ = kill(child, Signal::SIGKILL);
        }
    }
}

/// The pids of every child of this process, from every thread's `children`.
fn children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A process's state letter and process group, from `/proc/<pid>/stat`.
fn state_and_group(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parens): state, ppid, pgrp.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}
