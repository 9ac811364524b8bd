//! A config file's text, and the same text as a size or a duration.
#![no_main]

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        hostile::check_config(text);
        hostile::check_units(text);
    }
});
