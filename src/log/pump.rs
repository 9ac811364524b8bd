//! The log thread: every byte the manager logs is written from here, never
//! from the event loop that accepts and hands over connections.
//!
//! It has two inputs. The manager's own events arrive formatted
//! ([`super::events`]) through a bounded queue: [`event`] never waits, and
//! when the queue is full the event is dropped and counted, and the count is
//! logged once the queue has drained (the manager logs a few lines per
//! worker start or exit; a full queue means a sink that stalls). Worker
//! output arrives as the read ends of the workers' stdout and stderr pipes
//! ([`forward`]), which the thread watches with epoll and reads a chunk at a
//! time, cut into lines ([`super::output`]) and written to the [`Sink`].
//!
//! Worker lines are never dropped for being many: while a write to the sink
//! waits, the thread reads nothing, the pipes fill up, and the workers'
//! writes wait in turn (back-pressure). A sink that is broken loses lines
//! with a count instead ([`super::sink`]). Under systemd most workers write
//! to journal streams of their own ([`super::stream`]) and their pipes reach
//! their end at once; the thread then only carries the manager's events.
//!
//! The thread runs until the process exits. [`flush`] lets the manager
//! write out what is queued before it exits, waiting a bounded time.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::output::Lines;
use super::sink::{Sink, LOST};
use super::Stream;

/// Manager events that may wait for the log thread: enough for the burst of
/// a reload of hundreds of workers, bounded whatever happens.
const QUEUE: usize = 4096;

/// How much of one worker's output is read at a time.
const CHUNK: usize = 64 * 1024;

/// How long [`flush`] waits for the log thread before the manager exits.
const FLUSH_PATIENCE: Duration = Duration::from_secs(3);

/// A round that read less than this much worker output was a trickle…
const GATHER_BELOW: usize = 4096;
/// …and the thread waits this long before the next, so that lines arrive
/// in batches: one wake-up per millisecond at most instead of one per line.
const GATHER: Duration = Duration::from_millis(1);

/// The epoll token of the wake-up pipe.
const WAKE: u64 = u64::MAX;

/// Manager events dropped because the queue was full, not yet reported.
static DROPPED: AtomicU64 = AtomicU64::new(0);

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// How the rest of the manager reaches the log thread.
struct Handle {
    events: SyncSender<Vec<u8>>,
    requests: Sender<Request>,
    /// Written to after every send, so the thread wakes from epoll.
    wake: OwnedFd,
}

enum Request {
    /// Read this worker's pipe until its end.
    Forward {
        fd: OwnedFd,
        stream: Stream,
        id: u32,
        pid: u32,
    },
    /// Write out everything queued and readable now, then say so.
    Flush(Sender<()>),
    /// Write out everything queued and readable now, then stop reading the
    /// workers' pipes and hand them back.
    Surrender(Sender<Vec<Pipe>>),
}

/// A worker's pipe, handed back by the log thread for a re-exec: the next
/// image reads it on. A line the worker had half written is written out
/// first, so it is cut in two rather than lost.
pub(crate) struct Pipe {
    pub fd: OwnedFd,
    pub stream: Stream,
    pub id: u32,
    pub pid: u32,
}

/// Starts the log thread, writing to `sink`.
pub(crate) fn start(sink: Sink) -> io::Result<()> {
    let (events, events_rx) = mpsc::sync_channel(QUEUE);
    let (requests, requests_rx) = mpsc::channel();
    let (wake_rx, wake) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&wake_rx, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
    let pump = Pump {
        sink,
        epoll,
        wake: wake_rx,
        events: events_rx,
        requests: requests_rx,
        open: Vec::new(),
        free: Vec::new(),
        chunk: vec![0; CHUNK],
    };
    std::thread::Builder::new()
        .name("log".into())
        .spawn(move || pump.run())?;
    let _ = HANDLE.set(Handle {
        events,
        requests,
        wake,
    });
    Ok(())
}

