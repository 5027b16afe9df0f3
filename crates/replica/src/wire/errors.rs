//! Block errors in replies: a code, three numbers and a text.

use alcubierre_block::BlockError;

use super::WireError;

/// Longest error text a reply carries (longer texts are cut at a character boundary).
pub(super) const MAX_ERROR_TEXT: usize = 1024;

/// A block error as (code, three numbers, text).
pub(super) fn error_fields(e: &BlockError) -> (u8, [u64; 3], &str) {
    match e {
        BlockError::OutOfRange {
            lba,
            count,
            capacity,
        } => (1, [*lba, *count, *capacity], ""),
        BlockError::Misaligned {
            len,
            expected,
            block_size,
        } => (2, [*len, *expected, *block_size], ""),
        BlockError::TooLarge { len, max } => (3, [*len, *max, 0], ""),
        BlockError::Medium { lba, reason } => (4, [*lba, 0, 0], reason),
        BlockError::Backend(t) => (5, [0; 3], t),
        BlockError::DeviceFailed(t) => (6, [0; 3], t),
        BlockError::Unavailable(t) => (7, [0; 3], t),
        BlockError::ReservationConflict => (8, [0; 3], ""),
        BlockError::InvalidField(t) => (9, [0; 3], t),
    }
}

pub(super) fn error_from(code: u8, n: [u64; 3], text: &[u8]) -> Result<BlockError, WireError> {
    let t = || String::from_utf8_lossy(text).into_owned();
    Ok(match code {
        1 => BlockError::OutOfRange {
            lba: n[0],
            count: n[1],
            capacity: n[2],
        },
        2 => BlockError::Misaligned {
            len: n[0],
            expected: n[1],
            block_size: n[2],
        },
        3 => BlockError::TooLarge {
            len: n[0],
            max: n[1],
        },
        4 => BlockError::Medium {
            lba: n[0],
            reason: t(),
        },
        5 => BlockError::Backend(t()),
        6 => BlockError::DeviceFailed(t()),
        7 => BlockError::Unavailable(t()),
        8 => BlockError::ReservationConflict,
        9 => BlockError::InvalidField(t()),
        _ => return Err(WireError::Invalid("unknown error code in a reply")),
    })
}

pub(super) fn cut(t: &str) -> &str {
    let mut end = t.len().min(MAX_ERROR_TEXT);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}
