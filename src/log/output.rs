//! Worker output: every line a worker writes, tagged with the worker.
//!
//! Each worker's stdout and stderr are pipes read by a task of their own and
//! passed line by line to [`crate::log::journal`], which tags them with the worker's
//! id and pid (`journalctl -u app SOCKHERD_WORKER_ID=3`). stderr lines are
//! logged at error priority (3), stdout lines at info (6).
//!
//! A worker that floods its output must not cost the manager memory or starve
//! dispatch, so both are bounded: a line longer than [`MAX_LINE`] is cut (the
//! cut is marked), and past [`LINES_PER_SECOND`] a worker's lines are dropped
//! and counted; the count is logged with the next line that gets through.
//! Memory per stream is one fixed buffer, whatever the worker writes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::log::journal::{self, Stream};

/// Longest line kept whole; longer ones are cut here.
pub(crate) const MAX_LINE: usize = 8192;
/// Lines per second (per stream) that reach the log; the rest are counted.
pub(crate) const LINES_PER_SECOND: u32 = 5000;

/// Reads `reader` to its end, logging each line for worker `id`/`pid`.
pub(crate) async fn forward(reader: impl AsyncRead + Unpin, stream: Stream, id: u32, pid: u32) {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
    let mut line = Vec::with_capacity(256);
    let mut budget = Budget::new();
    loop {
        line.clear();
        let (complete, cut) = match read_line(&mut reader, &mut line).await {
            Ok(Some(result)) => result,
            Ok(None) | Err(_) => break,
        };
        if !complete && line.is_empty() {
            break;
        }
        let Some(dropped) = budget.take() else {
            continue;
        };
        if dropped > 0 {
            journal::worker_line(
                stream,
                id,
                pid,
                &format!(
                    "[sockherd: {dropped} lines dropped, output over {LINES_PER_SECOND} lines/s]"
                ),
            );
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if cut {
            journal::worker_line(
                stream,
                id,
                pid,
                &format!("{text}… [cut at {MAX_LINE} bytes]"),
            );
        } else {
            journal::worker_line(stream, id, pid, text);
        }
    }
}

/// Reads one line into `line`, keeping at most [`MAX_LINE`] bytes and
/// discarding the rest of an overlong line. Returns (ended with newline, was cut),
/// or `None` at end of stream with nothing read.
async fn read_line(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<(bool, bool)>> {
    let mut cut = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() && !cut {
                None
            } else {
                Some((false, cut))
            });
        }
        let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (&buf[..=at], true),
            None => (buf, false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        if found {
            return Ok(Some((true, cut)));
        }
    }
}

/// A per-second line budget.
struct Budget {
    window_start: Instant,
    used: u32,
    dropped: u64,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            window_start: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    /// `Some(lines dropped before this one)` if this line may be logged.
    fn take(&mut self) -> Option<u64> {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.used = 0;
        }
        if self.used >= LINES_PER_SECOND {
            self.dropped += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.dropped))
    }
}
