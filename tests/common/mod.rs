//! The integration tests' harness: runs the real `sockherd` binary with real
//! workers and looks at it only from outside, as systemd and clients would.
//!
//! - [`serve`] starts it with `--listen` (port 0: the kernel picks a free port,
//!   read back from the manager's log with [`Manager::listening`]);
//! - [`serve_activated`] passes it listening sockets exactly as systemd does:
//!   at fd 3 onwards, with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set
//!   in the child between fork and exec, from its own `getpid()`;
//! - [`socket_activate`] goes through the real `systemd-socket-activate`.
//!
//! The manager logs to stderr (`--log stderr`); the harness collects every line
//! and waits on the structured fields of its events (`event="worker-ready"
//! worker_id=0 worker_pid=…`) by polling, never by sleeping a fixed time.
//! A [`Manager`] is SIGKILLed by pid when dropped, and prints its log if the
//! test failed. Worker programs: the `hello` example, the `rogue` test binary
//! (built once on first use, so `cargo test --workspace` alone is enough) and
//! `examples/worker.py`.

// Each test file uses its own part of the harness.
#![allow(dead_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long anything may take on a slow, busy machine before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or fails the test naming `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Programs

/// The manager under test.
pub fn sockherd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sockherd"))
}

/// Builds the `hello` example and the `rogue` test binary into the target
/// directory and profile of this test, once per test process.
fn build_workers() -> PathBuf {
    static BUILD: Once = Once::new();
    let profile_dir = sockherd()
        .parent()
        .expect("the sockherd binary is in a directory");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--example", "hello"])
            .args(["--bin", "rogue", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("a target directory"));
        match profile_dir.file_name().and_then(OsStr::to_str) {
            Some("debug") => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
            None => panic!("cannot tell the profile of {}", profile_dir.display()),
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building hello and rogue failed");
    });
    profile_dir.to_path_buf()
}

/// The `hello` example: an HTTP worker whose body is
/// `hello from worker N (pid P)`; `GET /slow?ms=N` answers after N ms.
pub fn hello() -> Vec<OsString> {
    vec![build_workers().join("examples/hello").into()]
}

/// The `rogue` test binary in `mode` (see `testbins/src/bin/rogue.rs`).
pub fn rogue(mode: &[&str]) -> Vec<OsString> {
    let mut command = vec![build_workers().join("rogue").into_os_string()];
    command.extend(mode.iter().map(OsString::from));
    command
}

/// `examples/worker.py`, the Python worker.
pub fn python_worker() -> Vec<OsString> {
    vec![
        "python3".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/worker.py")
            .into(),
    ]
}

// ---------------------------------------------------------------------------
// Starting the manager

