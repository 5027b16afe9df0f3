//! What a partition knows about each volume's blocks: where cached data is, which ranges read as
//! zeroes, which blocks are only partly cached, and which are known corrupt.
//!
//! Lookup order for a block (first match wins), see [`VolumeIndex::lookup`]:
//! 1. *poisoned*: its newest acknowledged version was found corrupt -> medium error;
//! 2. *cached*: a location in the log (with the mask of valid sectors if partial);
//! 3. *zero*: inside an unmapped / zeroed range not yet destaged -> zeroes;
//! 4. otherwise the backend holds the block.
//!
//! Invariants: a cached block that is partial has an entry in `partial`; a zero range never
//! overlaps a cached block that is newer than it (applying a zero range removes the cached blocks
//! it covers; a later write re-adds them and takes precedence by the lookup order).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alcubierre_types::CacheBlock;

use crate::blockmap::BlockMap;
use crate::format::FULL_MASK;

/// Where a block's current contents are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// In the log at partition-relative block `phys`; `mask` tells which sectors are valid (the
    /// others come from the backend).
    Cached {
        /// Partition-relative block of the data.
        phys: u32,
        /// Valid sectors.
        mask: u8,
    },
    /// Reads as zeroes.
    Zero,
    /// Known corrupt: reads fail.
    Poisoned,
    /// In the backend.
    Backend,
}

/// Non-overlapping block ranges that read as zeroes, each tagged with the sequence number of the
/// entry that zeroed it.
#[derive(Default)]
pub struct ZeroSet {
    /// start -> (end, entry seq)
    ranges: BTreeMap<u64, (u64, u64)>,
}

impl ZeroSet {
    /// True when `block` is in a range.
    pub fn contains(&self, block: u64) -> bool {
        self.ranges
            .range(..=block)
            .next_back()
            .is_some_and(|(_, &(end, _))| block < end)
    }

    /// The start of the range that may overlap `start` from below (or `start`).
    fn first_start(&self, start: u64) -> u64 {
        self.ranges
            .range(..start)
            .next_back()
            .map_or(start, |(s, _)| *s)
    }

