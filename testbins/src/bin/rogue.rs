//! `rogue`: a sockherd worker that misbehaves on purpose, for the integration
//! tests in `tests/`. They check that the manager survives each fault, replaces
//! the worker and keeps serving.
//!
//! `rogue MODE` where MODE is:
//! - `serve`: no fault, the baseline the other modes depart from: ready, answer
//!   every connection, exit 0 on `SHUTDOWN=1`;
//! - `garbage`: after the first connection, send `hello` (not `KEY=VALUE`);
//! - `oversized`: after the first connection, send a 10 KiB `STATUS=` message;
//! - `empty-message`: after the first connection, send a message of zero
//!   bytes, then `STATUS=sent an empty message`, and keep serving;
//! - `crash-at-start`: exit 1 at once;
//! - `stopping-after N`: after N connections send `STOPPING=1`, serve what was
//!   handed over until `SHUTDOWN=1`, exit 0;
//! - `ignore-shutdown`: serve, but never exit after `SHUTDOWN=1`;
//! - `never-ready`: never send `READY=1`;
//! - `bloat KIB`: serve, and keep KIB more KiB of memory (touched, so it is
//!   resident) after every connection;
//! - `deaf DIR`: the first worker to create `DIR/deaf` (and write its pid
//!   there) says `READY=1` and then never reads its channel again, so the
//!   connections handed to it pile up until the channel is full. It blocks
//!   its own runtime to do so, which also stops the crate's heartbeat task;
//!   it sends `WATCHDOG=1` by hand every 100 ms until `DIR/silent` exists,
//!   then falls silent for good. Every other worker (its replacement
//!   included) behaves as `serve`;
//! - `flood`: serve, and from a thread of its own send `STATUS=` and 4000
//!   bytes on the channel in a tight loop, as fast as the manager reads;
//! - `half-close DIR`: the first worker to create `DIR/half-closed` says
//!   `READY=1` and then shuts its channel for reading (`shutdown(SHUT_RD)`),
//!   so every connection handed to it fails with `EPIPE`; every other worker
//!   behaves as `serve`;
//! - `stop-storm`: say `READY=1` and `STOPPING=1` at once, then exit 0 on
//!   `SHUTDOWN=1`;
//! - `escape FILE`: serve, and start `sleep 3600` in a session of its own
//!   (out of the worker's process group), its pid written to `FILE`;
//! - `leave-group MODE`: first move into the manager's process group
//!   (`setpgid(0, getpgid(getppid()))`), then behave as MODE.
//!
//! Every answer is a minimal HTTP/1.1 response (`Connection: close`) whose body
//! names the worker like the `hello` example does, plus the listening socket:
//! `hello from worker 2 (pid 4242) on http`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};
use sockherd_worker::{Connection, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: rogue [leave-group] serve|garbage|oversized|empty-message|crash-at-start|stopping-after N|ignore-shutdown|never-ready|bloat KIB|deaf DIR|flood|half-close DIR|stop-storm|escape FILE";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Serve,
    Garbage,
    Oversized,
    EmptyMessage,
    CrashAtStart,
    StoppingAfter(u64),
    IgnoreShutdown,
    NeverReady,
    Bloat(usize),
    Deaf(PathBuf),
    Flood,
    HalfClose(PathBuf),
    StopStorm,
    Escape(PathBuf),
}