/// `sockherd serve --log stderr ARGS -- WORKER`, with no environment changes:
/// socket activation may still add some in `pre_exec`.
fn command(args: &[&str], worker: &[OsString]) -> Command {
    let mut cmd = Command::new(sockherd());
    cmd.args(["serve", "--log", "stderr"])
        .args(args)
        .arg("--")
        .args(worker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the manager without socket activation (give it `--listen`).
pub fn serve(args: &[&str], worker: &[OsString]) -> Manager {
    let mut cmd = command(args, worker);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        cmd.env_remove(var);
    }
    Manager::spawn(cmd)
}

/// Starts the manager as systemd would after socket activation: `sockets`
/// (name, fd) become fds 3, 4, … of the child and `LISTEN_FDS`,
/// `LISTEN_FDNAMES` and `LISTEN_PID` (its own pid) are set between fork and
/// exec. `env` sets more variables the same way, and overrides those.
pub fn serve_activated(
    sockets: &[(&str, RawFd)],
    env: &[(&str, &str)],
    args: &[&str],
    worker: &[OsString],
) -> Manager {
    let names: Vec<&str> = sockets.iter().map(|(name, _)| *name).collect();
    let mut vars = vec![
        ("LISTEN_FDS".to_owned(), sockets.len().to_string()),
        ("LISTEN_FDNAMES".to_owned(), names.join(":")),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let vars: Vec<(CString, CString)> = vars
        .into_iter()
        .map(|(k, v)| (CString::new(k).unwrap(), CString::new(v).unwrap()))
        .collect();
    let own_pid = !env.iter().any(|(k, _)| *k == "LISTEN_PID");
    let sources: Vec<RawFd> = sockets.iter().map(|(_, fd)| *fd).collect();
    let mut moved = vec![-1; sources.len()];

    let mut cmd = command(args, worker);
    // SAFETY: runs in the forked child before exec. It only duplicates fds and
    // sets variables (glibc's fork leaves malloc usable in the child); the
    // command has no environment changes of its own, so exec uses `environ`
    // as modified here.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so that placing one at 3.. cannot clobber
            // another not yet placed.
            for (to, from) in moved.iter_mut().zip(&sources) {
                *to = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 64);
                if *to < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (offset, fd) in moved.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(*fd, 3 + offset as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if own_pid {
                let mut digits = [0u8; 24];
                decimal(libc::getpid() as u64, &mut digits);
                if libc::setenv(c"LISTEN_PID".as_ptr(), digits.as_ptr().cast(), 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (key, value) in &vars {
                if libc::setenv(key.as_ptr(), value.as_ptr(), 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Manager::spawn(cmd)
}

/// Writes `n` in decimal, NUL-terminated, without allocating.
fn decimal(mut n: u64, out: &mut [u8; 24]) {
    let mut reversed = [0u8; 20];
    let mut len = 0;
    loop {
        reversed[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = reversed[len - 1 - i];
    }
    out[len] = 0;
}

/// Starts the manager under `systemd-socket-activate -l 127.0.0.1:PORT
/// --fdname=http` on a free port, and returns it with that address. It execs
/// the manager (same pid) on the first connection.
pub fn socket_activate(args: &[&str], worker: &[OsString]) -> (Manager, Addr) {
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg(format!("--listen=127.0.0.1:{port}"))
            .arg("--fdname=http")
            .arg(sockherd())
            .args(["serve", "--log", "stderr"])
            .args(args)
            .arg("--")
            .args(worker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            cmd.env_remove(var);
        }
        let mut manager = Manager::spawn(cmd);
        let listening = wait_for("systemd-socket-activate to listen or fail", || {
            if manager.has_line("Listening on") {
                Some(true)
            } else if manager.try_exit().is_some() {
                Some(false)
            } else {
                None
            }
        });
        if listening {
            return (
                manager,
                Addr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            );
        }
        // Someone took the port between our probe and its bind: try another.
    }
    panic!("systemd-socket-activate could not listen on a free port");
}

/// A port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

// ---------------------------------------------------------------------------
// The running manager

/// One line of the manager's log that records an event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u32>,
    pub pid: Option<u32>,
    pub line: String,
}

/// A running manager (or `systemd-socket-activate` about to become one).
pub struct Manager {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Every worker it started, as (pid, start time), to be sure none is left
    /// running after the test, whatever went wrong.
    workers: Arc<Mutex<Vec<(u32, u64)>>>,
    /// Closed when its stderr reaches its end: the log is complete.
    log_done: mpsc::Receiver<()>,
    status: Option<ExitStatus>,
}

impl Manager {
    fn spawn(mut cmd: Command) -> Manager {
        let mut child = cmd.spawn().expect("start sockherd");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let (log_sink, workers_sink) = (Arc::clone(&log), Arc::clone(&workers));
        let (done, log_done) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = done;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("event=\"worker-started\"") {
                    let pid = field(&line, "worker_pid").and_then(|p| p.parse().ok());
                    if let Some((pid, start)) = pid.and_then(|p| Some((p, start_time(p)?))) {
                        workers_sink.lock().unwrap().push((pid, start));
                    }
                }
                log_sink.lock().unwrap().push(line);
            }
        });
        Manager {
            child,
            log,
            workers,
            log_done,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line it wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Its log lines for `event` (`worker-ready`, `worker-exited`, …), in order.
    pub fn events(&self, event: &str) -> Vec<Event> {
        let tag = format!("event=\"{event}\"");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&tag))
            .map(|l| Event {
                id: field(l, "worker_id").and_then(|v| v.parse().ok()),
                pid: field(l, "worker_pid").and_then(|v| v.parse().ok()),
                line: l.clone(),
            })
            .collect()
    }

    /// Waits until `event` was logged at least `count` times; returns them all.
    pub fn wait_events(&self, event: &str, count: usize) -> Vec<Event> {
        wait_for(&format!("{count} {event} events"), || {
            let found = self.events(event);
            (found.len() >= count).then_some(found)
        })
    }

    /// Waits until workers 0..n have each reported ready at least once.
    pub fn wait_ready(&self, n: u32) {
        wait_for(&format!("workers 0..{n} to be ready"), || {
            let ready = self.events("worker-ready");
            (0..n)
                .all(|id| ready.iter().any(|e| e.id == Some(id)))
                .then_some(())
        })
    }

    /// The pids of every worker started so far.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.events("worker-started")
            .iter()
            .filter_map(|e| e.pid)
            .collect()
    }

    /// Waits until it logged `count` listening sockets and returns their addresses.
    pub fn listening(&self, count: usize) -> Vec<Addr> {
        wait_for(&format!("{count} listening sockets"), || {
            let addrs: Vec<Addr> = self
                .log()
                .iter()
                .filter(|l| l.contains(" listening on "))
                .filter_map(|l| field(l, "socket"))
                .map(|s| match s.parse() {
                    Ok(addr) => Addr::Tcp(addr),
                    Err(_) => Addr::Unix(s.into()),
                })
                .collect();
            (addrs.len() >= count).then_some(addrs)
        })
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the manager");
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for sockherd");
        }
        self.status
    }

    /// Waits for it to exit, and for its log to be complete.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_for("sockherd to exit", || self.try_exit());
        let end = self.log_done.recv_timeout(PATIENCE);
        assert_eq!(
            end,
            Err(mpsc::RecvTimeoutError::Disconnected),
            "its stderr is still open after it exited"
        );
        status
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Workers die with their manager; should that ever break, they must
        // not outlive the test either. The start time tells a worker from a
        // process that got its pid later.
        for (pid, start) in self.workers.lock().unwrap().iter() {
            if alive(*pid) && start_time(*pid) == Some(*start) {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- sockherd log (pid {}) ---", self.pid());
            for line in self.log() {
                eprintln!("{line}");
            }
            eprintln!("--- end of sockherd log ---");
        }
    }
}

/// The value of ` key=value` in a log line, unquoted.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let value = rest.split(' ').next()?;
    Some(value.trim_matches('"'))
}

