//! The on-disk format, version 1: superblock, checkpoints, batch headers, entry descriptors.
//!
//! Byte layouts are in `docs/design/cache-format.md`; this module is their only encoder and
//! decoder. Every integer is little-endian. Every 4 KiB metadata block ends with a CRC-32C of
//! its first 4092 bytes. Decoders never panic on any input: they return [`FormatError`].

use alcubierre_types::{CacheBlock, Epoch, SeqNo, VolumeId};

/// The unit of the cache device: every metadata block and every cached data block.
pub const BLOCK: usize = CacheBlock::BYTES as usize;
/// Sectors (512 bytes) per block.
pub const SECTORS_PER_BLOCK: u64 = CacheBlock::SECTORS;
/// A block mask with every sector valid.
pub const FULL_MASK: u8 = 0xff;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Most partitions a device can be split into.
pub const MAX_PARTITIONS: u32 = 64;
/// Most entries in one batch (what fits in a header block).
pub const MAX_ENTRIES: usize = (BLOCK - HEADER_FIXED - 4) / ENTRY_LEN;

const SB_MAGIC: &[u8; 8] = b"ALCUBSB\0";
const CP_MAGIC: &[u8; 8] = b"ALCUBCP\0";
const BH_MAGIC: &[u8; 8] = b"ALCUBBH\0";
const CRC_AT: usize = BLOCK - 4;
const HEADER_FIXED: usize = 64;
const ENTRY_LEN: usize = 64;
const PT_AT: usize = 64;

/// Why a metadata block did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The block is not of the expected kind (wrong magic): for a superblock, the device was
    /// never formatted, or holds something else.
    #[error("no {what} here (magic {found:02x?})")]
    BadMagic {
        /// The kind of block expected.
        what: &'static str,
        /// The first bytes found.
        found: [u8; 8],
    },
    /// The checksum does not match: the block is torn or corrupt.
    #[error("{what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// The kind of block.
        what: &'static str,
        /// The stored CRC.
        stored: u32,
        /// The CRC of the bytes found.
        computed: u32,
    },
    /// The block was written by another format version.
    #[error("{what} has format version {found}; this build reads version {FORMAT_VERSION}")]
    Version {
        /// The kind of block.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// A field holds a value outside its range.
    #[error("{what}: field {field} = {value} is invalid ({reason})")]
    Field {
        /// The kind of block.
        what: &'static str,
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The CRC-32C of a metadata block (superblock, batch header, ...) before its CRC field.
/// Every commit seals a batch header, so it uses `crc-fast`, as entries do.
fn block_crc(b: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &b[..CRC_AT]) as u32
}

fn seal(b: &mut [u8]) {
    let crc = block_crc(b);
    put32(b, CRC_AT, crc);
}

fn check_block(b: &[u8], what: &'static str, magic: &[u8; 8]) -> Result<(), FormatError> {
    if b.len() != BLOCK {
        return Err(FormatError::Field {
            what,
            field: "length",
            value: b.len() as u64,
            reason: "a metadata block is 4096 bytes",
        });
    }
    if &b[..8] != magic {
        return Err(FormatError::BadMagic {
            what,
            found: b[..8].try_into().expect("8 bytes"),
        });
    }
    let stored = u32_at(b, CRC_AT);
    let computed = block_crc(b);
    if stored != computed {
        return Err(FormatError::BadChecksum {
            what,
            stored,
            computed,
        });
    }
    Ok(())
}

/// One partition's extent on the device, in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionExtent {
    /// First block of the partition's log.
    pub start: u64,
    /// Length of the log in blocks.
    pub blocks: u64,
}

/// Block 0 of a cache device: what the device is and how it is divided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The device's identity, chosen at format time.
    pub device_id: uuid::Uuid,
    /// A random number stamped on every checkpoint and batch header, so that blocks left over
    /// from an earlier format are never taken for current ones.
    pub nonce: u64,
    /// The device's size in blocks when formatted.
    pub device_blocks: u64,
    /// Most data blocks in one batch (also the longest single write).
    pub max_batch_data_blocks: u32,
    /// Seconds since the Unix epoch at format time.
    pub created: u64,
    /// The partitions' logs.
    pub partitions: Vec<PartitionExtent>,
}

