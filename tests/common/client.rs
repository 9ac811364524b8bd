//! Clients: plain HTTP/1.1 requests over TCP or a Unix socket, one
//! connection each, as a browser or a load balancer would send them.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::PATIENCE;

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

/// `GET path`: the body of a 200, or what went wrong (an error, or
/// another answer), for tests that retry or count failures.
pub fn get_ok(addr: &Addr, path: &str) -> Result<String, String> {
    match get(addr, path) {
        Ok(response) if response.status == 200 => Ok(response.body),
        Ok(response) => Err(format!("{response:?}")),
        Err(e) => Err(format!("GET {path} on {addr:?}: {e}")),
    }
}

/// `GET /`, which must succeed with 200; returns the worker's (id, pid).
pub fn hit(addr: &Addr) -> (u32, u32) {
    let response = get(addr, "/").unwrap_or_else(|e| panic!("GET / on {addr:?} failed: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    response.worker()
}
