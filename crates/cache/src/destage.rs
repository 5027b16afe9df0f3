//! Destage: copying dirty data from the journal to the backend, then releasing its space.
//!
//! A *round* takes whole batches in journal order from the destage point, up to a byte budget.
//! Within the round each block's newest version wins. Beyond that, a block of a write without a
//! replication tag whose index entry points to a newer place in the journal (or that a newer
//! entry zeroed) is *superseded* and passed over, so a rewritten working set costs destage (and
//! journal space) once per version that survives, not once per write. The writes are issued sorted by address and merged into extents; zeroed ranges
//! are discarded first. Then every volume touched is flushed, and only then is the new destage
//! point written to a checkpoint (with a device sync) and published, which lets the writer reuse
//! the space.
//!
//! So at every checkpoint the backend image of each volume, overlaid with the journal after the
//! destage point, is the volume's state: a block passed over has its newer version after the
//! destage point, durable (it was in the index). Between checkpoints the image may hold part of
//! the round in progress, like a disk's volatile write cache. A failed round is simply redone:
//! rounds are idempotent because nothing before the checkpoint moves until the round succeeded.
//!
//! A snapshot needs more than that overlay, and gets it: while it destages up to a point
//! (`Engine::destage_now`), every round (the destager's too) passes a block over only for a
//! version before that point, so the image holds every write made before it.
//!
//! Replicated writes are never passed over across rounds: followers evict their copies of the
//! writes the primary reports destaged, and a follower's copy of the newer version can be partial
//! (the host's sectors only) where the primary's was merged with the older version, or missing on
//! a follower a new primary has yet to bring up to date (docs/design/cache-format.md, "Destage
//! protocol").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use alcubierre_backend::{Backend, BackendError};
use alcubierre_io::AlignedBuf;
use alcubierre_types::{ByteOffset, ByteSize, CacheBlock, SeqNo, VolumeId};

use crate::batches::Batches;
use crate::error::CacheError;
use crate::format::{
    checkpoint_blocks, BatchHeader, Checkpoint, EntryKind, BLOCK, FULL_MASK,
    SECTORS_PER_BLOCK as SPB,
};
use crate::index::Loc;
use crate::partition::{ClaimState, Partition, SECTOR};

/// While alive, destage passes no block over for a version at or after its log position
/// ([`Partition::hold_versions_before`]).
pub(crate) struct VersionHold<'a> {
    part: &'a Partition,
    /// The log position: the head when the hold was taken.
    pub(crate) at: u64,
}

impl Drop for VersionHold<'_> {
    fn drop(&mut self) {
        let mut held = self.part.versions_held.lock();
        if let Some(n) = held.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.at);
            }
        }
        let least = held.keys().next().copied().unwrap_or(u64::MAX);
        self.part.versions_before.store(least, Ordering::Release);
    }
}

impl Partition {
    /// Bounds every destage round's passing over to versions before the current head until the
    /// hold is dropped, so that a copy of the image (a snapshot) made once destage reached the
    /// head holds every write committed before this call. Taken under the writer's lock, so a
    /// version committed after it is in the index only after the bound is visible.
    pub(crate) fn hold_versions_before(&self) -> VersionHold<'_> {
        let w = self.writer.lock();
        let at = w.head;
        let mut held = self.versions_held.lock();
        *held.entry(at).or_default() += 1;
        let least = held.keys().next().copied().unwrap_or(u64::MAX);
        self.versions_before.store(least, Ordering::Release);
        drop(held);
        drop(w);
        VersionHold { part: self, at }
    }
}

/// What one destage round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// Batches destaged.
    pub batches: u64,
    /// Bytes written to the backend (after merging).
    pub bytes: u64,
    /// Blocks found corrupt in the journal (poisoned, not destaged).
    pub corrupt_blocks: u64,
    /// Batches known from their kept headers, not read from the cache device (a follower's
    /// released writes).
    pub from_headers: u64,
    /// Time spent reading the round's batches from the cache device.
    pub read_time: std::time::Duration,
    /// Time spent writing and flushing the backend.
    pub backend_time: std::time::Duration,
    /// Time spent writing the checkpoint (durably) to the cache device.
    pub checkpoint_time: std::time::Duration,
    /// Blocks passed over because the journal holds a newer version of them.
    pub superseded_blocks: u64,
}

