//! The hello worker without sockherd: every process calls `accept()` itself
//! on one shared, inherited listening socket. This is the baseline of
//! `bench/dispatch.sh` — the most a machine can do with these workers when
//! connections need no handing over — and serves exactly what `hello` serves
//! (the HTTP code is `common/http.rs`, shared by both).
//!
//! Two ways to run it:
//!
//! - one process on a socket it is given, systemd style: fd 3 with
//!   `LISTEN_FDS=1` (and `LISTEN_PID`, if set, equal to its pid), e.g.
//!   `systemd-socket-activate -l 127.0.0.1:8080 target/release/examples/hello_shared`;
//! - a pool: `hello_shared --processes N [--listen IP:PORT]`. The launcher
//!   binds `--listen` itself (`SO_REUSEADDR`, backlog 4096, as `sockherd serve
//!   --listen` does) or takes fd 3 as above, then starts N copies of itself,
//!   each with the socket as fd 3, `LISTEN_FDS=1`, no `LISTEN_PID`, and
//!   `SOCKHERD_WORKER_ID=0..N-1` so responses say `hello from worker I (pid
//!   P)`. The copies die with the launcher (`PR_SET_PDEATHSIG`).
//!
//! SIGTERM or SIGINT: a worker stops accepting, finishes the requests it has,
//! closes idle keep-alive connections and exits 0; the launcher passes the
//! signal on to its copies, waits for them and exits 0 (1 if a copy failed).
//! If a copy dies on its own, the launcher stops the others and exits 1: a
//! baseline that lost a process is no baseline.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{
    bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrLike, SockaddrStorage,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[path = "common/http.rs"]
mod http;

/// The fd number of an inherited listening socket (`SD_LISTEN_FDS_START`).
const LISTEN_FD: RawFd = 3;

/// The listen backlog of a socket the launcher binds: the same as sockherd's.
const BACKLOG: i32 = 4096;

/// How long to pause when out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const USAGE: &str = "usage: hello_shared [--processes N] [--listen IP:PORT]
  without --listen, the listening socket is fd 3 (LISTEN_FDS=1)";

struct Args {
    processes: Option<u32>,
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("hello_shared: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let socket = match (&args.listen, args.processes) {
        (Some(addr), Some(_)) => bind_tcp(*addr),
        (Some(_), None) => Err(io::Error::other(
            "--listen needs --processes: a single process takes fd 3",
        )),
        (None, _) => inherited(),
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("hello_shared: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hello_shared: cannot start the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.processes {
        Some(n) => runtime.block_on(launch(socket, n)),
        None => runtime.block_on(serve(socket)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hello_shared: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        processes: None,
        listen: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--processes" => {
                let v = value()?;
                match v.parse::<u32>() {
                    Ok(n) if n > 0 => args.processes = Some(n),
                    _ => return Err(format!("--processes {v:?}: expected a number above 0")),
                }
            }
            "--listen" => {
                let v = value()?;
                args.listen = Some(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?}: expected IP:PORT"))?,
                );
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Binds and listens the way `sockherd serve --listen` does.
fn bind_tcp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(|e| io::Error::other(format!("cannot bind {addr}: {e}")))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// Takes the listening socket passed as fd 3, checking that it is one.
fn inherited() -> io::Result<OwnedFd> {
    let fds = std::env::var("LISTEN_FDS").map_err(|_| {
        io::Error::other("no socket: LISTEN_FDS is not set (give --processes N --listen IP:PORT)")
    })?;
    if fds != "1" {
        return Err(io::Error::other(format!(
            "LISTEN_FDS={fds}: expected exactly one socket"
        )));
    }
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        if pid != std::process::id().to_string() {
            return Err(io::Error::other(format!(
                "LISTEN_PID={pid} is not this process"
            )));
        }
    }
    if nix::fcntl::fcntl(LISTEN_FD, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(io::Error::other("LISTEN_FDS=1 but fd 3 is not open"));
    }
    // SAFETY: LISTEN_FDS hands fd 3 to this process, and it was just checked
    // to be open; from here on it is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
    nix::fcntl::fcntl(
        LISTEN_FD,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let tcp = getsockname::<SockaddrStorage>(LISTEN_FD)
        .ok()
        .and_then(|a| a.family())
        .is_some_and(|f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6));
    if !tcp || !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err(io::Error::other("fd 3 is not a listening TCP socket"));
    }
    Ok(fd)
}

/// Starts `n` copies of this program on the socket and waits for them.
async fn launch(socket: OwnedFd, n: u32) -> io::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let raw = socket.as_raw_fd();
    let launcher = nix::unistd::getpid();
    let mut children = Vec::new();
    for id in 0..n {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.env("LISTEN_FDS", "1")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env("SOCKHERD_WORKER_ID", id.to_string());
        // SAFETY: runs in the forked child before exec and calls only
        // async-signal-safe functions (fcntl, dup2, prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if raw == LISTEN_FD {
                    if libc::fcntl(LISTEN_FD, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, LISTEN_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != launcher.as_raw() {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        children.push(cmd.spawn()?);
    }
    drop(socket);
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    let mut waiting = JoinSet::new();
    for mut child in children {
        waiting.spawn(async move { child.wait().await });
    }
    let stop_all = |pids: &[u32]| {
        for &pid in pids {
            // Children not yet reaped, so the pids are still theirs.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    };
    let mut failed = false;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        exited = waiting.join_next() => {
            eprintln!("hello_shared: a worker exited on its own ({exited:?}); stopping the others");
            failed = true;
        }
    }
    stop_all(&pids);
    while let Some(exited) = waiting.join_next().await {
        if !matches!(exited, Ok(Ok(status)) if status.success()) {
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A worker's drain flag, turned on by SIGTERM or SIGINT.
struct Shutdown(watch::Receiver<bool>);

impl http::Drain for Shutdown {
    fn is_shutting_down(&self) -> bool {
        *self.0.borrow()
    }

    fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + '_ {
        let mut asked = self.0.clone();
        async move {
            let _ = asked.wait_for(|asked| *asked).await;
        }
    }
}

/// One worker: accepts on the shared socket and serves, until told to stop.
async fn serve(socket: OwnedFd) -> io::Result<ExitCode> {
    let std_listener = StdTcpListener::from(socket);
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (drain_tx, drain_rx) = watch::channel(false);
    let drain = Arc::new(Shutdown(drain_rx));
    let body = http::body();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(http::handle(stream, Arc::clone(&drain), Arc::clone(&body)));
                }
                // The client gave up while queued: next one.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    eprintln!("hello_shared: accept failed: {e}; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    // Shutting down: stop accepting (the other workers keep the socket), then
    // finish what we have.
    drop(listener);
    let _ = drain_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(ExitCode::SUCCESS)
}
