//! Where the log thread's bytes go: stderr, or journald's native socket.
//!
//! Writes wait: a sink that is slow (a pipe whose reader lags, journald
//! with a full queue) holds the log thread, which then stops reading the
//! workers' pipes, so the workers' own writes wait. That is the only way a
//! worker line is held back, and it is never dropped for being fast.
//!
//! A sink that is *broken* is another matter: stderr whose reader went away
//! (EPIPE: `sockherd serve … | head`), a full disk, journald gone. Then what
//! cannot be written is lost and counted ([`LOST`], exported as the metric
//! `sockherd_log_lines_lost_total`), the log thread goes on reading the
//! workers' pipes so that nothing waits on a sink that will not come back,
//! and serving goes on. A closed pipe stays broken; any other error is tried
//! again with the next line; journald is reconnected at most once a second
//! ([`super::native`]). When a write succeeds again, the count of what was
//! lost is logged ([`Sink::take_recovery`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::native::{self, Journal};
use super::output::{Piece, SPLIT_MARK};
use super::Stream;

/// Log lines and manager events lost so far: written to a broken sink, or
/// dropped because the manager's event queue was full.
pub(crate) static LOST: AtomicU64 = AtomicU64::new(0);

/// Where lines go, and what was lost on the way.
pub(crate) struct Sink {
    out: Out,
    app: String,
    /// Worker lines of the current chunk, for stderr: written in one go.
    batch: Vec<u8>,
    batch_lines: u64,
    /// One journal entry being built.
    entry: Vec<u8>,
    /// Lost since the last report, and why.
    unreported: u64,
    reason: String,
    /// A write succeeded after losses: time to report them.
    recovered: bool,
    /// A closed pipe does not reopen: writing is not even tried.
    closed: bool,
}

enum Out {
    Stderr,
    Journal(Journal),
}

impl Sink {
    pub(crate) fn stderr(app: &str) -> Sink {
        Sink::new(Out::Stderr, app)
    }

    pub(crate) fn journal(journal: Journal, app: &str) -> Sink {
        Sink::new(Out::Journal(journal), app)
    }

    fn new(out: Out, app: &str) -> Sink {
        Sink {
            out,
            app: app.to_owned(),
            batch: Vec::with_capacity(64 * 1024),
            batch_lines: 0,
            entry: Vec::with_capacity(1024),
            unreported: 0,
            reason: String::new(),
            recovered: false,
            closed: false,
        }
    }

    pub(crate) fn is_journal(&self) -> bool {
        matches!(self.out, Out::Journal(_))
    }

    /// What goes before every line of worker `id`'s `stream`: its tag on
    /// stderr (`app[3]: `), its fields in the journal.
    pub(crate) fn prefix(&self, stream: Stream, id: u32, pid: u32) -> Vec<u8> {
        match self.out {
            Out::Stderr => format!("{}[{id}]: ", self.app).into_bytes(),
            Out::Journal(_) => {
                let mut prefix = Vec::with_capacity(160);
                let (priority, name) = match stream {
                    Stream::Stdout => ("6", "stdout"),
                    Stream::Stderr => ("3", "stderr"),
                };
                native::put(&mut prefix, "PRIORITY", priority.as_bytes());
                native::put(
                    &mut prefix,
                    "SYSLOG_IDENTIFIER",
                    super::stream::identifier(&self.app, id).as_bytes(),
                );
                native::put(&mut prefix, "SOCKHERD_APP", self.app.as_bytes());
                native::put(&mut prefix, "SOCKHERD_WORKER_ID", id.to_string().as_bytes());
                native::put(
                    &mut prefix,
                    "SOCKHERD_WORKER_PID",
                    pid.to_string().as_bytes(),
                );
                native::put(&mut prefix, "SOCKHERD_STREAM", name.as_bytes());
                prefix
            }
        }
    }

    /// One piece of a worker's output, after its stream's [`Sink::prefix`].
    /// On stderr it waits in the batch until [`Sink::flush`].
    pub(crate) fn worker_piece(&mut self, prefix: &[u8], piece: Piece<'_>) {
        let mark = if piece.continues {
            SPLIT_MARK.as_bytes()
        } else {
            b""
        };
        match self.out {
            Out::Stderr => {
                self.batch.extend_from_slice(prefix);
                self.batch.extend_from_slice(piece.text);
                self.batch.extend_from_slice(mark);
                self.batch.push(b'\n');
                self.batch_lines += 1;
            }
            Out::Journal(_) => {
                let mut entry = std::mem::take(&mut self.entry);
                entry.clear();
                entry.extend_from_slice(prefix);
                if piece.continues {
                    native::put(&mut entry, "SOCKHERD_LINE_BREAK", b"line-max");
                }
                let mut message = Vec::with_capacity(piece.text.len() + mark.len());
                message.extend_from_slice(piece.text);
                message.extend_from_slice(mark);
                native::put(&mut entry, "MESSAGE", &message);
                self.write(&entry, 1);
                self.entry = entry;
            }
        }
    }

    /// Writes the batched worker lines (stderr).
    pub(crate) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.write(&batch, self.batch_lines);
        self.batch = batch;
        self.batch.clear();
        self.batch_lines = 0;
    }

    /// One manager event, already formatted for this sink ([`super::events`]).
    pub(crate) fn event(&mut self, record: &[u8]) {
        self.flush();
        self.write(record, 1);
    }

    /// After a successful write that followed losses: how many were lost,
    /// and why, once.
    pub(crate) fn take_recovery(&mut self) -> Option<(u64, String)> {
        if !std::mem::take(&mut self.recovered) {
            return None;
        }
        Some((
            std::mem::take(&mut self.unreported),
            std::mem::take(&mut self.reason),
        ))
    }

    /// Writes `bytes`, which hold `entries` lines or events; counts them
    /// lost if they cannot be written.
    fn write(&mut self, bytes: &[u8], entries: u64) {
        if self.closed {
            self.lose(entries, None);
            return;
        }
        let result = match &mut self.out {
            Out::Stderr => write_all(io::stderr().as_fd(), bytes),
            Out::Journal(journal) => journal.send(bytes),
        };
        match result {
            Ok(()) => self.recovered |= self.unreported > 0,
            Err(e) => {
                if matches!(self.out, Out::Stderr) && e.kind() == io::ErrorKind::BrokenPipe {
                    self.closed = true;
                }
                self.lose(entries, Some(e));
            }
        }
    }

    fn lose(&mut self, entries: u64, why: Option<io::Error>) {
        LOST.fetch_add(entries, Ordering::Relaxed);
        self.unreported += entries;
        self.recovered = false;
        if let Some(e) = why {
            self.reason = match self.out {
                Out::Stderr => format!("stderr: {e}"),
                Out::Journal(_) => format!("the journal: {e}"),
            };
        }
    }
}

/// Writes all of `bytes` to `fd`, waiting while it is full, even when it is
/// non-blocking (a pipe shared with a process that set `O_NONBLOCK`).
fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
