//! Reading whole batches back from the log, many per device read (destage and eviction).

use alcubierre_io::AlignedBuf;

use crate::batches::{Batches, NOT_READ};
use crate::error::CacheError;
use crate::format::{BatchHeader, EntryKind, BLOCK};
use crate::partition::Partition;

/// Follower batch headers kept in memory at most (about 0.5 KiB each); past that, eviction
/// reads the batches back from the device as destage does.
const KEPT_HEADERS: usize = 16_384;

/// Read windows kept for reuse per partition, so a round does not allocate and zero its
/// windows again: at most [`KEPT_BYTES`] in all. Destage holds two rounds' windows at once (the
/// one it writes and the one read ahead), each round one or two windows of up to its budget; at
/// 16 MiB rounds, keeping only four windows made every round fault in fresh memory (the
/// destager's CPU per byte doubled).
const KEPT_BYTES: usize = 80 << 20;

impl Partition {
    /// Keeps the header of a batch just committed if all its writes are a follower's
    /// (replicated, of volumes this node is not primary of): their data is never destaged
    /// here, so the header alone is enough to evict them once released.
    pub(crate) fn keep_follower_header(&self, h: BatchHeader) {
        let follower_only = {
            let primaries = self.primaries.lock();
            h.entries.iter().all(|e| {
                e.kind != EntryKind::Write || (e.replicated() && !primaries.contains_key(&e.volume))
            })
        };
        if follower_only {
            // In sequence order, with gaps where batches were not kept.
            let mut kept = self.follower_headers.lock();
            if kept.len() == KEPT_HEADERS {
                kept.pop_front();
            }
            kept.push_back(h);
        }
    }

    /// Batches from batch `seq` at `virt` (or the next lap), known from their kept headers
    /// without reading the device, while `no_data(header)` says none of their data is needed
    /// and, after the first, the data they skip stays within `max_bytes`. No batches when the
    /// first is kept but `held` (nothing can be destaged before it); `None` when it is not kept
    /// or needs its data.
    pub(crate) fn kept_batches(
        &self,
        virt: u64,
        seq: u64,
        stop_at: u64,
        max_bytes: u64,
        no_data: &dyn Fn(&BatchHeader) -> bool,
        held: &dyn Fn(&BatchHeader) -> bool,
    ) -> Option<Batches> {
        let mut kept = self.follower_headers.lock();
        while kept.front().is_some_and(|h| h.seq < seq) {
            kept.pop_front();
        }
        let mut out = Batches {
            windows: Vec::new(),
            batches: Vec::new(),
            next: (virt, seq),
        };
        if kept.front().is_some_and(|h| h.seq == seq && held(h)) {
            return Some(out);
        }
        let mut bytes = 0u64;
        for h in kept.iter() {
            let (at, next_seq) = out.next;
            if h.seq != next_seq || h.virt < at || h.virt >= stop_at || !no_data(h) {
                break;
            }
            if !out.batches.is_empty() && bytes >= max_bytes {
                break;
            }
            bytes += u64::from(h.data_blocks) * BLOCK as u64;
            out.next = (h.virt + 1 + u64::from(h.data_blocks), h.seq + 1);
            out.batches.push((h.clone(), NOT_READ, 0));
        }
        (!out.batches.is_empty()).then_some(out)
    }

    /// Whether batch `seq`'s header is kept (a round starting there may not need the device).
    pub(crate) fn keeps_header(&self, seq: u64) -> bool {
        self.follower_headers
            .lock()
            .binary_search_by_key(&seq, |h| h.seq)
            .is_ok()
    }

    /// A read window of `len` bytes, reused when one is kept.
    fn read_buf(&self, len: usize) -> AlignedBuf {
        let mut kept = self.read_bufs.lock();
        if let Some(i) = kept.iter().position(|b| b.capacity() >= len) {
            let mut b = kept.swap_remove(i);
            b.set_len(len);
            return b;
        }
        AlignedBuf::zeroed(len)
    }