    /// Cuts `[start, end)` out of every range.
    fn cut(&mut self, start: u64, end: u64) {
        let first = self.first_start(start);
        let overlapping: Vec<(u64, u64, u64)> = self
            .ranges
            .range(first..end)
            .filter(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, q))| (s, e, q))
            .collect();
        for (s, e, q) in overlapping {
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, (start, q));
            }
            if e > end {
                self.ranges.insert(end, (e, q));
            }
        }
    }

    /// Marks `[start, end)` as zero by entry `seq`.
    pub fn insert(&mut self, start: u64, end: u64, seq: u64) {
        self.cut(start, end);
        self.ranges.insert(start, (end, seq));
    }

    /// Forgets the parts of `[start, end)` still tagged `seq` (they are now zero in the backend).
    pub fn remove_destaged(&mut self, start: u64, end: u64, seq: u64) {
        let first = self.first_start(start);
        let hits: Vec<(u64, u64)> = self
            .ranges
            .range(first..end)
            .filter(|(_, &(e, q))| e > start && q == seq)
            .map(|(&s, &(e, _))| (s.max(start), e.min(end)))
            .collect();
        for (s, e) in hits {
            self.cut(s, e);
        }
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// One volume's index within a partition.
#[derive(Default)]
pub struct VolumeIndex {
    /// Cached blocks: volume block -> partition-relative log block.
    pub blocks: BlockMap,
    /// Cached blocks holding only some sectors: block -> mask of valid sectors.
    pub partial: HashMap<u64, u8>,
    /// Ranges reading as zeroes, not yet destaged.
    pub zeroes: ZeroSet,
    /// Blocks whose newest version is corrupt.
    pub poisoned: BTreeSet<u64>,
}

impl VolumeIndex {
    /// Where `block` is.
    pub fn lookup(&self, block: CacheBlock) -> Loc {
        let block = block.0;
        if !self.poisoned.is_empty() && self.poisoned.contains(&block) {
            return Loc::Poisoned;
        }
        if let Some(phys) = self.blocks.get(block) {
            let mask = if self.partial.is_empty() {
                FULL_MASK
            } else {
                self.partial.get(&block).copied().unwrap_or(FULL_MASK)
            };
            return Loc::Cached { phys, mask };
        }
        if !self.zeroes.is_empty() && self.zeroes.contains(block) {
            return Loc::Zero;
        }
        Loc::Backend
    }

    /// Records that `block` now lives at `phys` with valid sectors `mask`.
    pub fn put(&mut self, block: CacheBlock, phys: u32, mask: u8) {
        let block = block.0;
        self.blocks.insert(block, phys);
        if mask == FULL_MASK {
            if !self.partial.is_empty() {
                self.partial.remove(&block);
            }
        } else {
            self.partial.insert(block, mask);
        }
        if !self.poisoned.is_empty() {
            self.poisoned.remove(&block);
        }
    }

    /// Records that `[start, end)` reads as zeroes from entry `seq` on.
    pub fn zero(&mut self, start: CacheBlock, end: CacheBlock, seq: u64) {
        let (start, end) = (start.0, end.0);
        self.blocks.remove_range(start, end);
        if !self.partial.is_empty() {
            self.partial.retain(|b, _| *b < start || *b >= end);
        }
        if !self.poisoned.is_empty() {
            let doomed: Vec<u64> = self.poisoned.range(start..end).copied().collect();
            for b in doomed {
                self.poisoned.remove(&b);
            }
        }
        self.zeroes.insert(start, end, seq);
    }

    /// Marks `block` corrupt: its cached copy is dropped and reads fail until it is rewritten.
    pub fn poison(&mut self, block: CacheBlock) {
        let block = block.0;
        self.blocks.remove(block);
        self.partial.remove(&block);
        self.poisoned.insert(block);
    }

    /// Forgets `block` if it still lives at `phys` (its log space is being reused).
    pub fn evict(&mut self, block: CacheBlock, phys: u32) {
        let block = block.0;
        if self.blocks.remove_if(block, phys) && !self.partial.is_empty() {
            self.partial.remove(&block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_set_tracks_newest_seq() {
        let mut z = ZeroSet::default();
        z.insert(0, 100, 1);
        z.insert(50, 60, 2);
        assert!(z.contains(0) && z.contains(55) && z.contains(99) && !z.contains(100));
        // destaging entry 1 leaves the range entry 2 still owns
        z.remove_destaged(0, 100, 1);
        assert!(!z.contains(0) && z.contains(55) && !z.contains(60));
        z.remove_destaged(50, 60, 2);
        assert!(z.is_empty());
    }

    #[test]
    fn lookup_order() {
        let mut v = VolumeIndex::default();
        v.zero(CacheBlock(0), CacheBlock(10), 1);
        assert_eq!(v.lookup(CacheBlock(3)), Loc::Zero);
        v.put(CacheBlock(3), 77, 0x0f);
        assert_eq!(
            v.lookup(CacheBlock(3)),
            Loc::Cached {
                phys: 77,
                mask: 0x0f
            }
        );
        v.put(CacheBlock(3), 78, FULL_MASK);
        assert_eq!(
            v.lookup(CacheBlock(3)),
            Loc::Cached {
                phys: 78,
                mask: FULL_MASK
            }
        );
        v.poison(CacheBlock(4));
        assert_eq!(v.lookup(CacheBlock(4)), Loc::Poisoned);
        v.zero(CacheBlock(0), CacheBlock(10), 2);
        assert_eq!(v.lookup(CacheBlock(3)), Loc::Zero);
        assert_eq!(v.lookup(CacheBlock(4)), Loc::Zero);
        assert_eq!(v.lookup(CacheBlock(11)), Loc::Backend);
        v.put(CacheBlock(5), 1, FULL_MASK);
        v.evict(CacheBlock(5), 2);
        assert_eq!(
            v.lookup(CacheBlock(5)),
            Loc::Cached {
                phys: 1,
                mask: FULL_MASK
            }
        );
        v.evict(CacheBlock(5), 1);
        assert_eq!(v.lookup(CacheBlock(5)), Loc::Zero);
    }
}