impl Superblock {
    /// Encodes into one block.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..8].copy_from_slice(SB_MAGIC);
        put32(&mut b, 8, FORMAT_VERSION);
        put32(&mut b, 12, BLOCK as u32);
        b[16..32].copy_from_slice(self.device_id.as_bytes());
        put64(&mut b, 32, self.nonce);
        put64(&mut b, 40, self.device_blocks);
        put32(&mut b, 48, self.partitions.len() as u32);
        put32(&mut b, 52, self.max_batch_data_blocks);
        put64(&mut b, 56, self.created);
        for (i, p) in self.partitions.iter().enumerate() {
            put64(&mut b, PT_AT + i * 16, p.start);
            put64(&mut b, PT_AT + i * 16 + 8, p.blocks);
        }
        seal(&mut b);
        b
    }

    /// Decodes and validates block 0.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        const W: &str = "superblock";
        check_block(b, W, SB_MAGIC)?;
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(FormatError::Version {
                what: W,
                found: version,
            });
        }
        let bs = u32_at(b, 12);
        if bs as usize != BLOCK {
            return Err(FormatError::Field {
                what: W,
                field: "block_size",
                value: bs.into(),
                reason: "must be 4096",
            });
        }
        let device_blocks = u64_at(b, 40);
        let n = u32_at(b, 48);
        if n == 0 || n > MAX_PARTITIONS {
            return Err(FormatError::Field {
                what: W,
                field: "partitions",
                value: n.into(),
                reason: "must be 1..=64",
            });
        }
        let max_batch_data_blocks = u32_at(b, 52);
        if max_batch_data_blocks == 0 {
            return Err(FormatError::Field {
                what: W,
                field: "max_batch_data_blocks",
                value: 0,
                reason: "must be positive",
            });
        }
        let mut partitions = Vec::with_capacity(n as usize);
        let mut prev_end = 1 + 2 * u64::from(n);
        for i in 0..n as usize {
            let p = PartitionExtent {
                start: u64_at(b, PT_AT + i * 16),
                blocks: u64_at(b, PT_AT + i * 16 + 8),
            };
            let end = p.start.checked_add(p.blocks);
            let fits = p.start >= prev_end
                && end.is_some_and(|e| e <= device_blocks)
                && p.blocks >= 4 * (u64::from(max_batch_data_blocks) + 1)
                && p.blocks <= u64::from(u32::MAX);
            if !fits {
                return Err(FormatError::Field {
                    what: W,
                    field: "partition extent",
                    value: i as u64,
                    reason: "overlaps, leaves the device, or is too small or too large",
                });
            }
            prev_end = p.start + p.blocks;
            partitions.push(p);
        }
        Ok(Self {
            device_id: uuid::Uuid::from_bytes(b[16..32].try_into().expect("16 bytes")),
            nonce: u64_at(b, 32),
            device_blocks,
            max_batch_data_blocks,
            created: u64_at(b, 56),
            partitions,
        })
    }
}

/// The block numbers of partition `p`'s two checkpoint slots.
pub fn checkpoint_blocks(p: u32) -> [u64; 2] {
    let base = 1 + 2 * u64::from(p);
    [base, base + 1]
}

/// Where destage of a partition has reached, written after each destage round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The partition.
    pub partition: u32,
    /// The device's nonce.
    pub nonce: u64,
    /// Increases by one with every checkpoint written; the valid slot with the highest wins.
    pub generation: u64,
    /// Virtual block position of the first batch not yet destaged.
    pub destage_virt: u64,
    /// Sequence number of that batch.
    pub destage_seq: u64,
    /// The entry sequence number that batch's first entry carries (or the next entry will).
    pub entry_seq: u64,
}

impl Checkpoint {
    /// Encodes into one block.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..8].copy_from_slice(CP_MAGIC);
        put32(&mut b, 8, FORMAT_VERSION);
        put32(&mut b, 12, self.partition);
        put64(&mut b, 16, self.nonce);
        put64(&mut b, 24, self.generation);
        put64(&mut b, 32, self.destage_virt);
        put64(&mut b, 40, self.destage_seq);
        put64(&mut b, 48, self.entry_seq);
        seal(&mut b);
        b
    }

    /// Decodes a checkpoint slot.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        const W: &str = "checkpoint";
        check_block(b, W, CP_MAGIC)?;
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(FormatError::Version {
                what: W,
                found: version,
            });
        }
        Ok(Self {
            partition: u32_at(b, 12),
            nonce: u64_at(b, 16),
            generation: u64_at(b, 24),
            destage_virt: u64_at(b, 32),
            destage_seq: u64_at(b, 40),
            entry_seq: u64_at(b, 48),
        })
    }
}

