//! A medium in memory, for unit tests and CPU benchmarks.

use parking_lot::RwLock;

use crate::Medium;

/// A [`Medium`] backed by a `Vec<u8>`; `sync` does nothing (memory never loses power here).
pub struct MemMedium {
    data: RwLock<Vec<u8>>,
}

impl MemMedium {
    /// A zero-filled medium of `len` bytes.
    pub fn new(len: usize) -> Self {
        Self::from_image(vec![0; len])
    }

    /// A medium holding `image` (for example what a crash model left durable).
    pub fn from_image(image: Vec<u8>) -> Self {
        Self {
            data: RwLock::new(image),
        }
    }

    /// A copy of the current bytes.
    pub fn image(&self) -> Vec<u8> {
        self.data.read().clone()
    }
}

fn range(offset: u64, len: usize, size: usize) -> std::io::Result<std::ops::Range<usize>> {
    let start = offset as usize;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("I/O of {len} bytes at {offset} beyond medium of {size} bytes"),
        )),
    }
}

impl Medium for MemMedium {
    fn len(&self) -> u64 {
        self.data.read().len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let data = self.data.read();
        buf.copy_from_slice(&data[range(offset, buf.len(), data.len())?]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut data = self.data.write();
        let r = range(offset, buf.len(), data.len())?;
        data[r].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
