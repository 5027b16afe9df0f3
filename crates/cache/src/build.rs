//! Turning requests into journal entries: validation, cost, and merging partial edge blocks
//! with their current contents. Runs in the writer (the caller of [`Partition::commit`]).

use alcubierre_io::AlignedBuf;
use alcubierre_types::{CacheBlock, Sector, VolumeId};

use crate::error::CacheError;
use crate::format::{Entry, EntryKind, BLOCK, FULL_MASK, MAX_ENTRIES, SECTORS_PER_BLOCK as SPB};
use crate::index::Loc;
use crate::partition::{Op, Partition, WriterState, SECTOR};
use alcubierre_types::LogPos;

/// The mask of sectors `[from, to)` of a block.
pub(crate) fn sector_mask(from: u64, to: u64) -> u8 {
    debug_assert!(from < to && to <= SPB);
    ((0xffu16 >> (SPB - (to - from))) << from) as u8
}

/// One op being turned into entries.
pub(crate) struct Built {
    pub(crate) entries: Vec<Entry>,
    pub(crate) data_blocks: u32,
}

impl Partition {
    /// Refuses ops that no single batch can hold or that are malformed (the engine's request
    /// validation normally catches these first).
    pub(crate) fn check_op(&self, op: &Op) -> Result<(), CacheError> {
        let bad = |len: u64, expected: u64| {
            Err(CacheError::Request(
                alcubierre_block::BlockError::Misaligned {
                    len,
                    expected,
                    block_size: SECTOR,
                },
            ))
        };
        match op {
            Op::Write { data, .. }
                if data.is_empty() || !(data.len() as u64).is_multiple_of(SECTOR) =>
            {
                bad(
                    data.len() as u64,
                    (data.len() as u64).div_ceil(SECTOR).max(1) * SECTOR,
                )
            }
            Op::Zero { sectors: 0, .. } => bad(0, SECTOR),
            _ => {
                let (entries, data) = self.cost(op);
                if entries > MAX_ENTRIES || data > self.max_batch_data {
                    return Err(CacheError::Request(
                        alcubierre_block::BlockError::TooLarge {
                            len: u64::from(data) * BLOCK as u64,
                            max: u64::from(self.max_batch_data) * BLOCK as u64,
                        },
                    ));
                }
                Ok(())
            }
        }
    }

    /// Entries and data blocks `op` needs at most.
    pub(crate) fn cost(&self, op: &Op) -> (usize, u32) {
        match op {
            Op::Write { sector, data, .. } => {
                let n = data.len() as u64 / SECTOR;
                let blocks = (sector.0 + n).div_ceil(SPB) - sector.block().0;
                (1, blocks as u32)
            }
            Op::Zero { sectors, .. } => {
                let middle = sectors / SPB / u64::from(u32::MAX) + 1;
                (2 + middle as usize, 2)
            }
            Op::Drop { .. } | Op::Release { .. } => (1, 0),
        }
    }

    /// The current contents and valid mask of `block`, looking first at the batch being built
    /// (whose data is in `w.buf` after the header block), then at the index.
    fn base_block(
        &self,
        w: &WriterState,
        volume: VolumeId,
        block: CacheBlock,
        batch: &[Entry],
        out: &mut [u8],
    ) -> Result<u8, CacheError> {
        for e in batch.iter().rev() {
            if e.volume != volume {
                continue;
            }
            match e.kind {
                EntryKind::DropVolume => return Ok(0),
                EntryKind::Release => {}
                _ if !e.covers(block) => {}
                EntryKind::Zero => {
                    out.fill(0);
                    return Ok(FULL_MASK);
                }
                EntryKind::Write => {
                    let i = (block.0 - e.first_block.0) as u32;
                    let at = (1 + e.data_offset as usize + i as usize) * BLOCK;
                    out.copy_from_slice(&w.buf[at..at + BLOCK]);
                    return Ok(e.mask_of(i));
                }
            }
        }
        let loc = self
            .index
            .read()
            .volumes
            .get(&volume)
            .map_or(Loc::Backend, |v| v.lookup(block));
        match loc {
            Loc::Cached { phys, mask } => {
                let mut b = AlignedBuf::zeroed(BLOCK);
                self.medium
                    .read_at(&mut b, (self.extent.start + u64::from(phys)) * BLOCK as u64)
                    .map_err(|e| self.fail(format!("reading cached block: {e}")))?;
                out.copy_from_slice(&b);
                Ok(mask)
            }
            Loc::Zero => {
                out.fill(0);
                Ok(FULL_MASK)
            }
            Loc::Backend => {
                out.fill(0);
                Ok(0)
            }
            Loc::Poisoned => Err(CacheError::Medium {
                volume,
                offset: block.offset(),
            }),
        }
    }

