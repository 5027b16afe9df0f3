//! Journal replay: a volume's replicated writes read back from the journal, in order, so a
//! primary can resync or rebuild a follower from writes no longer in its memory (after a
//! restart or a failover, or a backlog larger than its in-memory window).
//!
//! The writes a follower needs come after the volume's destage point, which the destager
//! does not pass while they are not in the backend, so they lie between the partition's
//! destage cursor and its head. The reader holds the partition's reclaim lock while it reads
//! each chunk, so eviction cannot reuse the space under it; a batch that eviction took between
//! chunks (the destager went on meanwhile) ends the replay as incomplete, and the caller falls
//! back to what it did before (destage, then rebuild from the new destage point).

use bytes::{Bytes, BytesMut};

use crate::engine::Engine;
use crate::error::CacheError;
use crate::format::{EntryKind, BLOCK, FULL_MASK};
use alcubierre_types::{ByteOffset, ByteSize, LogPos, SeqNo, VolumeId};

/// A replicated write read back from the journal, as the primary received it: byte offset in
/// the volume and data, or a range that reads as zeroes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// `data` at byte `offset`.
    Write {
        /// Byte offset in the volume.
        offset: ByteOffset,
        /// The data (whole 4 KiB blocks).
        data: Bytes,
    },
    /// `len` bytes at `offset` read as zeroes (unmap, write zeroes).
    Zero {
        /// Byte offset in the volume.
        offset: ByteOffset,
        /// Length in bytes.
        len: ByteSize,
    },
}

/// How far a replay got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayEnd {
    /// Every write after `after` up to `upto` was passed on.
    Complete,
    /// Write `seq` is not in the journal (destaged and evicted meanwhile, or never here), or
    /// is held in a form a replay cannot rebuild (parts of 4 KiB blocks merged with older
    /// sectors); the writes before it were passed on.
    Missing {
        /// The first write not passed on.
        seq: SeqNo,
    },
}

/// Bytes of batch data read per chunk.
const CHUNK: u64 = 8 << 20;

/// One write's entries, gathered in journal order.
#[derive(Default)]
struct Parts {
    tag: LogPos,
    kind: Option<EntryKind>,
    first: u64,
    blocks: u64,
    data: BytesMut,
    /// An entry that a replay cannot rebuild the write from.
    bad: bool,
}

impl Parts {
    fn add(&mut self, kind: EntryKind, first: u64, nblocks: u64, full: bool, data: &[u8]) {
        let contiguous = self.kind.is_none() || self.first + self.blocks == first;
        if !full || !contiguous || self.kind.is_some_and(|k| k != kind) {
            self.bad = true;
        }
        if self.kind.is_none() {
            self.first = first;
        }
        self.kind = Some(kind);
        self.blocks += nblocks;
        self.data.extend_from_slice(data);
    }

    fn finish(self) -> Option<(LogPos, Replayed)> {
        if self.bad {
            return None;
        }
        let offset = ByteOffset(self.first * BLOCK as u64);
        let r = match self.kind? {
            EntryKind::Write => Replayed::Write {
                offset,
                data: self.data.freeze(),
            },
            EntryKind::Zero => Replayed::Zero {
                offset,
                len: ByteSize(self.blocks * BLOCK as u64),
            },
            _ => return None,
        };
        Some((self.tag, r))
    }
}

/// How a chunk of the journal left a replay.
enum Chunk {
    /// Read the next chunk.
    ReadOn,
    /// Past the last write asked for: the write being gathered is the last.
    PastUpto,
    /// The replay ends so.
    Ends(ReplayEnd),
}

impl Engine {
    /// Passes `volume`'s replicated writes with sequence numbers in `(after, upto]` to `f`, in
    /// order, read back from the journal; stops early when `f` returns `false` (counted as
    /// complete). The journal must hold them as a run after the volume's destage point.
    pub fn replay_replicated(
        &self,
        volume: VolumeId,
        after: SeqNo,
        upto: SeqNo,
        mut f: impl FnMut(LogPos, Replayed) -> bool,
    ) -> Result<ReplayEnd, CacheError> {
        if after >= upto {
            return Ok(ReplayEnd::Complete);
        }
        let p = self.partition_of(volume);
        // From the destage cursor: the writes not in the backend are after it. If the first
        // one is not there, the destager passed it meanwhile (it was destaged while the caller
        // thought it dirty); it may still be cached between the tail and the cursor.
        let cursor = {
            let _no_eviction = p.reclaim.read();
            let c = p.cursor.lock();
            (c.virt, c.seq)
        };
        let end = self.replay_from(p, cursor, volume, after, upto, &mut f)?;
        if end != (ReplayEnd::Missing { seq: after.next() }) {
            return Ok(end);
        }
        let tail = {
            let w = p.writer.lock();
            (w.tail, w.tail_seq)
        };
        if tail == cursor {
            return Ok(end);
        }
        self.replay_from(p, tail, volume, after, upto, &mut f)
    }

