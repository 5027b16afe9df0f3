//! A volume held in memory: the reference implementation of the contract, for tests and for
//! front-end benchmarks that must not measure storage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;
use futures::FutureExt;
use parking_lot::RwLock;

use crate::{check_payload, check_range, BlockDevice, BlockError, IoFuture};

/// A [`BlockDevice`] whose blocks live in memory. Durable for the life of the process only.
#[derive(Clone)]
pub struct MemBlockDevice {
    geometry: VolumeGeometry,
    data: Arc<RwLock<Vec<u8>>>,
    /// Reads touching this LBA or later fail as a medium error (`u64::MAX`: none do).
    unreadable_from: Arc<AtomicU64>,
}

impl MemBlockDevice {
    /// A zero-filled device.
    pub fn new(geometry: VolumeGeometry) -> Self {
        Self {
            geometry,
            data: Arc::new(RwLock::new(vec![0; geometry.size().0 as usize])),
            unreadable_from: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// From now on, reads of `lba` or later fail with [`BlockError::Medium`] naming the first
    /// unreadable LBA they touch, as a device with lost data reports them (for front-end tests).
    pub fn lose_data_from(&self, lba: Lba) {
        self.unreadable_from.store(lba.0, Ordering::Relaxed);
    }

    fn span(&self, lba: Lba, count: BlockCount) -> std::ops::Range<usize> {
        let start = self.geometry.offset_of(lba).0 as usize;
        start..start + self.geometry.len_of(count).0 as usize
    }

    fn zero(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        let res = check_range(&self.geometry, ByteSize(u64::MAX), lba, count).map(|()| {
            let span = self.span(lba, count);
            self.data.write()[span].fill(0);
        });
        futures::future::ready(res).boxed()
    }
}

impl BlockDevice for MemBlockDevice {
    fn geometry(&self) -> VolumeGeometry {
        self.geometry
    }

    fn max_transfer(&self) -> ByteSize {
        ByteSize::mib(4)
    }

    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        let lost = self.unreadable_from.load(Ordering::Relaxed);
        let res = check_range(&self.geometry, self.max_transfer(), lba, count).and_then(|()| {
            if lba.0 + count.0 > lost {
                return Err(BlockError::Medium {
                    lba: lba.0.max(lost),
                    reason: "data lost (test device)".into(),
                });
            }
            Ok(Bytes::copy_from_slice(
                &self.data.read()[self.span(lba, count)],
            ))
        });
        futures::future::ready(res).boxed()
    }

    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        let res = check_payload(&self.geometry, data.len())
            .and_then(|count| check_range(&self.geometry, self.max_transfer(), lba, count))
            .map(|()| {
                let start = self.geometry.offset_of(lba).0 as usize;
                self.data.write()[start..start + data.len()].copy_from_slice(&data);
            });
        futures::future::ready(res).boxed()
    }

    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.zero(lba, count)
    }

    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.zero(lba, count)
    }

    fn flush(&self) -> IoFuture<()> {
        futures::future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcubierre_types::BlockSize;
    use futures::executor::block_on;

    #[test]
    fn write_read_unmap() {
        let g = VolumeGeometry::new(BlockSize::B512, ByteSize::kib(64)).unwrap();
        let d = MemBlockDevice::new(g);
        block_on(d.write(Lba(3), Bytes::from(vec![7u8; 1024]))).unwrap();
        let r = block_on(d.read(Lba(2), BlockCount(4))).unwrap();
        assert_eq!(&r[..512], &[0u8; 512][..]);
        assert_eq!(&r[512..1536], &[7u8; 1024][..]);
        block_on(d.unmap(Lba(4), BlockCount(1))).unwrap();
        let r = block_on(d.read(Lba(3), BlockCount(2))).unwrap();
        assert_eq!(&r[..512], &[7u8; 512][..]);
        assert_eq!(&r[512..], &[0u8; 512][..]);
        assert!(block_on(d.write(Lba(127), Bytes::from(vec![0u8; 1024]))).is_err());
    }
}