    /// Turns `op` into entries whose data is placed in `w.buf` after the header and after
    /// `data_at` blocks of earlier entries of the batch.
    pub(crate) fn build(
        &self,
        w: &mut WriterState,
        op: &Op,
        tag: LogPos,
        batch: &[Entry],
        data_at: u32,
    ) -> Result<Built, CacheError> {
        match op {
            Op::Write {
                volume,
                sector,
                data,
            } => {
                let e = self.build_write(w, *volume, *sector, data, None, tag, batch, data_at)?;
                Ok(Built {
                    data_blocks: e.nblocks,
                    entries: vec![e],
                })
            }
            Op::Zero {
                volume,
                sector,
                sectors,
            } => self.build_zero(w, *volume, *sector, *sectors, tag, batch, data_at),
            Op::Release { volume, seq } => {
                let e = self.seal_entry(
                    w,
                    Entry {
                        volume: *volume,
                        kind: EntryKind::Release,
                        head_mask: FULL_MASK,
                        tail_mask: FULL_MASK,
                        nblocks: 0,
                        first_block: CacheBlock(0),
                        epoch: tag.epoch,
                        seq: 0,
                        data_offset: data_at,
                        rep_seq: *seq,
                        crc: 0,
                    },
                );
                Ok(Built {
                    entries: vec![e],
                    data_blocks: 0,
                })
            }
            Op::Drop { volume } => {
                let e = self.seal_entry(
                    w,
                    Entry {
                        volume: *volume,
                        kind: EntryKind::DropVolume,
                        head_mask: FULL_MASK,
                        tail_mask: FULL_MASK,
                        nblocks: 0,
                        first_block: CacheBlock(0),
                        epoch: tag.epoch,
                        rep_seq: tag.seq,
                        seq: 0,
                        data_offset: data_at,
                        crc: 0,
                    },
                );
                Ok(Built {
                    entries: vec![e],
                    data_blocks: 0,
                })
            }
        }
    }

    fn seal_entry(&self, w: &mut WriterState, mut e: Entry) -> Entry {
        e.seq = w.entry_seq;
        w.entry_seq += 1;
        let at = (1 + e.data_offset as usize) * BLOCK;
        let len = e.data_blocks() as usize * BLOCK;
        e.crc = e.compute_crc(&w.buf[at..at + len]);
        e
    }

