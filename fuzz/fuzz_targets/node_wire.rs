//! Bytes from a Node worker's IPC channel, in reads of any size: the first
//! byte says how many cuts (0–15), the next ones where (as a fraction of the
//! rest), and the rest is the stream. The decoder must reassemble the same
//! messages whatever the cuts, and every message must be taken apart safely.
#![no_main]

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(first % 16).min(rest.len());
    let (fractions, stream) = rest.split_at(cuts);
    let mut at: Vec<usize> = fractions
        .iter()
        .map(|f| usize::from(*f) * stream.len() / 255)
        .collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for end in at {
        chunks.push(&stream[start..end]);
        start = end;
    }
    chunks.push(&stream[start..]);
    hostile::check_wire(&chunks);
});