    /// [`Self::replay_replicated`] reading the log from the batch at `(virt, seq)`.
    fn replay_from(
        &self,
        p: &crate::partition::Partition,
        (mut virt, mut seq): (u64, u64),
        volume: VolumeId,
        after: SeqNo,
        upto: SeqNo,
        f: &mut impl FnMut(LogPos, Replayed) -> bool,
    ) -> Result<ReplayEnd, CacheError> {
        let mut next = after.next();
        let dropped = p.index.read().dropped.get(&volume).copied().unwrap_or(0);
        let mut parts: Option<Parts> = None;
        // Hands on a gathered write: `Some(stop)` ends the replay (`stop`: how).
        let mut emit = |w: Parts, next: &mut SeqNo| -> Option<ReplayEnd> {
            let seq = w.tag.seq;
            if seq != *next {
                return Some(ReplayEnd::Missing { seq: *next });
            }
            let Some((tag, r)) = w.finish() else {
                return Some(ReplayEnd::Missing { seq });
            };
            *next = seq.next();
            if !f(tag, r) || seq == upto {
                return Some(ReplayEnd::Complete);
            }
            None
        };
        loop {
            let head = p.head_virt.load(std::sync::atomic::Ordering::Acquire);
            if virt >= head {
                break;
            }
            let _no_eviction = p.reclaim.read();
            let read = p.read_batches_from(virt, seq, head, CHUNK, 2048, false)?;
            if read.batches.is_empty() {
                // The batch expected here is gone (evicted after the destager passed it).
                p.recycle(read);
                return Ok(ReplayEnd::Missing { seq: next });
            }
            let stop = 'chunk: {
                for (i, (h, _, _)) in read.batches.iter().enumerate() {
                    let data = read.data(i);
                    for e in &h.entries {
                        if e.volume != volume
                            || e.seq < dropped
                            || e.rep_seq < next
                            || !matches!(e.kind, EntryKind::Write | EntryKind::Zero)
                        {
                            continue;
                        }
                        let d: &[u8] = if e.kind == EntryKind::Write {
                            let at = e.data_offset as usize * BLOCK;
                            let d = &data[at..at + e.nblocks as usize * BLOCK];
                            if e.compute_crc(d) != e.crc {
                                break 'chunk Chunk::Ends(ReplayEnd::Missing { seq: next });
                            }
                            d
                        } else {
                            &[]
                        };
                        let tag = LogPos {
                            epoch: e.epoch,
                            seq: e.rep_seq,
                        };
                        // A write's entries are consecutive; a new sequence number ends the
                        // last.
                        if parts.as_ref().is_some_and(|w| w.tag != tag) {
                            if let Some(end) = emit(parts.take().expect("checked"), &mut next) {
                                break 'chunk Chunk::Ends(end);
                            }
                            if e.rep_seq < next {
                                continue;
                            }
                        }
                        if e.rep_seq > upto {
                            break 'chunk Chunk::PastUpto;
                        }
                        let w = parts.get_or_insert_with(|| Parts {
                            tag,
                            ..Parts::default()
                        });
                        let full = e.head_mask == FULL_MASK && e.tail_mask == FULL_MASK;
                        w.add(e.kind, e.first_block.0, u64::from(e.nblocks), full, d);
                    }
                }
                Chunk::ReadOn
            };
            (virt, seq) = read.next;
            p.recycle(read);
            match stop {
                Chunk::Ends(end) => return Ok(end),
                Chunk::PastUpto => break,
                Chunk::ReadOn => {}
            }
        }
        Ok(match parts.take() {
            Some(w) => emit(w, &mut next).unwrap_or(ReplayEnd::Missing { seq: next }),
            None => ReplayEnd::Missing { seq: next },
        })
    }
}