#[derive(Default)]
struct VolRound {
    /// block -> (batch index in the round, data block within the batch, valid mask)
    blocks: BTreeMap<u64, (usize, u32, u8)>,
    /// Zeroed block ranges, in journal order, with their entry seqs.
    zeroes: Vec<(u64, u64, u64)>,
}

/// Which newer versions let destage pass a block over: any in the journal, or (for a snapshot)
/// only those before a log position.
struct Newer {
    /// The destage point: every version still dirty is at or after it (and within one lap).
    base: u64,
    /// Only versions starting before this virtual block count.
    upto: u64,
}

impl Newer {
    /// Whether the block whose version at partition-relative `phys` is being destaged has a
    /// newer one, according to its index entry `loc`.
    fn supersedes(&self, part: &Partition, loc: Loc, phys: u32) -> bool {
        match loc {
            Loc::Cached { phys: at, .. } if at != phys => {
                let l = part.log_blocks();
                let virt = self.base + (u64::from(at) + l - self.base % l) % l;
                virt < self.upto
            }
            // A zeroing newer than the version (a write after it would be cached): its
            // range is discarded in its own round. Its log position is not in the index, so
            // a bounded round does not rely on it.
            Loc::Zero => self.upto == u64::MAX,
            _ => false,
        }
    }
}

/// Largest extent merged into one backend write: a sixteenth of the round's budget, between
/// 64 KiB and 1 MiB, so that a sequential round still sends about 16 writes at once (with 4 MiB
/// rounds and 1 MiB extents only 4 were in flight, and Ceph's OSD sat half idle).
fn max_extent(budget: u64) -> usize {
    (budget / 16).clamp(64 << 10, 1 << 20) as usize / BLOCK * BLOCK
}

