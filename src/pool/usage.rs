//! What a process uses, read from `/proc`: memory, CPU time, start time.
//!
//! The pool samples workers for `--max-memory`; `ListWorkers` and metrics
//! read the same figures when asked; the `status` command reads them to show
//! CPU use. A read of `/proc` is a file read that can block, so the manager
//! reads off its event loop ([`sample`]). Units come from the kernel
//! (`sysconf`): page size for RSS, clock ticks for CPU and start time.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::unistd::{sysconf, SysconfVar};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Resident memory.
    pub rss_bytes: u64,
    /// User + system CPU time.
    pub cpu_usec: u64,
    /// When it started, µs since the Unix epoch.
    pub started_usec: u64,
}

/// Reads `pid`'s usage; `None` if it is gone (or `/proc` is not mounted).
pub(crate) fn of(pid: u32) -> Option<Usage> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces and parens):
    // utime is field 14, stime 15, starttime 22 of proc(5); here 11, 12, 19.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let (page, ticks, boot) = units()?;
    Some(Usage {
        rss_bytes: pages * page,
        cpu_usec: (field(11)? + field(12)?) * 1_000_000 / ticks,
        started_usec: boot * 1_000_000 + field(19)? * 1_000_000 / ticks,
    })
}

/// Reads the usage of every process in `pids` on a blocking thread, in the
/// same order; `None` for one that is gone.
pub(crate) async fn sample(pids: Vec<u32>) -> Vec<Option<Usage>> {
    let count = pids.len();
    tokio::task::spawn_blocking(move || pids.into_iter().map(of).collect())
        .await
        .unwrap_or_else(|_| vec![None; count])
}

/// How long a reading serves every caller that asks again.
const FRESH: Duration = Duration::from_secs(1);

/// Readings shared by everyone who asks (`ListWorkers` callers, scrapers):
/// `/proc` is read at most once per [`FRESH`], and one sweep at a time, so a
/// flood of read-only calls costs one sweep a second however many there are.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    last: tokio::sync::Mutex<Option<Reading>>,
}

/// One sweep: when it was taken, and each pid's usage (`None`: gone).
type Reading = (Instant, HashMap<u32, Option<Usage>>);

impl Cache {
    /// The usage of every process in `pids`, in the same order.
    pub(crate) async fn of(&self, pids: Vec<u32>) -> Vec<Option<Usage>> {
        let mut last = self.last.lock().await;
        if let Some((at, readings)) = &*last {
            if at.elapsed() < FRESH && pids.iter().all(|pid| readings.contains_key(pid)) {
                return pids
                    .iter()
                    .map(|pid| readings.get(pid).copied().flatten())
                    .collect();
            }
        }
        let readings = sample(pids.clone()).await;
        let known = pids.into_iter().zip(readings.iter().copied()).collect();
        *last = Some((Instant::now(), known));
        readings
    }
}

/// Page size, clock ticks per second, boot time (s since the epoch).
fn units() -> Option<(u64, u64, u64)> {
    static UNITS: OnceLock<Option<(u64, u64, u64)>> = OnceLock::new();
    *UNITS.get_or_init(|| {
        let page = sysconf(SysconfVar::PAGE_SIZE).ok()??.try_into().ok()?;
        let ticks = sysconf(SysconfVar::CLK_TCK).ok()??.try_into().ok()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())?;
        Some((page, ticks, boot))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn callers_within_a_second_share_one_reading() {
        let cache = Cache::default();
        let me = std::process::id();
        let before = cache.of(vec![me]).await[0].expect("this process").rss_bytes;
        // 64 MiB more, touched so that it is resident.
        let grown = vec![1u8; 64 << 20];
        let again = cache.of(vec![me]).await[0].expect("this process").rss_bytes;
        assert_eq!(again, before, "the second caller gets the first reading");
        std::thread::sleep(FRESH);
        let later = cache.of(vec![me]).await[0].expect("this process").rss_bytes;
        assert!(later >= before + (32 << 20), "{before} -> {later}");
        drop(grown);
    }

    #[test]
    fn reads_this_process() {
        let usage = of(std::process::id()).expect("/proc is mounted");
        assert!(usage.rss_bytes > 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        assert!(usage.started_usec <= now + 1_000_000);
        assert!(now - usage.started_usec < 3_600 * 1_000_000);
    }
}
