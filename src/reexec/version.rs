//! Which build this is: the crate's version and a build label.
//!
//! A re-exec is only worth its name if the operator can see that the code
//! changed, and the package's revisions of one version are different builds.
//! So the version is `0.1.0`, or `0.1.0 (LABEL)` with a build label: set
//! when the binary is built (`SOCKHERD_BUILD=2 cargo build`: packaging puts
//! the Debian revision there), and kept in a marked block of the binary's
//! data, where the tests stamp another label into a copy of the binary to
//! have "another build" without building one.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// What precedes the label in the binary.
pub(crate) const MARK: &[u8; 16] = b"sockherd-build\0:";

/// How long a label may be.
pub(crate) const LABEL_MAX: usize = 48;

/// The marked block: [`MARK`], then the label, NUL-padded.
#[used]
static BUILD: [u8; 16 + LABEL_MAX] = stamp(option_env!("SOCKHERD_BUILD"));

/// Lays out the block at compile time (a label too long is cut).
const fn stamp(label: Option<&str>) -> [u8; 16 + LABEL_MAX] {
    let mut block = [0u8; 16 + LABEL_MAX];
    let mut i = 0;
    while i < MARK.len() {
        block[i] = MARK[i];
        i += 1;
    }
    if let Some(label) = label {
        let bytes = label.as_bytes();
        let mut j = 0;
        while j < bytes.len() && j < LABEL_MAX {
            block[16 + j] = bytes[j];
            j += 1;
        }
    }
    block
}

/// The build label, if the binary has one.
fn label() -> Option<String> {
    // Read through a volatile load: the compiler must not fold the block's
    // compile-time contents into the code, or a stamped copy would still
    // report the old label.
    // SAFETY: BUILD is a static, always valid to read.
    let block = unsafe { std::ptr::read_volatile(&BUILD) };
    let label = &block[16..];
    let end = label.iter().position(|b| *b == 0).unwrap_or(label.len());
    let label = std::str::from_utf8(&label[..end]).ok()?.trim();
    (!label.is_empty()).then(|| label.to_owned())
}

/// When this image started serving, µs since the epoch.
static IMAGE_STARTED: OnceLock<u64> = OnceLock::new();

/// Notes that this image starts serving now.
pub(crate) fn image_starts() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let _ = IMAGE_STARTED.set(now);
}

/// When this image started serving (its start, or its re-exec), µs since
/// the epoch; 0 before it did.
pub(crate) fn image_started_usec() -> u64 {
    IMAGE_STARTED.get().copied().unwrap_or(0)
}

/// `0.1.0`, or `0.1.0 (LABEL)`.
pub(crate) fn version() -> String {
    match label() {
        Some(label) => format!("{} ({label})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_laid_out_for_stamping() {
        let block = stamp(Some("2"));
        assert_eq!(&block[..16], MARK);
        assert_eq!(&block[16..18], b"2\0");
        let long = "x".repeat(LABEL_MAX + 10);
        assert!(stamp(Some(&long))[16..].iter().all(|b| *b == b'x'));
        assert!(stamp(None)[16..].iter().all(|b| *b == 0));
        assert!(version().starts_with(env!("CARGO_PKG_VERSION")));
    }
}