impl Partition {
    /// Destages whole batches from the destage point, at least one and then while their data
    /// stays under `budget` bytes. Returns what it did; `Ok` with zero batches when clean.
    pub fn destage_round(
        &self,
        backend: &dyn Backend,
        budget: u64,
    ) -> Result<RoundStats, CacheError> {
        self.settle_claims(backend);
        let mut cursor = self.cursor.lock();
        let head = self.head_virt.load(Ordering::Acquire);
        let mut stats = RoundStats::default();
        let dropped = self.index.read().dropped.clone();
        let mut rounds: HashMap<VolumeId, VolRound> = HashMap::new();
        let mut drops_seen: Vec<(VolumeId, u64)> = Vec::new();
        let mut poison: Vec<(VolumeId, CacheBlock, u32)> = Vec::new();
        let window = budget.div_ceil(BLOCK as u64).clamp(64, 4096);
        let t0 = std::time::Instant::now();
        // The batches read ahead during the previous round, if they start here (the log after
        // the destage cursor does not change until it is destaged, so they are still what the
        // log holds); otherwise read now.
        // Replicated writes: released ones are skipped; a follower's unreleased ones stop the
        // round before their batch (the primary destages them; see docs/design/replication.md).
        let released: HashMap<VolumeId, SeqNo> = self
            .replog
            .lock()
            .iter()
            .map(|(v, r)| (*v, r.released))
            .collect();
        // Primaries whose fence is closed, or whose image is not claimed, are held like a
        // follower's volumes.
        let primaries: std::collections::HashSet<VolumeId> = self
            .primaries
            .lock()
            .iter()
            .filter(|(_, fence)| fence.allows() && fence.claim_state() == ClaimState::Claimed)
            .map(|(v, _)| *v)
            .collect();
        let released_of =
            |e: &crate::format::Entry| released.get(&e.volume).copied().unwrap_or_default();
        let held = |e: &crate::format::Entry| {
            e.replicated()
                && dropped.get(&e.volume).is_none_or(|&d| e.seq >= d)
                && e.rep_seq > released_of(e)
                && !primaries.contains(&e.volume)
        };
        let is_released = |e: &crate::format::Entry| e.replicated() && e.rep_seq <= released_of(e);
        // A batch whose writes are all released (or dropped) needs only its header.
        let no_data = |h: &BatchHeader| {
            h.entries.iter().all(|e| {
                e.kind != EntryKind::Write
                    || is_released(e)
                    || dropped.get(&e.volume).is_some_and(|&d| e.seq < d)
            })
        };
        let held_batch = |h: &BatchHeader| h.entries.iter().any(held);
        let kept =
            || self.kept_batches(cursor.virt, cursor.seq, head, budget, &no_data, &held_batch);
        let mut read = match self.prefetched.lock().take() {
            Some((at, read)) if at == (cursor.virt, cursor.seq) && !read.batches.is_empty() => read,
            other => {
                if let Some((_, stale)) = other {
                    self.recycle(stale);
                }
                match kept() {
                    Some(read) => {
                        stats.from_headers = read.batches.len() as u64;
                        read
                    }
                    None => self.read_batches(cursor.virt, cursor.seq, head, budget, window)?,
                }
            }
        };
        stats.read_time = t0.elapsed();
        if let Some(cut) = read
            .batches
            .iter()
            .position(|(h, _, _)| h.entries.iter().any(held))
        {
            read.next = (read.batches[cut].0.virt, read.batches[cut].0.seq);
            read.batches.truncate(cut);
        }
        let mut skipped: Vec<(VolumeId, crate::format::Entry, u64)> = Vec::new();
        let mut destaged_tags: HashMap<VolumeId, SeqNo> = HashMap::new();
        let mut entry_seq = cursor.entry_seq;
        let base = cursor.virt;
        let mut superseded = 0u64;
        for (i, (h, _, _)) in read.batches.iter().enumerate() {
            skipped.extend(
                h.entries
                    .iter()
                    .filter(|e| is_released(e))
                    .map(|e| (e.volume, *e, h.virt)),
            );
            for e in &h.entries {
                if e.replicated() && !is_released(e) {
                    let d = destaged_tags.entry(e.volume).or_default();
                    *d = (*d).max(e.rep_seq);
                }
            }
            self.collect(
                h,
                read.data(i),
                i,
                &dropped,
                &is_released,
                base,
                &mut rounds,
                &mut drops_seen,
                &mut poison,
                &mut superseded,
            );
            if let Some(last) = h.entries.last() {
                entry_seq = last.seq + 1;
            }
        }
        stats.batches = read.batches.len() as u64;
        let (virt, seq) = read.next;
        if stats.batches == 0 {
            self.recycle(read);
            return Ok(stats);
        }
        // Apply to the backend, volume by volume, in a stable order; meanwhile read the next
        // round's batches from the cache device, so the backend does not wait for them.
        let t0 = std::time::Instant::now();
        let mut vols: Vec<VolumeId> = rounds.keys().copied().collect();
        vols.sort();
        let next_head = self.head_virt.load(Ordering::Acquire);
        std::thread::scope(|scope| {
            // Not when the next round may come from kept headers (a follower's released
            // writes): reading their data would be wasted.
            let ahead = (next_head > virt && !self.keeps_header(seq)).then(|| {
                scope.spawn(move || self.read_batches(virt, seq, next_head, budget, window))
            });
            let mut applied = Ok(());
            for vol in &vols {
                let r = &rounds[vol];
                match self.apply_round(backend, *vol, r, &read, max_extent(budget)) {
                    Ok(b) => stats.bytes += b,
                    Err(e) => {
                        self.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
                        if let CacheError::Backend(BackendError::Fenced { volume }) = &e {
                            // Another node claimed the image: this node never destages the
                            // volume again as this primary (its writes are held from now on).
                            if let Some(f) = self.primaries.lock().get(volume) {
                                tracing::error!(partition = self.id, %volume,
                                    "another node claimed the volume's backend image: destage of it stops here");
                                f.set_claim(ClaimState::Lost);
                                self.counters.claims_lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        applied = Err(e);
                        break;
                    }
                }
            }
            // A failed read ahead is left for the next round to meet again.
            if let Some(Ok(Ok(next))) = ahead.map(|h| h.join()) {
                *self.prefetched.lock() = Some(((virt, seq), next));
            }
            applied
        })?;
        stats.backend_time = t0.elapsed();
        // The backend has it all: release zero ranges, poison what was corrupt.
        {
            let mut idx = self.index.write();
            for (vol, r) in &rounds {
                if let Some(v) = idx.volumes.get_mut(vol) {
                    for &(s, e, q) in &r.zeroes {
                        v.zeroes.remove_destaged(s, e, q);
                    }
                }
            }
            for (vol, block, phys) in &poison {
                if let Some(v) = idx.volumes.get_mut(vol) {
                    if v.blocks.get(block.0) == Some(*phys) {
                        v.poison(*block);
                    }
                }
            }
            for (vol, s) in &drops_seen {
                if idx.dropped.get(vol) == Some(s) {
                    idx.dropped.remove(vol);
                }
            }
            // Released replicated writes leave the index: the backend has them or newer, and a
            // follower never keeps them as clean cache (rule 8).
            for (vol, e, virt) in &skipped {
                let Some(v) = idx.volumes.get_mut(vol) else {
                    continue;
                };
                match e.kind {
                    EntryKind::Write => {
                        for (block, phys) in self.entry_blocks(*virt, e) {
                            v.evict(block, phys);
                        }
                    }
                    EntryKind::Zero => {
                        v.zeroes
                            .remove_destaged(e.first_block.0, e.end_block().0, e.seq)
                    }
                    _ => {}
                }
            }
        }
        stats.corrupt_blocks = poison.len() as u64;
        self.recycle(read);
        let cp = Checkpoint {
            partition: self.id,
            nonce: self.nonce,
            generation: cursor.generation + 1,
            destage_virt: virt,
            destage_seq: seq,
            entry_seq,
        };
        let t0 = std::time::Instant::now();
        let slot = checkpoint_blocks(self.id)[(cp.generation % 2) as usize];
        let mut b = AlignedBuf::zeroed(BLOCK);
        b.copy_from_slice(&cp.encode());
        self.medium
            .write_durable(&b, slot * BLOCK as u64)
            .map_err(|e| self.fail(format!("writing checkpoint: {e}")))?;
        cursor.generation = cp.generation;
        cursor.virt = virt;
        cursor.seq = seq;
        cursor.entry_seq = entry_seq;
        stats.checkpoint_time = t0.elapsed();
        self.destaged_virt.store(virt, Ordering::Release);
        {
            let mut logs = self.replog.lock();
            for (vol, seq) in destaged_tags {
                if let Some(r) = logs.get_mut(&vol) {
                    r.destaged = r.destaged.max(seq);
                }
            }
        }
        self.notify_space();
        self.counters
            .destaged_bytes
            .fetch_add(stats.bytes, Ordering::Relaxed);
        self.counters
            .superseded_blocks
            .fetch_add(superseded, Ordering::Relaxed);
        stats.superseded_blocks = superseded;
        self.counters.destage_rounds.fetch_add(1, Ordering::Relaxed);
        let c = &self.counters;
        for (n, t) in [
            (&c.destage_read_ns, stats.read_time),
            (&c.destage_backend_ns, stats.backend_time),
            (&c.destage_checkpoint_ns, stats.checkpoint_time),
        ] {
            n.fetch_add(t.as_nanos() as u64, Ordering::Relaxed);
        }
        Ok(stats)
    }

    /// Gives up the backend claims of volumes no longer primary here, then claims the images
    /// of primaries whose fence allows destaging and that have not claimed yet. A claim that
    /// fails is tried again before the next round; meanwhile the volume is held.
    fn settle_claims(&self, backend: &dyn Backend) {
        self.give_claims_up(backend);
        let wanted: Vec<(VolumeId, crate::partition::DestageFence)> = self
            .primaries
            .lock()
            .iter()
            .filter(|(_, f)| f.claim_state() == ClaimState::Unclaimed && f.allows())
            .map(|(v, f)| (*v, f.clone()))
            .collect();
        for (volume, fence) in wanted {
            match backend.claim(volume) {
                Ok(()) => {
                    tracing::debug!(partition = self.id, %volume, "claimed the backend image");
                    fence.set_claim(ClaimState::Claimed);
                    self.counters.claims.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(partition = self.id, %volume,
                        "claiming the backend image failed; the volume's destage waits: {e}");
                }
            }
        }
    }

    /// Whether claims wait to be given up ([`Partition::give_claims_up`]).
    pub(crate) fn has_claims_to_give_up(&self) -> bool {
        !self.to_release.lock().is_empty()
    }

    /// Gives up the backend claims of volumes no longer primary here (the destager does it
    /// between rounds, so no write of theirs is in flight), so that the new primary's claim
    /// fences nobody.
    pub(crate) fn give_claims_up(&self, backend: &dyn Backend) {
        let releases = std::mem::take(&mut *self.to_release.lock());
        for volume in releases {
            if self.primaries.lock().contains_key(&volume) {
                continue; // primary here again: it keeps the claim
            }
            match backend.release_claim(volume) {
                Ok(()) => {
                    tracing::info!(partition = self.id, %volume, "gave the backend image's claim up")
                }
                // The next claim then fences this node off, which is safe.
                Err(e) => tracing::warn!(partition = self.id, %volume,
                    "giving the backend image's claim up failed: {e}"),
            }
        }
    }

    /// Adds batch `h` (data in `data`, batch number `bi` of the round) to the round's state.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        h: &BatchHeader,
        data: &[u8],
        bi: usize,
        dropped: &HashMap<VolumeId, u64>,
        released: &dyn Fn(&crate::format::Entry) -> bool,
        base: u64,
        rounds: &mut HashMap<VolumeId, VolRound>,
        drops_seen: &mut Vec<(VolumeId, u64)>,
        poison: &mut Vec<(VolumeId, CacheBlock, u32)>,
        superseded: &mut u64,
    ) {
        // The index only for batches with writes that may be passed over (untagged ones):
        // replicated batches, the usual case, do not take its lock. A snapshot's bound set
        // before a newer version was committed is seen here, as that version is in the index
        // (see `Partition::hold_versions_before`).
        let idx = h
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::Write && !e.replicated())
            .then(|| self.index.read());
        let newer = Newer {
            base,
            upto: self.versions_before.load(Ordering::Acquire),
        };
        for e in &h.entries {
            if dropped.get(&e.volume).is_some_and(|&d| e.seq < d) || released(e) {
                continue;
            }
            match e.kind {
                EntryKind::Release => {}
                EntryKind::DropVolume => {
                    rounds.remove(&e.volume);
                    drops_seen.push((e.volume, e.seq));
                }
                EntryKind::Zero => {
                    let r = rounds.entry(e.volume).or_default();
                    let (s, end) = (e.first_block.0, e.end_block().0);
                    let doomed: Vec<u64> = r.blocks.range(s..end).map(|(b, _)| *b).collect();
                    for b in doomed {
                        r.blocks.remove(&b);
                    }
                    r.zeroes.push((s, end, e.seq));
                }
                EntryKind::Write => {
                    let at = e.data_offset as usize * BLOCK;
                    let len = e.nblocks as usize * BLOCK;
                    if e.compute_crc(&data[at..at + len]) != e.crc {
                        tracing::error!(partition = self.id, volume = %e.volume,
                            block = e.first_block.0, "journal entry corrupt at destage");
                        poison.extend(self.entry_blocks(h.virt, e).map(|(b, p)| (e.volume, b, p)));
                        continue;
                    }
                    let r = rounds.entry(e.volume).or_default();
                    // Replicated writes: see the module documentation.
                    let vi = idx
                        .as_ref()
                        .filter(|_| !e.replicated())
                        .and_then(|idx| idx.volumes.get(&e.volume));
                    for (k, (block, phys)) in self.entry_blocks(h.virt, e).enumerate() {
                        let k = k as u32;
                        if vi.is_some_and(|v| newer.supersedes(self, v.lookup(block), phys)) {
                            // Its newer version goes instead, in this round or a later one;
                            // an older version of it earlier in this round is superseded too.
                            *superseded += 1;
                            continue;
                        }
                        r.blocks
                            .insert(block.0, (bi, e.data_offset + k, e.mask_of(k)));
                    }
                }
            }
        }
    }