/// Queues one formatted manager event; drops and counts it if the queue is
/// full. Never waits.
pub(crate) fn event(record: Vec<u8>) {
    let Some(handle) = HANDLE.get() else { return };
    match handle.events.try_send(record) {
        Ok(()) => handle.wake(),
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            LOST.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands the read end of worker `id`'s `stream` pipe to the log thread,
/// which reads it to its end.
pub(crate) fn forward(fd: OwnedFd, stream: Stream, id: u32, pid: u32) {
    let Some(handle) = HANDLE.get() else { return };
    if handle
        .requests
        .send(Request::Forward {
            fd,
            stream,
            id,
            pid,
        })
        .is_ok()
    {
        handle.wake();
    }
}

/// Waits (a bounded time) until the log thread has written what was queued
/// and what the workers' pipes held: for the last lines before an exit.
pub(crate) fn flush() {
    let Some(handle) = HANDLE.get() else { return };
    let (done, done_rx) = mpsc::channel();
    if handle.requests.send(Request::Flush(done)).is_ok() {
        handle.wake();
        let _ = done_rx.recv_timeout(FLUSH_PATIENCE);
    }
}

/// Takes the workers' pipes back from the log thread, after it wrote out
/// what they held ([`Pipe`]); `None` if it does not answer within a bound.
/// Blocks: called off the event loop.
pub(crate) fn surrender() -> Option<Vec<Pipe>> {
    let Some(handle) = HANDLE.get() else {
        return Some(Vec::new());
    };
    let (done, done_rx) = mpsc::channel();
    if handle.requests.send(Request::Surrender(done)).is_err() {
        return None;
    }
    handle.wake();
    done_rx.recv_timeout(FLUSH_PATIENCE).ok()
}

impl Handle {
    fn wake(&self) {
        // Full means a wake-up is pending already.
        let _ = nix::unistd::write(self.wake.as_fd(), &[1]);
    }
}

/// A worker pipe being read.
struct Open {
    fd: OwnedFd,
    prefix: Vec<u8>,
    lines: Lines,
    stream: Stream,
    id: u32,
    pid: u32,
}

struct Pump {
    sink: Sink,
    epoll: Epoll,
    wake: OwnedFd,
    events: Receiver<Vec<u8>>,
    requests: Receiver<Request>,
    /// Indexed by epoll token; `free` lists the empty places.
    open: Vec<Option<Open>>,
    free: Vec<usize>,
    chunk: Vec<u8>,
}

impl Pump {
    fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); 64];
        loop {
            self.write_events();
            self.take_requests();
            self.report();
            let n = match self.epoll.wait(&mut ready, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // Cannot happen with a valid epoll fd; do not spin.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if self.serve(&ready[..n]) < GATHER_BELOW {
                // A trickle (an access log): let a few lines gather rather
                // than wake for each one. Pipes hold far more than this.
                std::thread::sleep(GATHER);
            }
        }
    }

    /// Reads each ready pipe once (a chunk), so no worker starves another.
    /// Returns how many bytes of worker output it read.
    fn serve(&mut self, ready: &[EpollEvent]) -> usize {
        let mut read = 0;
        for event in ready {
            match event.data() {
                WAKE => {
                    let mut drained = [0u8; 64];
                    while matches!(nix::unistd::read(self.wake.as_raw_fd(), &mut drained), Ok(n) if n > 0)
                    {
                    }
                }
                token => read += self.read(token as usize),
            }
        }
        read
    }

    fn write_events(&mut self) {
        while let Ok(record) = self.events.try_recv() {
            self.sink.event(&record);
        }
    }

    fn take_requests(&mut self) {
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Forward {
                    fd,
                    stream,
                    id,
                    pid,
                } => self.watch(fd, stream, id, pid),
                Request::Flush(done) => {
                    self.write_events();
                    self.drain_pipes();
                    self.write_events();
                    let _ = done.send(());
                }
                Request::Surrender(done) => {
                    self.write_events();
                    self.drain_pipes();
                    let _ = done.send(self.hand_back());
                }
            }
        }
    }

    /// Logs what was lost, once the queue has room again and the sink works.
    fn report(&mut self) {
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                event = "log-lost",
                lost = dropped,
                "{dropped} of the manager's log messages were dropped: the log queue was full"
            );
        }
        if let Some((lost, why)) = self.sink.take_recovery() {
            tracing::warn!(
                event = "log-lost",
                lost,
                "{lost} log lines were lost: {why}"
            );
        }
    }

    fn watch(&mut self, fd: OwnedFd, stream: Stream, id: u32, pid: u32) {
        let token = self.free.pop().unwrap_or(self.open.len());
        if self
            .epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, token as u64))
            .is_err()
        {
            // Dropping the read end: the worker's writes fail, as they
            // would with no reader. Only when out of memory.
            return;
        }
        let open = Open {
            fd,
            prefix: self.sink.prefix(stream, id, pid),
            lines: Lines::default(),
            stream,
            id,
            pid,
        };
        if token == self.open.len() {
            self.open.push(Some(open));
        } else {
            self.open[token] = Some(open);
        }
    }

    /// Reads a chunk from pipe `token` and writes its lines; at its end,
    /// writes the last partial line and closes it. Returns the bytes read.
    fn read(&mut self, token: usize) -> usize {
        let Some(Some(open)) = self.open.get_mut(token) else {
            return 0;
        };
        let n = loop {
            match nix::unistd::read(open.fd.as_raw_fd(), &mut self.chunk) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return 0,
                // Any other error ends the stream like its end does.
                Err(_) => break 0,
            }
        };
        let sink = &mut self.sink;
        let prefix = &open.prefix;
        if n > 0 {
            open.lines
                .feed(&self.chunk[..n], |piece| sink.worker_piece(prefix, piece));
            sink.flush();
            return n;
        }
        open.lines.finish(|piece| sink.worker_piece(prefix, piece));
        sink.flush();
        let _ = self.epoll.delete(&open.fd);
        self.open[token] = None;
        self.free.push(token);
        0
    }

    /// Stops reading every pipe and returns them, each one's last partial
    /// line written out.
    fn hand_back(&mut self) -> Vec<Pipe> {
        let mut pipes = Vec::new();
        for (token, open) in self.open.iter_mut().enumerate() {
            let Some(mut open) = open.take() else {
                continue;
            };
            let sink = &mut self.sink;
            let prefix = &open.prefix;
            open.lines.finish(|piece| sink.worker_piece(prefix, piece));
            let _ = self.epoll.delete(&open.fd);
            self.free.push(token);
            pipes.push(Pipe {
                fd: open.fd,
                stream: open.stream,
                id: open.id,
                pid: open.pid,
            });
        }
        self.sink.flush();
        pipes
    }

    /// Reads every pipe until nothing more is readable right now.
    fn drain_pipes(&mut self) {
        let mut ready = vec![EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut ready, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let pipes: Vec<EpollEvent> = ready[..n]
                .iter()
                .filter(|e| e.data() != WAKE)
                .copied()
                .collect();
            if pipes.is_empty() {
                return;
            }
            if self.serve(&pipes) == 0 {
                return;
            }
        }
    }
}
