//! Recovery on open: rebuild a partition's index by replaying its journal from the checkpoint.
//!
//! The steps (also in `docs/design/cache-format.md`):
//! 1. Read both checkpoint slots; take the valid one with the highest generation. It names the
//!    first batch not yet destaged (position and sequence number).
//! 2. From there, find each batch in turn: the header must decode, carry this device's nonce
//!    and partition, and the expected sequence number and position (at the expected position,
//!    or at the start of the next lap if the writer skipped the end of the log).
//! 3. Read the batch's data and check every entry's CRC-32C.
//!    * All good: apply the batch to the index.
//!    * Some bad, and the next batch exists: the batch was durable before the next one was
//!      written (the writer syncs each batch before starting the next), so this is corruption
//!      of acknowledged data. Apply the good entries, *poison* the blocks of the bad ones (reads
//!      fail with a medium error; they are never served), and report it.
//!    * Some bad, and no next batch: the batch was torn by the power loss; none of it was
//!      acknowledged. Discard it; the log ends here.
//! 4. When no batch is found where the next one should be, look ahead (one batch's length, and
//!    the start of the next lap) for its successor. If a successor exists, a batch in the middle
//!    of the log is unreadable and its writes are lost: refuse to open (`Corrupt`). Otherwise
//!    the log ends here.
//! 5. Clear the header block at the end of the log (unless the log is exactly full), so that a torn batch left there can never be
//!    mistaken for the batch that will next be written elsewhere with the same sequence number.

use std::sync::Arc;

use alcubierre_io::{AlignedBuf, Medium};

use crate::error::CacheError;
use crate::format::{checkpoint_blocks, Checkpoint, Entry, PartitionExtent, BLOCK};
use crate::partition::{Cursor, PartIndex, Partition, WriterState};

/// What recovery found in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// The partition.
    pub partition: u32,
    /// Batches replayed.
    pub batches: u64,
    /// Entries replayed.
    pub entries: u64,
    /// Batches found torn at the end of the log and discarded (never acknowledged).
    pub torn_batches: u64,
    /// Entries whose data failed its checksum in the middle of the log.
    pub corrupt_entries: u64,
    /// Blocks poisoned because of them.
    pub poisoned_blocks: u64,
    /// Dirty log blocks after replay.
    pub dirty_blocks: u64,
}

