//! `Listener::from_env`: what it checks before it takes the channel, and that
//! it takes it once. One test, in a test binary of its own, because it sets
//! environment variables and the take-once flag is the process's.

mod fake;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use fake::{channel, is_open};
use sockherd_worker::protocol::{
    SOCKHERD_CHANNEL_FD, SOCKHERD_HEARTBEAT_USEC, SOCKHERD_PROTOCOL, SOCKHERD_PROTOCOL_MAX,
    SOCKHERD_WORKER_ID,
};
use sockherd_worker::Listener;

/// `from_env`'s error, which must be of `kind` and say `says`.
fn refused(kind: ErrorKind, says: &str) {
    let err = Listener::from_env().expect_err("from_env must refuse");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.to_string().contains(says),
        "{err:?} does not say {says:?}"
    );
}

#[test]
fn from_env_checks_the_channel_and_takes_it_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (manager, worker) = channel();
    let fd = worker.as_raw_fd();

    std::env::remove_var(SOCKHERD_CHANNEL_FD);
    refused(ErrorKind::NotFound, "SOCKHERD_CHANNEL_FD is not set");
    std::env::set_var(SOCKHERD_CHANNEL_FD, "three");
    refused(
        ErrorKind::InvalidInput,
        "\"three\" is not a descriptor number",
    );

    // The protocol version: missing, or one this crate does not speak.
    std::env::set_var(SOCKHERD_CHANNEL_FD, fd.to_string());
    std::env::remove_var(SOCKHERD_PROTOCOL);
    refused(ErrorKind::NotFound, "SOCKHERD_PROTOCOL is not set");
    std::env::set_var(SOCKHERD_PROTOCOL, "3");
    refused(
        ErrorKind::Unsupported,
        "SOCKHERD_PROTOCOL=\"3\": this worker speaks sockherd protocol 1 to 2 only",
    );
    assert!(is_open(fd), "a refusal leaves the channel alone");
    std::env::set_var(SOCKHERD_PROTOCOL, "1");

    // Descriptors that are no channel are refused and left open.
    let (stream, mut peer) = StdUnixStream::pair().unwrap();
    std::env::set_var(SOCKHERD_CHANNEL_FD, stream.as_raw_fd().to_string());
    refused(
        ErrorKind::InvalidInput,
        "is a Stream socket, not SOCK_SEQPACKET",
    );
    std::io::Write::write_all(&mut peer, b"still here").unwrap();
    let mut buf = [0u8; 10];
    std::io::Read::read_exact(&mut &stream, &mut buf).unwrap();
    assert_eq!(&buf, b"still here", "the stream socket was left working");

    let file = std::fs::File::open("/proc/self/stat").unwrap();
    std::env::set_var(SOCKHERD_CHANNEL_FD, file.as_raw_fd().to_string());
    refused(ErrorKind::InvalidInput, "is not a socket");
    assert!(is_open(file.as_raw_fd()), "the file was left open");

    let closed = {
        let (a, _b) = StdUnixStream::pair().unwrap();
        a.as_raw_fd()
    };
    std::env::set_var(SOCKHERD_CHANNEL_FD, closed.to_string());
    refused(ErrorKind::NotFound, "is not an open descriptor");

    // A good channel, but no runtime to run the listener on.
    std::env::set_var(SOCKHERD_CHANNEL_FD, fd.to_string());
    refused(ErrorKind::Other, "needs a tokio runtime");
    assert!(is_open(fd));

    // Taken, at last: it talks to the manager, in the newest version both
    // speak, and heartbeats when asked to.
    std::env::set_var(SOCKHERD_PROTOCOL_MAX, "2");
    std::env::set_var(SOCKHERD_HEARTBEAT_USEC, "20000");
    std::env::set_var(SOCKHERD_WORKER_ID, "7");
    assert_eq!(sockherd_worker::worker_id(), Some(7));
    let _guard = runtime.enter();
    std::mem::forget(worker); // owned by the listener from here on
    let listener = Listener::from_env().expect("a good channel is taken");
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & nix::libc::FD_CLOEXEC, 0, "no child inherits it");
    runtime.block_on(async {
        assert_eq!(listener.protocol_version(), 2);
        listener.ready().unwrap();
        assert_eq!(manager.recv().await, "READY=1\nPROTOCOL=2");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(manager.recv().await, "WATCHDOG=1");
    });

    // A second time is an error, not a second owner, even once the first is
    // gone.
    refused(ErrorKind::AlreadyExists, "already taken");
    drop(listener);
    // Its aborted tasks let go of the channel when the runtime next runs.
    runtime.block_on(tokio::time::sleep(Duration::from_millis(20)));
    assert!(!is_open(fd), "the listener closed what it owned");
    refused(ErrorKind::AlreadyExists, "already taken");
}
