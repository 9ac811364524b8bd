//! A worker that floods its output must not grow the manager's memory or stop
//! it from dispatching: worker 0 writes endless short lines on stderr and one
//! endless line (no newline ever) on stdout, while worker 1 serves. The
//! manager's RSS is sampled after a warm-up and again seconds later.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn get(socket: &Path) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn a_flooding_worker_does_not_grow_the_manager() {
    let sockherd = Path::new(env!("CARGO_BIN_EXE_sockherd"));
    let hello = sockherd
        .parent()
        .expect("the binary lives in a directory")
        .join("examples/hello");
    assert!(
        hello.exists(),
        "{} is missing: build the examples first",
        hello.display()
    );
    let dir = std::env::temp_dir().join(format!("sockherd-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let socket = dir.join("http.sock");
    let script = format!(
        "if [ \"$SOCKHERD_WORKER_ID\" = 0 ]; then \
           yes 'a line of flood output, over and over, far more than any journal wants' >&2 & \
           exec cat /dev/zero; \
         else exec {}; fi",
        hello.display()
    );
    let mut manager = Command::new(sockherd)
        .args([
            "serve",
            "--log",
            "stderr",
            "--workers",
            "2",
            "--ready-timeout",
            "60s",
            "--kill-timeout",
            "1s",
            "--listen",
        ])
        .arg(&socket)
        .args(["--", "/bin/sh", "-c", &script])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sockherd");
    let pid = manager.id();

    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        match get(&socket) {
            Ok(r) if r.starts_with("HTTP/1.1 200") => break r,
            _ if Instant::now() > deadline => panic!("worker 1 never answered"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(answer.contains("hello from worker 1"), "{answer}");

    std::thread::sleep(Duration::from_secs(1));
    let warm = rss_kb(pid);
    let until = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    while Instant::now() < until {
        let response = get(&socket).expect("the manager still dispatches during the flood");
        assert!(response.contains("hello from worker 1"), "{response}");
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let later = rss_kb(pid);

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = manager.wait().expect("wait for the manager");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}");
    assert!(served > 10, "served {served} requests during the flood");
    assert!(
        later <= warm + MAX_GROWTH_KB,
        "the manager's RSS grew from {warm} kB to {later} kB during the flood"
    );
}