impl Partition {
    /// Opens partition `id` of a device: reads its checkpoint and replays its journal.
    pub(crate) fn recover(
        id: u32,
        medium: Arc<dyn Medium>,
        extent: PartitionExtent,
        nonce: u64,
        max_batch_data: u32,
    ) -> Result<(Self, PartitionReport), CacheError> {
        let device = medium.describe();
        let cp = read_checkpoint(&*medium, id, nonce)?;
        let buf = AlignedBuf::zeroed((1 + max_batch_data as usize) * BLOCK);
        let writer = WriterState {
            buf,
            head: cp.destage_virt,
            head_seq: cp.destage_seq,
            entry_seq: cp.entry_seq,
            tail: cp.destage_virt,
            tail_seq: cp.destage_seq,
            ring_batch: false,
            spare: None,
        };
        let cursor = Cursor {
            virt: cp.destage_virt,
            seq: cp.destage_seq,
            entry_seq: cp.entry_seq,
            generation: cp.generation,
        };
        let p = Partition::new(
            id,
            medium,
            extent,
            nonce,
            max_batch_data,
            writer,
            cursor,
            PartIndex::default(),
        );
        let mut report = PartitionReport {
            partition: id,
            ..Default::default()
        };
        let mut virt = cp.destage_virt;
        let mut seq = cp.destage_seq;
        let mut entry_seq = cp.entry_seq;
        loop {
            let Some(h) = p.find_batch(virt, seq)? else {
                if p.successor_exists(virt, seq)? {
                    return Err(CacheError::Corrupt {
                        device,
                        partition: id,
                        what: format!(
                            "batch {seq} near block {virt} is unreadable but later batches exist; \
                             its acknowledged writes are lost"
                        ),
                    });
                }
                break;
            };
            let mut data = AlignedBuf::zeroed(h.data_blocks as usize * BLOCK);
            if h.data_blocks > 0 {
                p.medium
                    .read_at(&mut data, p.dev_offset(h.virt + 1))
                    .map_err(|e| CacheError::Io {
                        device: device.clone(),
                        op: "reading the journal",
                        source: e,
                    })?;
            }
            let bad: Vec<bool> = h.entries.iter().map(|e| !entry_ok(e, &data)).collect();
            let next = h.virt + 1 + u64::from(h.data_blocks);
            if bad.iter().any(|&b| b) {
                if p.find_batch(next, seq + 1)?.is_none() {
                    report.torn_batches += 1;
                    tracing::info!(
                        partition = id,
                        seq,
                        "discarding torn batch at end of journal"
                    );
                    break;
                }
                let n_bad = bad.iter().filter(|&&b| b).count() as u64;
                report.corrupt_entries += n_bad;
                report.poisoned_blocks += h
                    .entries
                    .iter()
                    .zip(&bad)
                    .filter(|(_, &b)| b)
                    .map(|(e, _)| u64::from(e.nblocks))
                    .sum::<u64>();
                tracing::error!(
                    partition = id,
                    seq,
                    corrupt_entries = n_bad,
                    "journal entries failed their checksum; their blocks are poisoned"
                );
                p.apply(h.virt, &h, Some(&bad));
            } else {
                p.apply(h.virt, &h, None);
            }
            report.batches += 1;
            report.entries += h.entries.len() as u64;
            if let Some(last) = h.entries.last() {
                entry_seq = last.seq + 1;
            }
            virt = next;
            seq += 1;
        }
        // Step 5: nothing valid may remain where the next batch could be written. (When the log
        // is exactly full that block is the oldest live batch's header; no torn batch can exist
        // then, as it would have needed free space.)
        if virt - cp.destage_virt < extent.blocks {
            let zero = AlignedBuf::zeroed(BLOCK);
            p.medium
                .write_durable(&zero, p.dev_offset(virt))
                .map_err(|e| CacheError::Io {
                    device: device.clone(),
                    op: "clearing the end of the journal",
                    source: e,
                })?;
        }
        {
            let mut w = p.writer.lock();
            w.head = virt;
            w.head_seq = seq;
            w.entry_seq = entry_seq;
        }
        p.head_virt
            .store(virt, std::sync::atomic::Ordering::Release);
        report.dirty_blocks = p.dirty_blocks();
        Ok((p, report))
    }

    /// True when a batch `seq + 1` exists within reach of where batch `seq` should have been.
    fn successor_exists(&self, virt: u64, seq: u64) -> Result<bool, CacheError> {
        let reach = u64::from(self.max_batch_data) + 1;
        for k in 1..=reach {
            if self.header_at(virt + k, seq + 1)?.is_some() {
                return Ok(true);
            }
        }
        if self.phys(virt) != 0 {
            let lap = self.next_lap(virt);
            for k in 0..=reach {
                if self.header_at(lap + k, seq + 1)?.is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn entry_ok(e: &Entry, data: &[u8]) -> bool {
    let at = e.data_offset as usize * BLOCK;
    let len = e.data_blocks() as usize * BLOCK;
    e.compute_crc(&data[at..at + len]) == e.crc
}

/// Step 1: the newest valid checkpoint of partition `id`.
fn read_checkpoint(medium: &dyn Medium, id: u32, nonce: u64) -> Result<Checkpoint, CacheError> {
    let mut best: Option<Checkpoint> = None;
    let mut why = Vec::new();
    for slot in checkpoint_blocks(id) {
        let mut b = AlignedBuf::zeroed(BLOCK);
        medium
            .read_at(&mut b, slot * BLOCK as u64)
            .map_err(|e| CacheError::Io {
                device: medium.describe(),
                op: "reading a checkpoint",
                source: e,
            })?;
        match Checkpoint::decode(&b) {
            Ok(cp) if cp.nonce == nonce && cp.partition == id => {
                if best.is_none_or(|b| cp.generation > b.generation) {
                    best = Some(cp);
                }
            }
            Ok(_) => why.push(format!("slot {slot}: from another format or partition")),
            Err(e) => why.push(format!("slot {slot}: {e}")),
        }
    }
    best.ok_or_else(|| CacheError::Corrupt {
        device: medium.describe(),
        partition: id,
        what: format!("no valid checkpoint ({})", why.join("; ")),
    })
}
