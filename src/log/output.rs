//! Worker output, cut into lines: what the log thread ([`super::pump`]) does
//! with the bytes it reads from a worker's stdout or stderr pipe.
//!
//! Every line is kept whole up to [`MAX_LINE`] bytes. A longer line is
//! split, never cut: it becomes pieces of at most [`MAX_LINE`] bytes (ending
//! on a UTF-8 character boundary), and every piece but the last is marked
//! [`SPLIT_MARK`], so a reader sees where the line goes on. A last line
//! without a newline is passed on when the stream ends. Memory per stream is
//! one partial line, at most [`MAX_LINE`] bytes, whatever the worker writes.

/// Longest line kept in one piece.
pub(crate) const MAX_LINE: usize = 8192;

/// What ends every piece of a split line but the last.
pub(crate) const SPLIT_MARK: &str = "… [split at 8192 bytes]";

/// A piece of output: a whole line, or a piece of a longer one that goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece<'a> {
    /// Without its newline (and without a `\r` before it).
    pub text: &'a [u8],
    /// More of the same line follows.
    pub continues: bool,
}

/// The line a stream is in the middle of.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Cuts `chunk` into pieces, passing each to `emit` in order; keeps what
    /// follows the last newline for the next chunk.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], mut emit: impl FnMut(Piece<'_>)) {
        while let Some(at) = chunk.iter().position(|b| *b == b'\n') {
            let (line, rest) = (&chunk[..at], &chunk[at + 1..]);
            if self.partial.is_empty() {
                pieces(line, &mut emit);
            } else {
                self.partial.extend_from_slice(line);
                pieces(&self.partial, &mut emit);
                self.partial.clear();
            }
            chunk = rest;
        }
        self.partial.extend_from_slice(chunk);
        // A line this long goes out in pieces now, so memory stays bounded.
        while self.partial.len() > MAX_LINE {
            let at = boundary(&self.partial);
            emit(Piece {
                text: &self.partial[..at],
                continues: true,
            });
            self.partial.drain(..at);
        }
    }

    /// The end of the stream: the last line, if it had no newline.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(Piece<'_>)) {
        if !self.partial.is_empty() {
            pieces(&self.partial, &mut emit);
            self.partial = Vec::new();
        }
    }
}

/// Emits one whole line, in pieces if it is longer than [`MAX_LINE`].
fn pieces(mut line: &[u8], emit: &mut impl FnMut(Piece<'_>)) {
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    while line.len() > MAX_LINE {
        let at = boundary(line);
        emit(Piece {
            text: &line[..at],
            continues: true,
        });
        line = &line[at..];
    }
    emit(Piece {
        text: line,
        continues: false,
    });
}

/// Where to split a text longer than [`MAX_LINE`]: at [`MAX_LINE`], or a
/// few bytes before it so as not to split a UTF-8 character.
fn boundary(text: &[u8]) -> usize {
    let mut at = MAX_LINE;
    // Continuation bytes are 0b10xx_xxxx; a character is at most 4 bytes.
    while at > MAX_LINE - 3 && text.get(at).is_some_and(|b| b & 0xC0 == 0x80) {
        at -= 1;
    }
    if text.get(at).is_some_and(|b| b & 0xC0 == 0x80) {
        MAX_LINE
    } else {
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut keep = |p: Piece<'_>| {
            out.push((String::from_utf8_lossy(p.text).into_owned(), p.continues));
        };
        for chunk in chunks {
            lines.feed(chunk, &mut keep);
        }
        lines.finish(&mut keep);
        out
    }

    #[test]
    fn lines_across_chunks_arrive_whole_and_in_order() {
        assert_eq!(
            cut(&[b"one\ntw", b"o\r\n", b"\nthree"]),
            vec![
                ("one".into(), false),
                ("two".into(), false),
                ("".into(), false),
                ("three".into(), false)
            ]
        );
    }

    #[test]
    fn a_long_line_is_split_into_marked_pieces() {
        let long = "x".repeat(MAX_LINE * 2 + 5) + "\n";
        let pieces = cut(&[long.as_bytes()]);
        let sizes: Vec<(usize, bool)> = pieces.iter().map(|(t, c)| (t.len(), *c)).collect();
        assert_eq!(sizes, vec![(MAX_LINE, true), (MAX_LINE, true), (5, false)]);
        // The same, fed a byte at a time: memory stays bounded on the way.
        let bytes: Vec<&[u8]> = long.as_bytes().chunks(1).collect();
        assert_eq!(cut(&bytes), pieces);
    }

    #[test]
    fn a_split_never_cuts_a_character() {
        // 8191 bytes, then a 3-byte character straddling the limit.
        let line = format!("{}€tail\n", "x".repeat(MAX_LINE - 1));
        let pieces = cut(&[line.as_bytes()]);
        assert_eq!(pieces[0].0.len(), MAX_LINE - 1);
        assert_eq!(pieces[1].0, "€tail");
    }
}