/// What an entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Data for `nblocks` blocks follows in the batch's data area.
    Write,
    /// `nblocks` blocks read as zeroes (unmap, write zeroes); no data.
    Zero,
    /// The volume was deleted: everything before this entry of this volume is void.
    DropVolume,
    /// A follower's writes of the volume up to replication sequence number `rep_seq` are in the
    /// backend (the primary destaged them): they are never destaged from here. No data.
    Release,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            Self::Write => 1,
            Self::Zero => 2,
            Self::DropVolume => 3,
            Self::Release => 4,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Write),
            2 => Some(Self::Zero),
            3 => Some(Self::DropVolume),
            4 => Some(Self::Release),
            _ => None,
        }
    }
}

/// One journal entry's descriptor, stored in its batch's header block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The volume written.
    pub volume: VolumeId,
    /// What the entry does.
    pub kind: EntryKind,
    /// Valid sectors of the first block (bit i = sector i); [`FULL_MASK`] for whole blocks.
    pub head_mask: u8,
    /// Valid sectors of the last block.
    pub tail_mask: u8,
    /// Number of 4 KiB blocks covered.
    pub nblocks: u32,
    /// First volume block covered.
    pub first_block: CacheBlock,
    /// The replica-set epoch the write was accepted in.
    pub epoch: Epoch,
    /// The entry's sequence number (increasing within the partition).
    pub seq: u64,
    /// For writes: the first data block, counted from the start of the batch's data area.
    pub data_offset: u32,
    /// The volume write's replication sequence number (0: not replicated). Every entry made
    /// from one write carries it.
    pub rep_seq: SeqNo,
    /// CRC-32C over the descriptor's first 60 bytes followed by the entry's data.
    pub crc: u32,
}

impl Entry {
    /// The block after the last one the entry covers.
    pub fn end_block(&self) -> CacheBlock {
        self.first_block.plus(u64::from(self.nblocks))
    }

    /// Whether the entry covers `block`.
    pub fn covers(&self, block: CacheBlock) -> bool {
        self.first_block <= block && block < self.end_block()
    }

    /// Whether it is (part of) a replicated write or zero range, which a follower holds until
    /// the primary releases it.
    pub fn replicated(&self) -> bool {
        self.rep_seq > SeqNo(0) && matches!(self.kind, EntryKind::Write | EntryKind::Zero)
    }

    /// The number of data blocks this entry carries in the batch.
    pub fn data_blocks(&self) -> u32 {
        match self.kind {
            EntryKind::Write => self.nblocks,
            EntryKind::Zero | EntryKind::DropVolume | EntryKind::Release => 0,
        }
    }

    /// The valid-sector mask of block `i` of the entry.
    pub fn mask_of(&self, i: u32) -> u8 {
        let mut m = FULL_MASK;
        if i == 0 {
            m &= self.head_mask;
        }
        if i + 1 == self.nblocks {
            m &= self.tail_mask;
        }
        m
    }

    fn encode_into(&self, b: &mut [u8]) {
        b[..16].copy_from_slice(&self.volume.to_bytes());
        b[16] = self.kind.code();
        b[17] = self.head_mask;
        b[18] = self.tail_mask;
        b[19] = 0;
        put32(b, 20, self.nblocks);
        put64(b, 24, self.first_block.0);
        put64(b, 32, self.epoch.0);
        put64(b, 40, self.seq);
        put32(b, 48, self.data_offset);
        put64(b, 52, self.rep_seq.0);
        put32(b, 60, self.crc);
    }

    /// Computes the entry's CRC-32C over its descriptor fields and `data`. Every write's
    /// data is checked on each replica's journal and again at destage, so this is one of the
    /// hottest loops: it uses `crc-fast` (the same CRC as the `crc32c` crate, several times
    /// faster on 4 KiB with the CPU's carry-less multiply).
    pub fn compute_crc(&self, data: &[u8]) -> u32 {
        let mut b = [0u8; ENTRY_LEN];
        self.encode_into(&mut b);
        let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        d.update(&b[..60]);
        d.update(data);
        d.finalize() as u32
    }
}

/// A batch header: the first block of every group commit, describing the entries after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The partition.
    pub partition: u32,
    /// The device's nonce.
    pub nonce: u64,
    /// The batch's sequence number (increases by one per batch).
    pub seq: u64,
    /// The header's virtual block position.
    pub virt: u64,
    /// Number of data blocks following the header.
    pub data_blocks: u32,
    /// The entries, in the order they were accepted.
    pub entries: Vec<Entry>,
}

