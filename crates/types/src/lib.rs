//! Identifiers and units shared by every Alcubierre crate.
//!
//! Owns: the newtypes that keep bytes, logical blocks, sequence numbers and epochs apart
//! in signatures. Invariants: a [`BlockSize`] is always 512 or 4096; a [`ByteSize`] used as
//! a volume size is a multiple of its block size (checked by [`VolumeGeometry::new`]).
//! This crate does no I/O.
#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Serialize};

/// A volume's identity: a UUID, stable for the volume's life, shared by every replica.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeId(pub uuid::Uuid);

impl VolumeId {
    /// A new random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
    /// The id as 16 big-endian bytes (the on-disk and on-wire form).
    pub fn to_bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }
    /// The id from its 16-byte form.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(b))
    }
}

/// Prefix of volume subsystem NQNs.
pub const NQN_PREFIX: &str = "nqn.2014-08.io.alcubierre:vol:";

impl VolumeId {
    /// The NQN of the volume's NVMe subsystem (the same on every node, as multipath hosts
    /// need).
    pub fn nqn(self) -> String {
        format!("{NQN_PREFIX}{}", self.0)
    }

    /// The volume's iSCSI target name: `iqn.2014-08.io.alcubierre:vol.<uuid>` (the same on
    /// every node).
    pub fn iqn(self) -> String {
        format!("iqn.2014-08.io.alcubierre:vol.{}", self.0)
    }

    /// The NGUID of the volume's namespace: its UUID's 16 bytes, as 32 hex digits.
    pub fn nguid(self) -> String {
        self.0.simple().to_string()
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vol:{}", self.0)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A count of bytes (a size or a length).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        Self(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }
}

/// In the largest binary unit the size reaches (up to EiB): whole when exact (`100 TiB`),
/// else with one decimal (`1.5 GiB`).
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let Some(i) = (0..UNITS.len())
            .rev()
            .find(|&i| self.0 >> (10 * (i + 1)) > 0)
        else {
            return write!(f, "{} B", self.0);
        };
        let unit = 1u64 << (10 * (i + 1));
        if self.0.is_multiple_of(unit) {
            write!(f, "{} {}", self.0 / unit, UNITS[i])
        } else {
            write!(f, "{:.1} {}", self.0 as f64 / unit as f64, UNITS[i])
        }
    }
}

/// A byte offset inside a volume, an image or a device.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct ByteOffset(pub u64);

/// A logical block address, in units of the volume's [`BlockSize`].
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct Lba(pub u64);

/// A number of logical blocks.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct BlockCount(pub u64);

/// A 512-byte sector of a volume, counted from the volume's start: the unit in which the cache
/// journal records which part of a 4 KiB [`CacheBlock`] a write covers. Not an [`Lba`]: a
/// volume of 4096-byte logical blocks still has eight sectors per cache block.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct Sector(pub u64);

impl Sector {
    /// Bytes in a sector.
    pub const BYTES: u64 = 512;

    /// The sector that starts at `offset`, or `None` when `offset` is not on a sector boundary.
    pub fn at(offset: ByteOffset) -> Option<Self> {
        offset
            .0
            .is_multiple_of(Self::BYTES)
            .then_some(Self(offset.0 / Self::BYTES))
    }

    /// Where the sector starts.
    pub fn offset(self) -> ByteOffset {
        ByteOffset(self.0 * Self::BYTES)
    }

    /// The cache block that holds the sector.
    pub fn block(self) -> CacheBlock {
        CacheBlock(self.0 / CacheBlock::SECTORS)
    }

    /// The sector's place inside its cache block (0 to 7).
    pub fn within_block(self) -> u64 {
        self.0 % CacheBlock::SECTORS
    }
}

/// A 4 KiB block of a volume, counted from the volume's start: the unit the cache indexes,
/// stores and destages, whatever the volume's logical block size.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct CacheBlock(pub u64);

impl CacheBlock {
    /// Bytes in a cache block.
    pub const BYTES: u64 = 4096;
    /// Sectors in a cache block.
    pub const SECTORS: u64 = Self::BYTES / Sector::BYTES;

    /// The block's first sector.
    pub fn first_sector(self) -> Sector {
        Sector(self.0 * Self::SECTORS)
    }

    /// Where the block starts.
    pub fn offset(self) -> ByteOffset {
        ByteOffset(self.0 * Self::BYTES)
    }

    /// The block `n` blocks further on.
    pub fn plus(self, n: u64) -> Self {
        Self(self.0 + n)
    }
}

/// A storage node's name, unique in its cluster (its configuration's `[node] name`): how the
/// store's replica sets, the replication protocol and the control plane name a node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&String> for NodeId {
    fn from(s: &String) -> Self {
        Self(s.clone())
    }
}

impl std::ops::Deref for NodeId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<NodeId> for String {
    fn eq(&self, other: &NodeId) -> bool {
        *self == other.0
    }
}

impl PartialEq<NodeId> for str {
    fn eq(&self, other: &NodeId) -> bool {
        self == other.0
    }
}

impl PartialEq<NodeId> for &str {
    fn eq(&self, other: &NodeId) -> bool {
        *self == other.0
    }
}