    /// Discards, writes (sorted, merged) and flushes one volume's part of a round; returns the
    /// bytes written.
    fn apply_round(
        &self,
        backend: &dyn Backend,
        vol: VolumeId,
        r: &VolRound,
        read: &Batches,
        max_extent: usize,
    ) -> Result<u64, CacheError> {
        let bs = BLOCK as u64;
        for &(s, e, _) in &r.zeroes {
            backend.discard(vol, ByteOffset(s * bs), ByteSize((e - s) * bs))?;
        }
        // Extents as (byte offset, range in the staging buffer): whole blocks merged while
        // contiguous; partial blocks as runs of valid sectors.
        let mut staging = self.staging.lock();
        staging.clear();
        let mut spans: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
        let mut cur: Option<(u64, usize)> = None; // (byte offset, start in staging)
        let close = |spans: &mut Vec<_>, cur: &mut Option<(u64, usize)>, end: usize| {
            if let Some((off, start)) = cur.take() {
                spans.push((off, start..end));
            }
        };
        for (&block, &(bi, k, mask)) in &r.blocks {
            let src = &read.data(bi)[k as usize * BLOCK..(k as usize + 1) * BLOCK];
            if mask == FULL_MASK {
                let at = staging.len();
                let extends = cur.is_some_and(|(off, start)| {
                    off + (at - start) as u64 == block * bs && at - start < max_extent
                });
                if !extends {
                    close(&mut spans, &mut cur, at);
                    cur = Some((block * bs, at));
                }
                staging.extend_from_slice(src);
                continue;
            }
            close(&mut spans, &mut cur, staging.len());
            let mut s = 0;
            while s < SPB {
                if mask & (1 << s) == 0 {
                    s += 1;
                    continue;
                }
                let mut t = s;
                while t < SPB && mask & (1 << t) != 0 {
                    t += 1;
                }
                let at = staging.len();
                staging.extend_from_slice(&src[(s * SECTOR) as usize..(t * SECTOR) as usize]);
                spans.push(((block * SPB + s) * SECTOR, at..staging.len()));
                s = t;
            }
        }
        close(&mut spans, &mut cur, staging.len());
        let extents: Vec<(ByteOffset, &[u8])> = spans
            .into_iter()
            .map(|(off, range)| (ByteOffset(off), &staging[range]))
            .collect();
        let bytes = staging.len() as u64;
        if !extents.is_empty() {
            backend.write_many(vol, &extents)?;
        }
        backend.flush(vol)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alcubierre_backend::{Backend, MemBackend};
    use alcubierre_io::{Medium, MemMedium};
    use alcubierre_types::{BlockSize, ByteOffset, ByteSize, Lba, VolumeGeometry, VolumeId};
    use bytes::Bytes;

    use crate::{Engine, FormatOptions};

    /// Block 5 written with `a`, then with `b`, each in its own batch; returns the engine, the
    /// backend and the volume.
    fn rewritten(a: u8, b: u8, hold_between: bool) -> (Engine, Arc<MemBackend>, VolumeId, u8) {
        let medium = Arc::new(MemMedium::new(8 << 20));
        Engine::format(&*medium, &FormatOptions::default()).unwrap();
        let backend = Arc::new(MemBackend::new());
        let v = VolumeId(uuid::Uuid::from_u128(7));
        backend.create(v, ByteSize(1 << 20)).unwrap();
        let e = Engine::open(
            medium as Arc<dyn Medium>,
            backend.clone() as Arc<dyn Backend>,
        )
        .unwrap();
        e.attach(
            v,
            VolumeGeometry::new(BlockSize::B4096, ByteSize(1 << 20)).unwrap(),
        )
        .unwrap();
        let p = e.partition_of(v).clone();
        let w = |x: u8| e.write_op(v, Lba(5), Bytes::from(vec![x; 4096])).unwrap();
        p.commit(&[w(a)], 1).pop().unwrap().unwrap();
        let hold = hold_between.then(|| p.hold_versions_before());
        p.commit(&[w(b)], 1).pop().unwrap().unwrap();
        // A round of one batch: the first write only.
        let s = p.destage_round(&*backend, 1).unwrap();
        assert_eq!(s.batches, 1);
        drop(hold);
        let mut got = [0u8; 4096];
        backend.read(v, ByteOffset(5 * 4096), &mut got).unwrap();
        assert!(got.iter().all(|&x| x == got[0]));
        (e, backend, v, got[0])
    }

    #[test]
    fn a_snapshot_bound_keeps_the_versions_written_before_it() {
        // Without a bound, the first version is passed over: its newer one stands in for it.
        let (e, _, _, image) = rewritten(1, 2, false);
        assert_eq!(image, 0, "passed over");
        assert_eq!(e.stats().superseded_blocks, 1);
        // A snapshot taken between the writes must find the first one in the image once
        // destage passed it, although the journal holds a newer version.
        let (e, _, _, image) = rewritten(1, 2, true);
        assert_eq!(image, 1, "the version before the bound is destaged");
        assert_eq!(e.stats().superseded_blocks, 0);
        // Either way the newest version reaches the image in the end.
        for hold in [false, true] {
            let (e, backend, v, _) = rewritten(1, 2, hold);
            e.destage_all().unwrap();
            let mut got = [0u8; 4096];
            backend.read(v, ByteOffset(5 * 4096), &mut got).unwrap();
            assert!(got.iter().all(|&x| x == 2));
        }
    }
}
