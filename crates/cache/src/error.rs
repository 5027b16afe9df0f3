//! The cache engine's errors, each saying what the caller can do.

use alcubierre_backend::BackendError;
use alcubierre_block::BlockError;
use alcubierre_types::{BlockSize, ByteOffset, VolumeId};

use crate::format::FormatError;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The device holds no valid superblock: not formatted, corrupt, or another version.
    #[error("cache device {device}: {source}")]
    Superblock {
        /// The device.
        device: String,
        /// What was wrong with block 0.
        #[source]
        source: FormatError,
    },
    /// The device is smaller than the smallest usable layout.
    #[error("cache device {device} is too small: {size} bytes, at least {needed} needed")]
    TooSmall {
        /// The device.
        device: String,
        /// Its size.
        size: u64,
        /// The minimum for the requested layout.
        needed: u64,
    },
    /// An option is out of range.
    #[error("invalid option {field}: {reason}")]
    InvalidOption {
        /// The option's name.
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// The journal is damaged in a way that loses acknowledged writes; the device needs an
    /// operator (or, in a cluster, a rebuild from the other replicas).
    #[error("cache device {device} partition {partition}: journal corrupt: {what}")]
    Corrupt {
        /// The device.
        device: String,
        /// The partition.
        partition: u32,
        /// What was found.
        what: String,
    },
    /// A write or sync of the cache device failed earlier; the partition refuses writes from then
    /// on (fail-stop) instead of retrying blindly. Replace the device.
    #[error("cache device {device} partition {partition} failed and refuses writes: {reason}")]
    DeviceFailed {
        /// The device.
        device: String,
        /// The partition.
        partition: u32,
        /// The first error.
        reason: String,
    },
    /// An I/O error while opening or recovering the device.
    #[error("cache device {device}: {op}: {source}")]
    Io {
        /// The device.
        device: String,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The request itself is invalid (range, alignment, length).
    #[error(transparent)]
    Request(#[from] BlockError),
    /// The volume is not attached to this cache.
    #[error("volume {0} is not attached to this cache")]
    UnknownVolume(VolumeId),
    /// The volume is already attached.
    #[error("volume {0} is already attached")]
    AlreadyAttached(VolumeId),
    /// The backend failed (reads of uncached data, destage).
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    /// The newest version of some of the requested data is corrupt on the cache device.
    #[error("volume {volume} cannot be read at byte {}: its newest cached version is corrupt", offset.0)]
    Medium {
        /// The volume.
        volume: VolumeId,
        /// The first unreadable byte the request touches, from the start of the volume.
        offset: ByteOffset,
    },
    /// The engine is stopping.
    #[error("cache is shutting down")]
    ShuttingDown,
}

impl CacheError {
    /// The error as a block device reports it for a volume of `block_size`-byte blocks: a
    /// corrupt range becomes the volume LBA that holds its first unreadable byte.
    pub fn into_block(self, block_size: BlockSize) -> BlockError {
        match self {
            CacheError::Request(b) => b,
            CacheError::Medium { offset, .. } => BlockError::Medium {
                lba: offset.0 / block_size.bytes(),
                reason: self.to_string(),
            },
            CacheError::Backend(_) => BlockError::Backend(self.to_string()),
            CacheError::DeviceFailed { .. }
            | CacheError::Corrupt { .. }
            | CacheError::Io { .. } => BlockError::DeviceFailed(self.to_string()),
            other => BlockError::Unavailable(other.to_string()),
        }
    }
}