    /// Gives a round's read windows back for reuse.
    pub(crate) fn recycle(&self, read: Batches) {
        let mut kept = self.read_bufs.lock();
        let mut total: usize = kept.iter().map(|b| b.capacity()).sum();
        for b in read.windows {
            if total + b.capacity() <= KEPT_BYTES {
                total += b.capacity();
                kept.push(b);
            }
        }
    }

    /// Reads consecutive batches starting with batch `seq` at `virt` (or the next lap), while
    /// they start before `stop_at` and, after the first, their data stays within `max_bytes`.
    /// `stop_at` must be a batch boundary or inside a skipped gap at the end of a lap.
    /// Each device read covers up to `window` blocks (at least one whole batch).
    pub(crate) fn read_batches(
        &self,
        virt: u64,
        seq: u64,
        stop_at: u64,
        max_bytes: u64,
        window: u64,
    ) -> Result<Batches, CacheError> {
        self.read_batches_from(virt, seq, stop_at, max_bytes, window, true)
    }

    /// [`Self::read_batches`], where a batch missing from the live log fails the partition
    /// (`strict`: the caller's position is one the log must hold) or, otherwise, only ends
    /// what is read (a reader racing with eviction, which finds the batch gone).
    pub(crate) fn read_batches_from(
        &self,
        mut virt: u64,
        mut seq: u64,
        mut stop_at: u64,
        max_bytes: u64,
        window: u64,
        strict: bool,
    ) -> Result<Batches, CacheError> {
        let mut out = Batches {
            windows: Vec::new(),
            batches: Vec::new(),
            next: (virt, seq),
        };
        let mut bytes = 0u64;
        let max_batch = u64::from(self.max_batch_data) + 1;
        while virt < stop_at && (out.batches.is_empty() || bytes < max_bytes) {
            let lap_end = self.next_lap(virt);
            // The data still wanted, in blocks, with room for batch headers (a quarter: about
            // one per four data blocks at the smallest batches seen) and one batch past it.
            let wanted = (max_bytes - bytes).div_ceil(BLOCK as u64);
            let wanted = wanted.saturating_add(wanted / 4).saturating_add(max_batch);
            // Up to the window, but no further than the last batch that can start before
            // stop_at, nor (reading on) far past the data wanted: what a window holds past the
            // last batch taken is read again by the next call.
            let len = window
                .max(max_batch)
                .min(stop_at.saturating_sub(virt) + max_batch)
                .min(wanted)
                .min(lap_end - virt);
            let mut buf = self.read_buf(len as usize * BLOCK);
            self.medium
                .read_at(&mut buf, self.dev_offset(virt))
                .map_err(|e| self.fail(format!("reading the log at block {virt}: {e}")))?;
            // Parse batches from the window; `at` ends at the first block not consumed.
            let mut at = 0u64;
            while virt + at < stop_at && (out.batches.is_empty() || bytes < max_bytes) {
                let block = &buf[at as usize * BLOCK..(at as usize + 1) * BLOCK];
                let h = BatchHeader::decode(block)
                    .ok()
                    .filter(|h| h.nonce == self.nonce && h.partition == self.id)
                    .filter(|h| h.seq == seq && h.virt == virt + at);
                let Some(h) = h else { break };
                let size = 1 + u64::from(h.data_blocks);
                if at + size > len {
                    break; // not wholly in this window: the next window starts at its header
                }
                bytes += u64::from(h.data_blocks) * BLOCK as u64;
                out.batches.push((h, out.windows.len(), at as usize));
                at += size;
                seq += 1;
                out.next = (virt + at, seq);
                if at >= len {
                    break;
                }
            }
            if at > 0 {
                out.windows.push(buf);
                virt += at;
            } else if self.phys(virt) != 0 {
                // No batch here: the writer skipped the end of this lap. A stop inside the gap
                // means "up to the batch after it".
                virt = lap_end;
                stop_at = stop_at.max(lap_end + 1);
            } else if strict {
                return Err(self.fail(format!(
                    "batch {seq} at block {virt} is unreadable in the live log"
                )));
            } else {
                break;
            }
        }
        Ok(out)
    }
}
