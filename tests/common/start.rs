//! Starting the manager: `sockherd serve --log stderr ARGS -- WORKER`, bound
//! with `--listen`, handed listening sockets as systemd hands them, or run by
//! the real `systemd-socket-activate`.

use std::ffi::{CString, OsString};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::libc;

use super::{sockherd, wait_for, Addr, Manager};

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
