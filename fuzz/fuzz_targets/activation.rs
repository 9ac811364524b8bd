//! The socket-activation variables: the first byte says which of
//! `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` are present (bits 0–2) and
//! whether `LISTEN_PID` is this process's pid (bit 3); the rest, split at
//! NUL bytes, gives their values.
#![no_main]

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

/// The pid the parser is told is ours.
const OURS: u32 = 4242;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut values = text.split('\0');
    let mut next = |bit: u8| {
        let value = values.next().unwrap_or_default();
        (flags & (1 << bit) != 0).then_some(value)
    };
    let (pid, fds, names) = (next(0), next(1), next(2));
    let ours = OURS.to_string();
    let pid = if flags & 8 != 0 {
        Some(ours.as_str())
    } else {
        pid
    };
    hostile::check_activation(pid, fds, names, OURS);
});
