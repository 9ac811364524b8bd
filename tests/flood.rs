//! A worker that floods its output must not grow the manager's memory or stop
//! it from dispatching: worker 0 writes endless short lines on stderr and one
//! endless line (no newline ever) on stdout, while worker 1 serves. The
//! manager's RSS is sampled after a warm-up and again seconds later.

use std::time::{Duration, Instant};

use crate::common::*;

/// Growth allowed between the two samples: allocator noise, not a leak
/// (the flood pushes hundreds of MB through the manager meanwhile).
const MAX_GROWTH_KB: u64 = 4 * 1024;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the manager is running")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_flooding_worker_does_not_grow_the_manager() {
    // It measures the manager while loading the machine: no other test's
    // manager runs meanwhile (its own binary, before the tests were one).
    let _alone = alone();
    let dir = TempDir::new();
    let socket = dir.path().join("http.sock");
    let script = format!(
        "if [ \"$SOCKHERD_WORKER_ID\" = 0 ]; then \
           yes 'a line of flood output, over and over, far more than any journal wants' >&2 & \
           exec cat /dev/zero; \
         else exec {}; fi",
        hello()[0].to_string_lossy()
    );
    let mut manager = Start::new(
        &[
            "--workers",
            "2",
            "--ready-timeout",
            "60s",
            "--kill-timeout",
            "1s",
        ],
        &["/bin/sh".into(), "-c".into(), script.into()],
    )
    .arg("--listen")
    .arg(&socket)
    .spawn();
    let pid = manager.pid();
    let addr = Addr::Unix(socket);

    let answer = retry("worker 1 to answer", || get_ok(&addr, "/"));
    assert!(answer.contains("hello from worker 1"), "{answer}");

    std::thread::sleep(Duration::from_secs(1));
    let warm = rss_kb(pid);
    let until = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    while Instant::now() < until {
        let body = get_ok(&addr, "/").expect("the manager still dispatches during the flood");
        assert!(body.contains("hello from worker 1"), "{body}");
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let later = rss_kb(pid);

    let status = manager.stop();
    assert!(status.success(), "{status}");
    assert!(served > 10, "served {served} requests during the flood");
    assert!(
        later <= warm + MAX_GROWTH_KB,
        "the manager's RSS grew from {warm} kB to {later} kB during the flood"
    );
}
