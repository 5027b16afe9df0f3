//! The block-device contract: what a front end (NVMe/TCP, iSCSI) may ask of a volume.
//!
//! A [`BlockDevice`] is one volume as a host sees it: a [`VolumeGeometry`] and five
//! asynchronous operations. The contract every implementation keeps:
//!
//! 1. **Addressing.** Every request names a range `[lba, lba + count)` of logical blocks. A range
//!    that leaves the volume fails with [`BlockError::OutOfRange`]; a write whose payload is not
//!    `count * block_size` bytes fails with [`BlockError::Misaligned`]; a transfer longer than
//!    [`BlockDevice::max_transfer`] fails with [`BlockError::TooLarge`]. Nothing is changed by a
//!    failed request's validation.
//! 2. **Durability.** When `write`, `write_zeroes` or `unmap` returns `Ok`, its effect is durable:
//!    it survives power loss of every component that acknowledged it. There is no volatile write
//!    cache, so [`BlockDevice::flush`] only has to wait for nothing and returns at once; it exists
//!    because hosts send it.
//! 3. **Ordering.** Requests in flight at the same time are not ordered with respect to each other
//!    (as on an NVMe namespace). A request issued after another one *completed* observes it: a
//!    `read` returns the data of every write acknowledged before the read was issued
//!    (read-your-writes). Overlapping concurrent writes leave one of them, whole per block.
//! 4. **Zeroes.** After `unmap` or `write_zeroes` the range reads as zeroes (deterministic read
//!    zero after unmap, i.e. SCSI LBPRZ=1 and NVMe DLFEAT "reads zeroes").
//! 5. **Errors** are typed ([`BlockError`]) so a front end can map each to its protocol's status;
//!    an error never leaves a partially acknowledged request behind: a failed write may or may not
//!    have been applied, exactly like a write that never got its completion.
#![forbid(unsafe_code)]

mod mem;
pub mod metered;
pub mod qos;
mod rate;
pub mod resv;

pub use mem::MemBlockDevice;
pub use metered::{IoStats, Metered};
pub use qos::{Limited, Qos, QosLimits, Rate as QosRate, DEFAULT_BURST as DEFAULT_QOS_BURST};
pub use rate::RateLimiter;
pub use resv::{HostId, Keeper, Reservations, Reserved, ResvCommand, ResvStore};

use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

/// The future every [`BlockDevice`] operation returns.
pub type IoFuture<T> = BoxFuture<'static, Result<T, BlockError>>;

/// A volume as its front ends see it. See the crate documentation for the contract.
pub trait BlockDevice: Send + Sync {
    /// The volume's block size and size.
    fn geometry(&self) -> VolumeGeometry;
    /// The longest transfer a single request may carry.
    fn max_transfer(&self) -> ByteSize;
    /// Reads `count` blocks at `lba`; the result is `count * block_size` bytes long.
    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes>;
    /// Writes `data` (a whole number of blocks) at `lba`; durable when it returns `Ok`.
    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()>;
    /// Makes `count` blocks at `lba` read as zeroes; durable when it returns `Ok`.
    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()>;
    /// Deallocates `count` blocks at `lba`; they read as zeroes afterwards.
    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()>;
    /// Makes every completed write durable. Completed writes already are, so this returns at once.
    fn flush(&self) -> IoFuture<()>;

    /// Runs `op` for `host`, subject to the volume's reservations where the device keeps them
    /// ([`Reserved`], or a path that forwards to the node that does): a host without access
    /// gets [`BlockError::ReservationConflict`]. Front ends send hosts' I/O here. By default
    /// the device keeps no reservations and runs `op`.
    fn submit(&self, host: &HostId, op: Op) -> IoFuture<Bytes> {
        let _ = host;
        op.run(self)
    }

    /// Runs reservation command `cmd` for `host` (through controller `cntlid`) on the volume's
    /// reservations; the state after it. By default the device keeps none and the command
    /// fails with [`BlockError::InvalidField`].
    fn reserve(&self, host: HostId, cntlid: u16, cmd: ResvCommand) -> IoFuture<Reservations> {
        let _ = (host, cntlid, cmd);
        futures::future::ready(Err(BlockError::InvalidField(
            "this device keeps no reservations".into(),
        )))
        .boxed()
    }
}

/// A host's I/O request, as [`BlockDevice::submit`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `count` blocks at `lba`.
    Read {
        /// First block.
        lba: Lba,
        /// Blocks.
        count: BlockCount,
    },
    /// Write `data` (whole blocks) at `lba`.
    Write {
        /// First block.
        lba: Lba,
        /// The data.
        data: Bytes,
    },
    /// Write zeroes over `count` blocks at `lba`.
    WriteZeroes {
        /// First block.
        lba: Lba,
        /// Blocks.
        count: BlockCount,
    },
    /// Deallocate `count` blocks at `lba`.
    Unmap {
        /// First block.
        lba: Lba,
        /// Blocks.
        count: BlockCount,
    },
    /// Make completed writes durable.
    Flush,
}

