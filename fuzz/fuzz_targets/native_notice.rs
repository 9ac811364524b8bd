//! One message from a native worker's channel, as `parse_notice` gets it:
//! any bytes. Checked against the protocol's rules (`tests/hostile/mod.rs`).
#![no_main]

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| hostile::check_notice(data));
