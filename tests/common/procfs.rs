//! Processes and sockets as `/proc` shows them: whether a pid is alive, its
//! environment, its descriptors, and whether a request was read.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::wait_for;

/// Whether `pid` is a live process (a zombie is dead: its fds are closed).
pub fn alive(pid: u32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// Field `n` of `/proc/PID/stat`, counting from 0 at the one after the
/// command name (the state).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n).map(str::to_owned)
}

/// The process group `pid` belongs to.
pub fn process_group(pid: u32) -> u32 {
    stat_field(pid, 2)
        .and_then(|g| g.parse().ok())
        .expect("a process group in /proc/PID/stat")
}

/// When `pid` started, in clock ticks since boot.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 19)?.parse().ok()
}

/// Waits until none of `pids` is alive.
pub fn wait_gone(pids: &[u32]) {
    wait_for(&format!("processes {pids:?} to be gone"), || {
        (!pids.iter().any(|p| alive(*p))).then_some(())
    })
}

/// The environment `pid` was started with.
pub fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    raw.split(|b| *b == 0)
        .filter_map(|var| {
            let var = String::from_utf8_lossy(var);
            let (k, v) = var.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Where each of `pid`'s descriptors points (`socket:[123]`, a path, …).
pub fn fds(pid: u32) -> Vec<(RawFd, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd = entry.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(entry.path()).ok()?;
        Some((fd, target.to_string_lossy().into_owned()))
    })
    .collect()
}

/// Whether the server side of the TCP connection `server` ↔ `client` has an
/// empty receive queue: the request sent on it has been read, so a worker has
/// it in hand (the manager never reads from connections).
pub fn request_taken(server: SocketAddr, client: SocketAddr) -> bool {
    let table = if server.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).unwrap_or_default();
    let port = |hex: &str| {
        hex.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 4
            && port(cols[1]) == Some(server.port())
            && port(cols[2]) == Some(client.port())
            && cols[4].rsplit_once(':').map(|(_, rx)| rx) == Some("00000000")
    })
}