impl Mode {
    fn from_args(args: &[String]) -> Option<Mode> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Some(match args[..] {
            ["serve"] => Mode::Serve,
            ["garbage"] => Mode::Garbage,
            ["oversized"] => Mode::Oversized,
            ["empty-message"] => Mode::EmptyMessage,
            ["crash-at-start"] => Mode::CrashAtStart,
            ["stopping-after", n] => Mode::StoppingAfter(n.parse().ok()?),
            ["ignore-shutdown"] => Mode::IgnoreShutdown,
            ["never-ready"] => Mode::NeverReady,
            ["bloat", kib] => Mode::Bloat(kib.parse().ok()?),
            ["deaf", dir] => Mode::Deaf(dir.into()),
            ["flood"] => Mode::Flood,
            ["half-close", dir] => Mode::HalfClose(dir.into()),
            ["stop-storm"] => Mode::StopStorm,
            ["escape", file] => Mode::Escape(file.into()),
            _ => return None,
        })
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("leave-group") {
        args.remove(0);
        let manager = nix::unistd::getpgid(Some(nix::unistd::getppid()));
        if let Err(e) =
            manager.and_then(|group| nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), group))
        {
            eprintln!("rogue: cannot leave my process group: {e}");
            return ExitCode::FAILURE;
        }
    }
    let Some(mode) = Mode::from_args(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if mode == Mode::CrashAtStart {
        eprintln!("rogue: crashing at start, as asked");
        return ExitCode::FAILURE;
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| runtime.block_on(run(mode)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rogue: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> io::Result<()> {
    // The channel, once more, for what the listener does not do.
    // SAFETY: fd 3 is the channel the manager passed; it stays open (the
    // listener takes it next), and it is only borrowed to be duplicated.
    let channel = unsafe { std::os::fd::BorrowedFd::borrow_raw(3) }.try_clone_to_owned()?;
    let listener = Listener::from_env()?;
    if mode == Mode::NeverReady {
        return std::future::pending().await;
    }
    if let Mode::HalfClose(dir) = &mode {
        if claim(&dir.join("half-closed"))? {
            listener.ready()?;
            shutdown(channel.as_raw_fd(), Shutdown::Read).map_err(io::Error::from)?;
            return std::future::pending().await;
        }
    }
    if mode == Mode::StopStorm {
        listener.notify("READY=1\nSTOPPING=1")?;
        while listener.accept().await?.is_some() {}
        return Ok(());
    }
    if let Mode::Escape(file) = &mode {
        escape(file)?;
    }
    if let Mode::Deaf(dir) = &mode {
        if claim(&dir.join("deaf"))? {
            listener.ready()?;
            return Err(go_deaf(&listener, &dir.join("silent")));
        }
    }
    let me = format!(
        "worker {} (pid {})",
        sockherd_worker::worker_id().map_or("?".into(), |id| id.to_string()),
        std::process::id()
    );
    listener.ready()?;
    if mode == Mode::Flood {
        // Once ready: a flood from the start would keep READY=1 itself out
        // of a full channel.
        std::thread::spawn(move || flood(&channel));
    }
    let mut served = 0;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    while let Some(conn) = listener.accept().await? {
        let body = format!("hello from {me} on {}\n", conn.socket_name());
        answer(conn, &body).await;
        served += 1;
        match &mode {
            Mode::Garbage if served == 1 => listener.notify("hello")?,
            Mode::Oversized if served == 1 => {
                listener.notify(&format!("STATUS={}", "x".repeat(10 * 1024)))?
            }
            Mode::EmptyMessage if served == 1 => {
                listener.notify("")?;
                listener.notify("STATUS=sent an empty message")?;
            }
            Mode::StoppingAfter(n) if served == *n => listener.stopping()?,
            Mode::Bloat(kib) => hoard.push(vec![1; kib << 10]),
            _ => {}
        }
    }
    if mode == Mode::IgnoreShutdown {
        // Nothing is written here: with the manager gone, a write to the
        // stderr pipe would fail and end the process.
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Sends 4 KB `STATUS=` messages as fast as the channel takes them.
fn flood(channel: &OwnedFd) {
    let message = format!("STATUS={}", "x".repeat(4000));
    loop {
        match send(
            channel.as_raw_fd(),
            message.as_bytes(),
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => {}
            // The manager reads no faster: try again in a moment.
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return,
        }
    }
}

/// Starts `sleep 3600` in a session of its own and writes its pid to `file`.
fn escape(file: &Path) -> io::Result<()> {
    let mut sleeper = std::process::Command::new("sleep");
    sleeper.arg("3600");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut sleeper, || {
            nix::unistd::setsid().map(drop).map_err(io::Error::from)
        });
    }
    let child = sleeper.spawn()?;
    std::fs::write(file, child.id().to_string())
}

/// Creates `path`, holding this process's pid, unless it exists: whether
/// this process is the one that created it.
fn claim(path: &Path) -> io::Result<bool> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            io::Write::write_all(&mut file, std::process::id().to_string().as_bytes())?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Never yields to the runtime, so the listener's tasks (reading the
/// channel, heartbeats) never run again. Heartbeats go out by hand until
/// `silence` exists. Returns only if a heartbeat cannot be sent.
fn go_deaf(listener: &Listener, silence: &Path) -> io::Error {
    while !silence.exists() {
        if let Err(e) = listener.heartbeat() {
            return e;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reads one request head and answers it; errors and heads over 16 KiB just
/// end the connection.
async fn answer(mut stream: Connection, body: &str) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