    /// A write of `sectors` at `sector`: `data` if given, else zeroes.
    #[allow(clippy::too_many_arguments)]
    fn build_write(
        &self,
        w: &mut WriterState,
        volume: VolumeId,
        sector: Sector,
        data: &[u8],
        zero_sectors: Option<u64>,
        tag: LogPos,
        batch: &[Entry],
        data_at: u32,
    ) -> Result<Entry, CacheError> {
        let sector = sector.0;
        let n = zero_sectors.unwrap_or(data.len() as u64 / SECTOR);
        let end = sector + n;
        let first = sector / SPB;
        let nblocks = (end.div_ceil(SPB) - first) as u32;
        let head_from = sector % SPB;
        let head_to = if nblocks == 1 { end - first * SPB } else { SPB };
        let tail_to = end - (first + u64::from(nblocks) - 1) * SPB;
        let mut head_mask = sector_mask(head_from, head_to);
        let mut tail_mask = if nblocks == 1 {
            head_mask
        } else {
            sector_mask(0, tail_to)
        };
        let base = (1 + data_at as usize) * BLOCK;
        // Merge partial edge blocks with their current contents.
        let mut scratch = [0u8; BLOCK];
        let edges: &[(u32, bool)] = if nblocks == 1 {
            &[(0, true)]
        } else {
            &[(0, true), (nblocks - 1, false)]
        };
        for &(i, is_head) in edges {
            let mask = if is_head { head_mask } else { tail_mask };
            if mask == FULL_MASK {
                continue;
            }
            let block = CacheBlock(first + u64::from(i));
            let old = self
                .base_block(w, volume, block, batch, &mut scratch)
                .map_err(|e| match e {
                    // The LBA named is the command's own: its first sector in the block.
                    CacheError::Medium { volume, .. } => CacheError::Medium {
                        volume,
                        offset: block.first_sector().max(Sector(sector)).offset(),
                    },
                    e => e,
                })?;
            let at = base + i as usize * BLOCK;
            w.buf[at..at + BLOCK].copy_from_slice(&scratch);
            let merged = mask | old;
            if is_head {
                head_mask = merged;
            }
            if !is_head || nblocks == 1 {
                tail_mask = merged;
            }
        }
        let dst = base + head_from as usize * SECTOR as usize;
        let len = (n * SECTOR) as usize;
        match zero_sectors {
            None => w.buf[dst..dst + len].copy_from_slice(data),
            Some(_) => w.buf[dst..dst + len].fill(0),
        }
        Ok(self.seal_entry(
            w,
            Entry {
                volume,
                kind: EntryKind::Write,
                head_mask,
                tail_mask,
                nblocks,
                first_block: CacheBlock(first),
                epoch: tag.epoch,
                rep_seq: tag.seq,
                seq: 0,
                data_offset: data_at,
                crc: 0,
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn build_zero(
        &self,
        w: &mut WriterState,
        volume: VolumeId,
        sector: Sector,
        sectors: u64,
        tag: LogPos,
        batch: &[Entry],
        data_at: u32,
    ) -> Result<Built, CacheError> {
        let (start, sector) = (sector, sector.0);
        let end = sector + sectors;
        let full_from = sector.div_ceil(SPB);
        let full_to = end / SPB;
        let mut entries = Vec::new();
        let mut data_blocks = 0;
        if full_from >= full_to {
            // No whole block: zero the sectors as a (merged) write of one or two blocks.
            let e = self.build_write(w, volume, start, &[], Some(sectors), tag, batch, data_at)?;
            data_blocks += e.nblocks;
            entries.push(e);
            return Ok(Built {
                entries,
                data_blocks,
            });
        }
        if !sector.is_multiple_of(SPB) {
            let n = full_from * SPB - sector;
            let e = self.build_write(w, volume, start, &[], Some(n), tag, batch, data_at)?;
            data_blocks += e.nblocks;
            entries.push(e);
        }
        let mut b = full_from;
        while b < full_to {
            let n = (full_to - b).min(u64::from(u32::MAX));
            let e = self.seal_entry(
                w,
                Entry {
                    volume,
                    kind: EntryKind::Zero,
                    head_mask: FULL_MASK,
                    tail_mask: FULL_MASK,
                    nblocks: n as u32,
                    first_block: CacheBlock(b),
                    epoch: tag.epoch,
                    rep_seq: tag.seq,
                    seq: 0,
                    data_offset: data_at + data_blocks,
                    crc: 0,
                },
            );
            entries.push(e);
            b += n;
        }
        if !end.is_multiple_of(SPB) {
            let all: Vec<Entry> = batch.iter().chain(entries.iter()).copied().collect();
            let e = self.build_write(
                w,
                volume,
                CacheBlock(full_to).first_sector(),
                &[],
                Some(end - full_to * SPB),
                tag,
                &all,
                data_at + data_blocks,
            )?;
            data_blocks += e.nblocks;
            entries.push(e);
        }
        Ok(Built {
            entries,
            data_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(sector_mask(0, 8), 0xff);
        assert_eq!(sector_mask(0, 1), 0x01);
        assert_eq!(sector_mask(7, 8), 0x80);
        assert_eq!(sector_mask(2, 5), 0b0001_1100);
    }
}