impl Op {
    /// Whether reservations treat it as a write (NVMe Base 1.4 section 8.8.1: everything but
    /// Read and Compare).
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Read { .. })
    }

    /// Runs it on `dev` with the plain operations: data for a read, empty otherwise.
    pub fn run<D: BlockDevice + ?Sized>(self, dev: &D) -> IoFuture<Bytes> {
        let done = |f: IoFuture<()>| f.map(|r| r.map(|()| Bytes::new())).boxed();
        match self {
            Op::Read { lba, count } => dev.read(lba, count),
            Op::Write { lba, data } => done(dev.write(lba, data)),
            Op::WriteZeroes { lba, count } => done(dev.write_zeroes(lba, count)),
            Op::Unmap { lba, count } => done(dev.unmap(lba, count)),
            Op::Flush => done(dev.flush()),
        }
    }
}

/// A shared device is a device (e.g. a replicated volume also held by its agent).
impl<D: BlockDevice + ?Sized> BlockDevice for std::sync::Arc<D> {
    fn geometry(&self) -> VolumeGeometry {
        (**self).geometry()
    }
    fn max_transfer(&self) -> ByteSize {
        (**self).max_transfer()
    }
    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        (**self).read(lba, count)
    }
    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        (**self).write(lba, data)
    }
    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        (**self).write_zeroes(lba, count)
    }
    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        (**self).unmap(lba, count)
    }
    fn flush(&self) -> IoFuture<()> {
        (**self).flush()
    }
    fn submit(&self, host: &HostId, op: Op) -> IoFuture<Bytes> {
        (**self).submit(host, op)
    }
    fn reserve(&self, host: HostId, cntlid: u16, cmd: ResvCommand) -> IoFuture<Reservations> {
        (**self).reserve(host, cntlid, cmd)
    }
}

/// Why a block request failed; each variant tells the front end which status to return.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    /// The range leaves the volume (NVMe "LBA Out of Range", SCSI "LBA out of range").
    #[error("blocks [{lba}, {lba}+{count}) are outside the volume of {capacity} blocks")]
    OutOfRange {
        /// First block asked for.
        lba: u64,
        /// Number of blocks asked for.
        count: u64,
        /// The volume's size in blocks.
        capacity: u64,
    },
    /// The payload is not a whole number of blocks, or does not match `count`.
    #[error("payload of {len} bytes is not {expected} bytes ({block_size}-byte blocks)")]
    Misaligned {
        /// The payload length.
        len: u64,
        /// The length the request implies.
        expected: u64,
        /// The volume's block size.
        block_size: u64,
    },
    /// The transfer is longer than the device accepts.
    #[error("transfer of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The requested length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// The data of these blocks is known to be lost or corrupt (unrecovered read error).
    #[error("unrecovered read error at block {lba}: {reason}")]
    Medium {
        /// First affected block.
        lba: u64,
        /// What was found.
        reason: String,
    },
    /// The capacity backend failed or is unreachable; the request may be retried later.
    #[error("backend unavailable: {0}")]
    Backend(String),
    /// The cache device failed; this node refuses writes until it is replaced (fail-stop).
    #[error("cache device failed: {0}")]
    DeviceFailed(String),
    /// The device is shutting down or the volume was detached.
    #[error("volume is not available: {0}")]
    Unavailable(String),
    /// The volume's reservations deny the host this request (NVMe and SCSI "Reservation
    /// Conflict").
    #[error("reservation conflict")]
    ReservationConflict,
    /// A field of the request is not valid (NVMe "Invalid Field in Command", SCSI "Invalid
    /// field in CDB"); names the field.
    #[error("invalid field: {0}")]
    InvalidField(String),
}

/// Checks a request's range and length against `geometry` and `max_transfer`.
pub fn check_range(
    geometry: &VolumeGeometry,
    max_transfer: ByteSize,
    lba: Lba,
    count: BlockCount,
) -> Result<(), BlockError> {
    if !geometry.contains(lba, count) {
        return Err(BlockError::OutOfRange {
            lba: lba.0,
            count: count.0,
            capacity: geometry.blocks().0,
        });
    }
    let len = geometry.len_of(count).0;
    if len > max_transfer.0 {
        return Err(BlockError::TooLarge {
            len,
            max: max_transfer.0,
        });
    }
    Ok(())
}

/// Checks that a write payload of `len` bytes is exactly `count` blocks and non-empty, and
/// returns `count`.
pub fn check_payload(geometry: &VolumeGeometry, len: usize) -> Result<BlockCount, BlockError> {
    let bs = geometry.block_size().bytes();
    let len = len as u64;
    if len == 0 || !len.is_multiple_of(bs) {
        return Err(BlockError::Misaligned {
            len,
            expected: len.div_ceil(bs).max(1) * bs,
            block_size: bs,
        });
    }
    Ok(BlockCount(len / bs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcubierre_types::BlockSize;

    #[test]
    fn range_checks() {
        let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
        assert!(check_range(&g, ByteSize::mib(1), Lba(0), BlockCount(2048)).is_ok());
        assert!(matches!(
            check_range(&g, ByteSize::mib(1), Lba(1), BlockCount(2048)),
            Err(BlockError::OutOfRange { capacity: 2048, .. })
        ));
        assert!(matches!(
            check_range(&g, ByteSize::kib(4), Lba(0), BlockCount(9)),
            Err(BlockError::TooLarge {
                len: 4608,
                max: 4096
            })
        ));
        assert!(check_payload(&g, 0).is_err());
        assert!(check_payload(&g, 513).is_err());
        assert_eq!(check_payload(&g, 1024), Ok(BlockCount(2)));
    }
}
