//! Times for people: µs since the Unix epoch in the local time zone, as
//! `logs` and `monit` print them.

use nix::libc;

/// `2026-05-01 12:00:01.250`.
pub(super) fn timestamp(usec: u64) -> String {
    match broken_down(usec) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            usec / 1000 % 1000
        ),
        None => format!("@{usec}"),
    }
}

/// `12:00:01`.
pub(super) fn clock(usec: u64) -> String {
    match broken_down(usec) {
        Some(tm) => format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
        None => format!("@{usec}"),
    }
}

/// The local calendar time of `usec`.
fn broken_down(usec: u64) -> Option<libc::tm> {
    let secs = libc::time_t::try_from(usec / 1_000_000).ok()?;
    // SAFETY: an all-zero `tm` is a valid value (its zone pointer null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `secs` and writes only into `tm`, both alive
    // for the call; it returns null on failure.
    let done = unsafe { libc::localtime_r(&secs, &mut tm) };
    (!done.is_null()).then_some(tm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_the_millisecond() {
        let time = timestamp(1_700_000_000_123_456);
        assert_eq!(time.len(), 23, "{time}");
        assert!(time.ends_with(".123"), "{time}");
        assert_eq!(clock(1_700_000_000_123_456).len(), 8);
    }
}
