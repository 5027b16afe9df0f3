//! The capacity backend: where a volume's data lives once the cache has destaged it.
//!
//! Owns: the [`Backend`] contract, [`FileBackend`] (a sparse file per volume, for a single
//! machine) and [`MemBackend`] (memory, with a power-loss model, for tests); the Ceph RBD backend
//! (`alcubierre-rbd`) implements the same trait.
//!
//! The contract, which the conformance suite in `tests/conformance.rs` checks for every
//! implementation:
//! 1. A volume's *image* is created with a size, may grow ([`Backend::resize`]) and never
//!    shrinks; I/O outside it fails with [`BackendError::OutOfRange`].
//! 2. `write` and `discard` are durable only after a later [`Backend::flush`] of that volume
//!    returns `Ok`; until then a power loss may keep any subset of them (per 512-byte sector).
//! 3. A discarded range and a never-written range read as zeroes.
//! 4. [`Backend::snapshot`] captures the image's current (flushed or not) contents under a name;
//!    [`Backend::clone_snapshot`] makes a new image from it, which outlives the snapshot;
//!    [`Backend::list_snapshots`] and [`Backend::delete_snapshot`] manage them.
//! 5. Errors say whether retrying may help: [`BackendError::Unavailable`] is transient (the
//!    backend is down or unreachable), the others are not.
//!
//! Offsets and lengths are in bytes and need only be multiples of 512.
#![forbid(unsafe_code)]

pub mod conformance;
mod file;
mod mem;

pub use file::FileBackend;
pub use mem::MemBackend;

use alcubierre_types::{ByteOffset, ByteSize, VolumeId};

/// The capacity tier's size and free space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// What it can hold in all.
    pub total: ByteSize,
    /// What it can still store.
    pub free: ByteSize,
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No image exists for this volume (or snapshot).
    #[error("no backend image for {what}")]
    NotFound {
        /// The volume or snapshot looked for.
        what: String,
    },
    /// An image (or snapshot) of that name already exists.
    #[error("backend image {what} already exists")]
    Exists {
        /// The volume or snapshot.
        what: String,
    },
    /// The range leaves the image.
    #[error("range [{offset}, +{len}) is outside image {volume} of {size} bytes")]
    OutOfRange {
        /// The volume.
        volume: VolumeId,
        /// Start of the range in bytes.
        offset: u64,
        /// Length of the range in bytes.
        len: u64,
        /// The image size in bytes.
        size: u64,
    },
    /// A size that is zero, unaligned, or smaller than the current one.
    #[error("invalid size {size} for {volume}: {reason}")]
    InvalidSize {
        /// The volume.
        volume: VolumeId,
        /// The requested size in bytes.
        size: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Another node claimed the volume's image ([`Backend::claim`]) and the backend refuses
    /// this node's writes to it: retrying does not help, only a new claim does (which only a
    /// volume's new primary makes).
    #[error(
        "the backend image of {volume} was claimed by another node; this node is fenced off it"
    )]
    Fenced {
        /// The volume.
        volume: VolumeId,
    },
    /// The backend is down or unreachable; retrying later may succeed.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// An I/O error on the backend's storage.
    #[error("backend I/O error on {what}: {source}")]
    Io {
        /// What was being accessed.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// True when the same operation may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A capacity backend holding one image per volume. See the crate documentation.
pub trait Backend: Send + Sync {
    /// Creates an image of `size` bytes, reading as zeroes.
    fn create(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError>;
    /// Grows an image to `size` bytes.
    fn resize(&self, volume: VolumeId, size: ByteSize) -> Result<(), BackendError>;
    /// Deletes an image and its snapshots.
    fn delete(&self, volume: VolumeId) -> Result<(), BackendError>;
    /// The image's size.
    fn size(&self, volume: VolumeId) -> Result<ByteSize, BackendError>;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        buf: &mut [u8],
    ) -> Result<(), BackendError>;
    /// Writes `data` at `offset` (durable after the next [`Backend::flush`]).
    fn write(&self, volume: VolumeId, offset: ByteOffset, data: &[u8]) -> Result<(), BackendError>;
    /// Writes several extents of one volume; implementations may issue them concurrently. On
    /// error, any subset of them may have been applied.
    fn write_many(
        &self,
        volume: VolumeId,
        extents: &[(ByteOffset, &[u8])],
    ) -> Result<(), BackendError> {
        for (offset, data) in extents {
            self.write(volume, *offset, data)?;
        }
        Ok(())
    }
    /// Makes `len` bytes at `offset` read as zeroes (and frees their space where possible).
    fn discard(
        &self,
        volume: VolumeId,
        offset: ByteOffset,
        len: ByteSize,
    ) -> Result<(), BackendError>;
    /// Makes every completed write and discard of `volume` durable.
    fn flush(&self, volume: VolumeId) -> Result<(), BackendError>;
    /// Captures the image's contents as snapshot `name`.
    fn snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError>;
    /// The names of `volume`'s snapshots, sorted.
    fn list_snapshots(&self, volume: VolumeId) -> Result<Vec<String>, BackendError>;
    /// Deletes snapshot `name` of `volume` (images cloned from it are independent of it).
    fn delete_snapshot(&self, volume: VolumeId, name: &str) -> Result<(), BackendError>;
    /// Creates image `target` from snapshot `name` of `source`; the new image does not depend
    /// on the snapshot afterwards.
    fn clone_snapshot(
        &self,
        source: VolumeId,
        name: &str,
        target: VolumeId,
    ) -> Result<(), BackendError>;
    /// A human description ("files in /var/lib/...", "rbd pool volumes").
    fn describe(&self) -> String;

    /// The capacity tier's size and the bytes it can still store, when the backend can tell
    /// (a Ceph pool's stored and available bytes, a file backend's file system).
    fn capacity(&self) -> Result<Option<Capacity>, BackendError> {
        Ok(None)
    }
    /// The longest a write may stay in flight before it fails: a node that becomes a volume's
    /// primary waits this long before destaging it, so that no write of the old primary's lands
    /// over newer data (zero where writes complete synchronously).
    fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Takes `volume`'s image for this node alone, fencing off whoever held it before: once
    /// this returns `Ok`, the backend refuses an earlier holder's writes, those still in flight
    /// included, and they fail with [`BackendError::Fenced`]. A volume's new primary claims it
    /// before destaging. The default has nothing to fence (an image no other node writes).
    fn claim(&self, volume: VolumeId) -> Result<(), BackendError> {
        let _ = volume;
        Ok(())
    }
    /// Gives this node's claim on `volume` up (its primary moved elsewhere in order), so that
    /// the next claim needs to fence nobody.
    fn release_claim(&self, volume: VolumeId) -> Result<(), BackendError> {
        let _ = volume;
        Ok(())
    }
}

/// Checks a size: non-zero and a multiple of 512 (for implementations of [`Backend`]).
pub fn check_size(volume: VolumeId, size: ByteSize) -> Result<(), BackendError> {
    if size.0 == 0 || !size.0.is_multiple_of(512) {
        return Err(BackendError::InvalidSize {
            volume,
            size: size.0,
            reason: "must be a non-zero multiple of 512",
        });
    }
    Ok(())
}

/// Checks that `[offset, offset + len)` lies in an image of `size` bytes (for implementations
/// of [`Backend`]).
pub fn check_io(volume: VolumeId, size: u64, offset: u64, len: u64) -> Result<(), BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BackendError::OutOfRange {
            volume,
            offset,
            len,
            size,
        }),
    }
}