// ---------------------------------------------------------------------------
// Clients

/// Where a manager listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The (worker id, pid) named in a body like `hello from worker 2 (pid 4242)`.
    pub fn worker(&self) -> (u32, u32) {
        parse_worker(&self.body).unwrap_or_else(|| panic!("no worker named in {:?}", self.body))
    }
}

fn parse_worker(body: &str) -> Option<(u32, u32)> {
    let rest = &body[body.find("worker ")? + "worker ".len()..];
    let (id, rest) = rest.split_once(" (pid ")?;
    let (pid, _) = rest.split_once(')')?;
    Some((id.parse().ok()?, pid.parse().ok()?))
}

/// A request in progress: connected and sent, response not read yet.
pub struct Pending {
    stream: Box<dyn ReadWrite>,
    /// The client's address, for TCP.
    pub local: Option<SocketAddr>,
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Connects and sends `GET path` (`Connection: close`) without reading.
pub fn send(addr: &Addr, path: &str) -> io::Result<Pending> {
    let (mut stream, local): (Box<dyn ReadWrite>, _) = match addr {
        Addr::Tcp(addr) => {
            let s = TcpStream::connect_timeout(addr, PATIENCE)?;
            s.set_read_timeout(Some(PATIENCE))?;
            let local = s.local_addr()?;
            (Box::new(s), Some(local))
        }
        Addr::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(PATIENCE))?;
            (Box::new(s), None)
        }
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    Ok(Pending { stream, local })
}

impl Pending {
    /// Reads the whole response (the server closes the connection).
    pub fn response(mut self) -> io::Result<Response> {
        let mut raw = Vec::new();
        self.stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad response {text:?}"));
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok(Response {
            status,
            body: body.to_owned(),
        })
    }
}

/// Like [`send`] to a TCP address, but from the local address `from`: a
/// client at another address. On loopback every address of 127.0.0.0/8 can
/// be bound without any configuration.
pub fn send_from(addr: SocketAddr, from: Ipv4Addr, path: &str) -> io::Result<Pending> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)),
    )?;
    connect(
        fd.as_raw_fd(),
        &nix::sys::socket::SockaddrStorage::from(addr),
    )?;
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(PATIENCE))?;
    let local = stream.local_addr()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    Ok(Pending {
        stream: Box::new(stream),
        local: Some(local),
    })
}

/// `GET path`, returning the response or what went wrong.
pub fn get(addr: &Addr, path: &str) -> io::Result<Response> {
    send(addr, path)?.response()
}

/// `GET /`, which must succeed with 200; returns the worker's (id, pid).
pub fn hit(addr: &Addr) -> (u32, u32) {
    let response = get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr:?} failed: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    response.worker()
}

// ---------------------------------------------------------------------------
// Processes and sockets, from /proc

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
fn start_time(pid: u32) -> Option<u64> {
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

/// A directory of its own under /tmp, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sockherd-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
