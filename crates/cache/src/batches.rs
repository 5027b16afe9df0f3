//! Batches read back from the log: their headers, and their data inside read windows.

use alcubierre_io::AlignedBuf;

use crate::format::{BatchHeader, BLOCK};

/// Batches read from the log: their headers, and their data inside read windows.
pub(crate) struct Batches {
    pub(crate) windows: Vec<AlignedBuf>,
    /// (header, window index, block offset of the header in the window)
    pub(crate) batches: Vec<(BatchHeader, usize, usize)>,
    /// Position and sequence number after the last batch read.
    pub(crate) next: (u64, u64),
}

/// The window index of a batch known from its header alone (its data was not read).
pub(crate) const NOT_READ: usize = usize::MAX;

impl Batches {
    /// The data blocks of batch `i` (empty for a batch taken from its header alone).
    pub(crate) fn data(&self, i: usize) -> &[u8] {
        let (h, w, at) = &self.batches[i];
        if *w == NOT_READ {
            return &[];
        }
        let start = (at + 1) * BLOCK;
        &self.windows[*w][start..start + h.data_blocks as usize * BLOCK]
    }
}