impl BatchHeader {
    /// Encodes into one block.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        self.encode_into(&mut b);
        b
    }

    /// Encodes into the first [`BLOCK`] bytes of `b`.
    pub fn encode_into(&self, b: &mut [u8]) {
        assert!(self.entries.len() <= MAX_ENTRIES, "too many entries");
        let b = &mut b[..BLOCK];
        b.fill(0);
        b[..8].copy_from_slice(BH_MAGIC);
        put16(b, 8, FORMAT_VERSION as u16);
        put16(b, 10, self.entries.len() as u16);
        put32(b, 12, self.partition);
        put64(b, 16, self.nonce);
        put64(b, 24, self.seq);
        put64(b, 32, self.virt);
        put32(b, 40, self.data_blocks);
        for (i, e) in self.entries.iter().enumerate() {
            let at = HEADER_FIXED + i * ENTRY_LEN;
            e.encode_into(&mut b[at..at + ENTRY_LEN]);
        }
        seal(b);
    }

    /// Decodes a header block and checks that its entries are well-formed and lie inside its
    /// data area. It does not check the entries' data CRCs (see [`Entry::compute_crc`]).
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        const W: &str = "batch header";
        check_block(b, W, BH_MAGIC)?;
        let version = u16_at(b, 8);
        if u32::from(version) != FORMAT_VERSION {
            return Err(FormatError::Version {
                what: W,
                found: version.into(),
            });
        }
        let n = u16_at(b, 10) as usize;
        if n > MAX_ENTRIES {
            return Err(FormatError::Field {
                what: W,
                field: "entries",
                value: n as u64,
                reason: "more than fit in a header",
            });
        }
        let data_blocks = u32_at(b, 40);
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let e = &b[HEADER_FIXED + i * ENTRY_LEN..HEADER_FIXED + (i + 1) * ENTRY_LEN];
            let kind = EntryKind::from_code(e[16]).ok_or(FormatError::Field {
                what: W,
                field: "entry kind",
                value: e[16].into(),
                reason: "must be 1, 2, 3 or 4",
            })?;
            let entry = Entry {
                volume: VolumeId::from_bytes(e[..16].try_into().expect("16 bytes")),
                kind,
                head_mask: e[17],
                tail_mask: e[18],
                nblocks: u32_at(e, 20),
                first_block: CacheBlock(u64_at(e, 24)),
                epoch: Epoch(u64_at(e, 32)),
                seq: u64_at(e, 40),
                data_offset: u32_at(e, 48),
                rep_seq: SeqNo(u64_at(e, 52)),
                crc: u32_at(e, 60),
            };
            let data_end = u64::from(entry.data_offset) + u64::from(entry.data_blocks());
            if data_end > u64::from(data_blocks)
                || (!matches!(kind, EntryKind::DropVolume | EntryKind::Release)
                    && entry.nblocks == 0)
                || entry
                    .first_block
                    .0
                    .checked_add(entry.nblocks.into())
                    .is_none()
                || entry.head_mask == 0
                || entry.tail_mask == 0
            {
                return Err(FormatError::Field {
                    what: W,
                    field: "entry extent",
                    value: i as u64,
                    reason: "empty, overflowing, or outside the batch's data",
                });
            }
            entries.push(entry);
        }
        Ok(Self {
            partition: u32_at(b, 12),
            nonce: u64_at(b, 16),
            seq: u64_at(b, 24),
            virt: u64_at(b, 32),
            data_blocks,
            entries,
        })
    }
}