/// A replica-set epoch: raised on every change of primary or membership (SPEC §3). 0 is
/// "none yet".
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The next epoch.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A replicated volume's write sequence number: its primary numbers writes 1, 2, 3, ...; 0 is
/// "before the first write".
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The next sequence number.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The one before (0 stays 0).
    pub fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }

    /// How many sequence numbers follow `earlier` up to this one (0 when it is not later).
    pub fn since(self, earlier: SeqNo) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A replicated write's place in its volume's log: the epoch in which its primary assigned it
/// and its sequence number. `LogPos::default()` (0, 0) is "before the first write". Ordered by
/// epoch, then sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPos {
    /// The epoch of the primary that assigned it.
    pub epoch: Epoch,
    /// The sequence number.
    pub seq: SeqNo,
}

impl LogPos {
    /// Position `seq` assigned in `epoch`.
    pub fn new(epoch: u64, seq: u64) -> Self {
        Self {
            epoch: Epoch(epoch),
            seq: SeqNo(seq),
        }
    }
}

/// A volume's logical block size: 512 (reporting 4096-byte physical blocks) or 4096.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum BlockSize {
    /// 512-byte logical blocks.
    B512,
    /// 4096-byte logical blocks.
    B4096,
}

impl BlockSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::B512 => 512,
            Self::B4096 => 4096,
        }
    }
    /// From a byte count; only 512 and 4096 are valid.
    pub fn from_bytes(n: u64) -> Result<Self, UnitError> {
        match n {
            512 => Ok(Self::B512),
            4096 => Ok(Self::B4096),
            other => Err(UnitError::BlockSize(other)),
        }
    }
}

/// Errors from constructing units.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// A block size other than 512 or 4096.
    #[error("block_size must be 512 or 4096, got {0}")]
    BlockSize(u64),
    /// A volume size that is zero or not a multiple of the block size.
    #[error("size must be a non-zero multiple of the block size {block_size}, got {size} bytes")]
    VolumeSize {
        /// The requested size in bytes.
        size: u64,
        /// The volume's block size in bytes.
        block_size: u64,
    },
}

/// A volume's shape: its logical block size and its size.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VolumeGeometry {
    block_size: BlockSize,
    size: ByteSize,
}

impl VolumeGeometry {
    /// A geometry; `size` must be a non-zero multiple of `block_size`.
    pub fn new(block_size: BlockSize, size: ByteSize) -> Result<Self, UnitError> {
        if size.0 == 0 || !size.0.is_multiple_of(block_size.bytes()) {
            return Err(UnitError::VolumeSize {
                size: size.0,
                block_size: block_size.bytes(),
            });
        }
        Ok(Self { block_size, size })
    }
    /// The logical block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }
    /// The size in bytes.
    pub fn size(&self) -> ByteSize {
        self.size
    }
    /// The number of logical blocks.
    pub fn blocks(&self) -> BlockCount {
        BlockCount(self.size.0 / self.block_size.bytes())
    }
    /// The byte offset of `lba`.
    pub fn offset_of(&self, lba: Lba) -> ByteOffset {
        ByteOffset(lba.0 * self.block_size.bytes())
    }
    /// The byte length of `count` blocks.
    pub fn len_of(&self, count: BlockCount) -> ByteSize {
        ByteSize(count.0 * self.block_size.bytes())
    }
    /// The first sector of block `lba` (every block size is a whole number of sectors).
    pub fn sector_of(&self, lba: Lba) -> Sector {
        Sector(self.offset_of(lba).0 / Sector::BYTES)
    }
    /// The sectors in `count` blocks.
    pub fn sectors_in(&self, count: BlockCount) -> u64 {
        self.len_of(count).0 / Sector::BYTES
    }
    /// True when `[lba, lba + count)` lies inside the volume (and does not overflow).
    pub fn contains(&self, lba: Lba, count: BlockCount) -> bool {
        lba.0
            .checked_add(count.0)
            .is_some_and(|end| end <= self.blocks().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_print_in_the_largest_unit() {
        let shown = |b: u64| ByteSize(b).to_string();
        assert_eq!(shown(512), "512 B");
        assert_eq!(shown(4096), "4 KiB");
        assert_eq!(shown(1536 << 20), "1.5 GiB");
        assert_eq!(shown(100 << 40), "100 TiB");
        assert_eq!(shown(3 << 50), "3 PiB");
        assert_eq!(shown(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn geometry_rejects_bad_sizes() {
        assert!(VolumeGeometry::new(BlockSize::B512, ByteSize(0)).is_err());
        assert_eq!(
            VolumeGeometry::new(BlockSize::B4096, ByteSize(4097)),
            Err(UnitError::VolumeSize {
                size: 4097,
                block_size: 4096
            })
        );
        assert_eq!(BlockSize::from_bytes(1024), Err(UnitError::BlockSize(1024)));
    }

    #[test]
    fn contains_checks_overflow() {
        let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
        assert_eq!(g.blocks(), BlockCount(2048));
        assert!(g.contains(Lba(2047), BlockCount(1)));
        assert!(!g.contains(Lba(2047), BlockCount(2)));
        assert!(!g.contains(Lba(u64::MAX), BlockCount(2)));
    }
}