/// Feeds `data` to every metadata decoder, as a whole block (zero-padded or cut) and as it is;
/// panics if a decoded block does not re-encode to itself. The fuzz target and the corpus
/// replay test both use it.
#[doc(hidden)]
pub fn check_decoders(data: &[u8]) {
    let mut block = [0u8; BLOCK];
    let n = data.len().min(BLOCK);
    block[..n].copy_from_slice(&data[..n]);
    if let Ok(sb) = Superblock::decode(&block) {
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }
    if let Ok(cp) = Checkpoint::decode(&block) {
        assert_eq!(Checkpoint::decode(&cp.encode()), Ok(cp));
    }
    if let Ok(h) = BatchHeader::decode(&block) {
        assert_eq!(BatchHeader::decode(&h.encode()), Ok(h));
    }
    let _ = BatchHeader::decode(data);
    let _ = Superblock::decode(data);
    let _ = Checkpoint::decode(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BatchHeader {
        BatchHeader {
            partition: 2,
            nonce: 99,
            seq: 7,
            virt: 12345,
            data_blocks: 3,
            entries: vec![
                Entry {
                    volume: VolumeId::random(),
                    kind: EntryKind::Write,
                    head_mask: 0xf0,
                    tail_mask: 0x0f,
                    nblocks: 3,
                    first_block: CacheBlock(10),
                    epoch: Epoch(4),
                    seq: 100,
                    data_offset: 0,
                    rep_seq: SeqNo(77),
                    crc: 5,
                },
                Entry {
                    volume: VolumeId::random(),
                    kind: EntryKind::Zero,
                    head_mask: FULL_MASK,
                    tail_mask: FULL_MASK,
                    nblocks: 1 << 30,
                    first_block: CacheBlock(0),
                    epoch: Epoch(4),
                    seq: 101,
                    data_offset: 3,
                    rep_seq: SeqNo(0),
                    crc: 6,
                },
            ],
        }
    }

    #[test]
    fn batch_header_round_trips() {
        let h = header();
        assert_eq!(BatchHeader::decode(&h.encode()).unwrap(), h);
        assert_eq!(MAX_ENTRIES, 62);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let b = header().encode();
        for bit in (0..BLOCK * 8).step_by(97) {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(BatchHeader::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn entries_outside_the_data_area_are_refused() {
        let mut h = header();
        h.entries[0].data_offset = 1; // 1 + 3 > 3 data blocks
        assert!(matches!(
            BatchHeader::decode(&h.encode()),
            Err(FormatError::Field {
                field: "entry extent",
                ..
            })
        ));
    }

    #[test]
    fn superblock_round_trips_and_checks_versions() {
        let sb = Superblock {
            device_id: uuid::Uuid::new_v4(),
            nonce: 1,
            device_blocks: 100_000,
            max_batch_data_blocks: 256,
            created: 5,
            partitions: vec![
                PartitionExtent {
                    start: 256,
                    blocks: 40_000,
                },
                PartitionExtent {
                    start: 40_256,
                    blocks: 40_000,
                },
            ],
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b).unwrap(), sb);
        put32(&mut b, 8, 2);
        seal(&mut b);
        assert_eq!(
            Superblock::decode(&b),
            Err(FormatError::Version {
                what: "superblock",
                found: 2
            })
        );
        assert!(matches!(
            Superblock::decode(&[0u8; BLOCK]),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(Superblock::decode(&[0u8; 10]).is_err());
    }

    #[test]
    fn entry_crc_covers_descriptor_and_data() {
        let e = header().entries[0];
        let data = vec![1u8; 3 * BLOCK];
        let crc = e.compute_crc(&data);
        let mut moved = e;
        moved.first_block = moved.first_block.plus(1);
        assert_ne!(crc, moved.compute_crc(&data));
        let mut other = data.clone();
        other[5000] ^= 1;
        assert_ne!(crc, e.compute_crc(&other));
        // The journal's format: CRC-32C (Castagnoli) of the first 60 descriptor bytes, then
        // the data, as the `crc32c` crate computes it (devices written before keep working).
        let mut b = [0u8; ENTRY_LEN];
        e.encode_into(&mut b);
        for len in [0, 1, 511, 4096, 3 * BLOCK] {
            assert_eq!(
                e.compute_crc(&data[..len]),
                crc32c::crc32c_append(crc32c::crc32c(&b[..60]), &data[..len]),
                "{len} bytes"
            );
        }
        assert_eq!(e.mask_of(0), 0xf0);
        assert_eq!(e.mask_of(1), FULL_MASK);
        assert_eq!(e.mask_of(2), 0x0f);
    }

    #[test]
    fn metadata_blocks_are_sealed_with_crc32c() {
        // The on-disk format: CRC-32C of the bytes before the CRC field, as the `crc32c`
        // crate computes it, whichever crate the engine uses.
        let h = header();
        let b = h.encode();
        assert_eq!(u32_at(&b, CRC_AT), crc32c::crc32c(&b[..CRC_AT]));
        let mut bad = b;
        bad[100] ^= 1;
        assert!(matches!(
            BatchHeader::decode(&bad),
            Err(FormatError::BadChecksum { .. })
        ));
        assert_eq!(BatchHeader::decode(&b).unwrap(), h);
    }
}
