//! One partition of a cache device: an independent circular journal, its index, and the state
//! the writer and the destager share.
//!
//! Positions in the log are *virtual* block numbers that only grow; the physical block is
//! `virt % log_blocks`. A batch never straddles the end of the log: when it does not fit, the
//! writer skips to the next lap. The log's live region is `[tail, head)`:
//!
//! ```text
//!   tail ............ destaged ..................... head
//!   | clean, readable | dirty: not yet in the backend |  free (reusable) ...
//! ```
//!
//! * the **writer** (one at a time, [`Partition::commit`]) appends batches at `head`, and when it
//!   needs space moves `tail` up to `destaged`, forgetting index entries that still point there;
//! * the **destager** ([`Partition::destage_round`], in `destage.rs`) moves `destaged` towards
//!   `head` after the backend has flushed, and records it in a checkpoint before publishing it;
//! * **readers** on the pool hold `reclaim` shared while they use a cache location, so `tail`
//!   cannot pass data a reader is about to read; reads through io_uring hold no lock and check
//!   afterwards that `tail` did not pass their data (`read.rs`, `run_still_valid`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alcubierre_io::{AlignedBuf, Medium};
use alcubierre_types::{CacheBlock, Epoch, LogPos, Sector, SeqNo, VolumeId};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::CacheError;
use crate::format::{BatchHeader, Entry, EntryKind, PartitionExtent, BLOCK, MAX_ENTRIES};
use crate::index::VolumeIndex;

/// A request to the journal, in 512-byte sectors of the volume.
#[derive(Clone, Debug)]
pub enum Op {
    /// Write `data` (a whole number of sectors) at `sector`.
    Write {
        /// The volume.
        volume: VolumeId,
        /// First sector.
        sector: Sector,
        /// The payload.
        data: Bytes,
    },
    /// Make `sectors` sectors at `sector` read as zeroes.
    Zero {
        /// The volume.
        volume: VolumeId,
        /// First sector.
        sector: Sector,
        /// Number of sectors.
        sectors: u64,
    },
    /// Forget everything of the volume.
    Drop {
        /// The volume.
        volume: VolumeId,
    },
    /// A follower's writes up to replication sequence number `seq` are in the backend.
    Release {
        /// The volume.
        volume: VolumeId,
        /// The released sequence number.
        seq: SeqNo,
    },
}

impl Op {
    /// The volume the op is for.
    pub fn volume(&self) -> VolumeId {
        match self {
            Op::Write { volume, .. }
            | Op::Zero { volume, .. }
            | Op::Drop { volume }
            | Op::Release { volume, .. } => *volume,
        }
    }
}

pub(crate) const SECTOR: u64 = Sector::BYTES;

/// The writer's private state.
pub(crate) struct WriterState {
    pub(crate) buf: AlignedBuf,
    pub(crate) head: u64,
    pub(crate) head_seq: u64,
    pub(crate) entry_seq: u64,
    pub(crate) tail: u64,
    pub(crate) tail_seq: u64,
    /// A batch staged for the ring is being written at `head` (see `commit`): nothing else
    /// commits until it is finished.
    pub(crate) ring_batch: bool,
    /// The buffer a staged batch gave back, for the next one.
    pub(crate) spare: Option<AlignedBuf>,
}

/// The destager's private state: where destage has reached.
pub(crate) struct Cursor {
    pub(crate) virt: u64,
    pub(crate) seq: u64,
    pub(crate) entry_seq: u64,
    pub(crate) generation: u64,
}

/// Index of every volume with data in this partition.
#[derive(Default)]
pub(crate) struct PartIndex {
    pub(crate) volumes: HashMap<VolumeId, VolumeIndex>,
    /// Volumes dropped at entry seq `s`: their entries before `s` are void.
    pub(crate) dropped: HashMap<VolumeId, u64>,
}

/// The journal writer a service runs on io_uring, as a partition's direct commits reach it.
pub(crate) trait Committer: Send + Sync {
    /// Commits `ops` through the writer's queue and waits for them; `None` once it stopped.
    fn commit_and_wait(&self, ops: &[Op], tags: &[LogPos]) -> Option<Vec<Result<(), CacheError>>>;
    /// Reaps and finishes what completed, running no callback.
    fn finish_completed(&self);
}

/// Counters of a partition.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) ops: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) ring_batches: AtomicU64,
    pub(crate) log_blocks_written: AtomicU64,
    pub(crate) destaged_bytes: AtomicU64,
    pub(crate) superseded_blocks: AtomicU64,
    pub(crate) destage_rounds: AtomicU64,
    /// Destage time by stage, nanoseconds: reading the cache, the backend, the checkpoint.
    pub(crate) destage_read_ns: AtomicU64,
    pub(crate) destage_backend_ns: AtomicU64,
    pub(crate) destage_checkpoint_ns: AtomicU64,
    pub(crate) backend_errors: AtomicU64,
    pub(crate) claims: AtomicU64,
    pub(crate) claims_lost: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) evicted_blocks: AtomicU64,
    pub(crate) read_hit_blocks: AtomicU64,
    pub(crate) read_miss_blocks: AtomicU64,
}

/// A partition. See the module documentation.
pub struct Partition {
    pub(crate) id: u32,
    pub(crate) medium: Arc<dyn Medium>,
    pub(crate) extent: PartitionExtent,
    pub(crate) nonce: u64,
    pub(crate) max_batch_data: u32,
    pub(crate) writer: Mutex<WriterState>,
    /// Signalled when a staged batch is finished (`WriterState::ring_batch` cleared).
    pub(crate) writer_cv: Condvar,
    /// The journal writer on the ring, while a service runs one: commits go through it.
    pub(crate) committer: RwLock<Option<std::sync::Weak<dyn Committer>>>,
    pub(crate) cursor: Mutex<Cursor>,
    /// Published head (end of the last durable batch).
    pub(crate) head_virt: AtomicU64,
    /// Published destage point: everything before it is in the backend.
    pub(crate) destaged_virt: AtomicU64,
    /// Published tail.
    pub(crate) tail_virt: AtomicU64,
    pub(crate) index: RwLock<PartIndex>,
    pub(crate) reclaim: RwLock<()>,
    failed: Mutex<Option<String>>,
    failed_flag: AtomicBool,
    stopping: AtomicBool,
    space_lock: Mutex<()>,
    space_cv: Condvar,
    work_lock: Mutex<bool>,
    work_cv: Condvar,
    pub(crate) counters: Counters,
    /// Dirty bytes from which each commit wakes the destager.
    pub(crate) notify_bytes: AtomicU64,
    /// Per volume: the replication log held in this journal (tagged entries after the destage
    /// point at open, plus every tagged entry committed since).
    pub(crate) replog: Mutex<std::collections::HashMap<VolumeId, RepLog>>,
    /// Volumes this node is primary of (their replicated writes are destaged here, when their
    /// fence allows).
    pub(crate) primaries: Mutex<std::collections::HashMap<VolumeId, DestageFence>>,
    /// Volumes whose claim on the backend image this node gives up (no longer primary here):
    /// the destager releases them before its next round.
    pub(crate) to_release: Mutex<Vec<VolumeId>>,
    /// Bumped by whatever can let a follower's held writes go (a release, a role change, a
    /// drop), so a destager stopped at held writes sleeps until then instead of re-reading
    /// the log on every commit.
    pub(crate) hold_gen: AtomicU64,
    /// Signalled with `hold_gen` (and at stop); commits do not signal it, so a destager
    /// waiting on held writes is not woken by every commit group.
    unhold_lock: Mutex<()>,
    unhold_cv: Condvar,
    /// Read windows kept for reuse (see `logread`).
    pub(crate) read_bufs: Mutex<Vec<alcubierre_io::AlignedBuf>>,
    /// The next destage round's batches, read while the previous round wrote the backend,
    /// with the position they start at.
    pub(crate) prefetched: Mutex<Option<((u64, u64), crate::batches::Batches)>>,
    /// Headers of recent batches that hold only a follower's writes (and entries without
    /// data), in sequence order: once the primary releases those writes, the destager evicts
    /// them from these headers instead of reading the batches back from the device.
    pub(crate) follower_headers: Mutex<std::collections::VecDeque<BatchHeader>>,
    /// Where destage gathers a volume's extents for the backend, kept between rounds so a
    /// round does not fault in fresh memory (only the destager uses it).
    pub(crate) staging: Mutex<Vec<u8>>,
    /// Destage passes a block over only for a newer version starting before this virtual
    /// block (`u64::MAX`: any newer version); the least of `versions_held`.
    pub(crate) versions_before: AtomicU64,
    /// The bounds of the copies of the image being made (snapshots), each with its count.
    pub(crate) versions_held: Mutex<std::collections::BTreeMap<u64, usize>>,
}

/// A volume's replication log in a journal: the newest tagged write and the epoch of each run
/// of sequence numbers, as `(first seq, epoch)` ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepLog {
    /// The newest tagged write.
    pub last: LogPos,
    /// Runs of sequence numbers by epoch.
    pub runs: Vec<(SeqNo, Epoch)>,
    /// Writes up to this sequence number are in the backend (released by the primary).
    pub released: SeqNo,
    /// The highest sequence number this journal has destaged (as primary) since it opened.
    pub destaged: SeqNo,
}

/// When a primary may destage a volume's replicated writes: only while `allowed` says so (its
/// node's lease holds: an old primary cut off from the cluster stops writing into the backend
/// before a new primary is made), not before `not_before` (a new primary waits until an old
/// primary's last backend writes have landed or failed, so none of them lands over the new
/// primary's newer data), and once this node holds the volume's backend image
/// ([`Backend::claim`](alcubierre_backend::Backend::claim), taken by the destager before the
/// first round; it fences the old primary off the image where the backend can). See
/// docs/design/replication.md, "Backend fencing".
#[derive(Clone)]
pub struct DestageFence {
    /// Whether destaging may go on now.
    pub allowed: std::sync::Arc<dyn Fn() -> bool + Send + Sync>,
    /// Not before this instant.
    pub not_before: std::time::Instant,
    /// Where the claim on the backend image stands ([`ClaimState`] as a number).
    claim: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

/// Where a primary's claim on its volume's backend image stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// Not taken yet: the destager takes it before the volume's first round.
    Unclaimed,
    /// Held: the volume is destaged.
    Claimed,
    /// Another node claimed the image: this node is fenced off it and never destages the
    /// volume again under this fence (a new primary, with a new fence, claims it anew).
    Lost,
}

impl DestageFence {
    /// Destages while `allowed` holds, from `not_before` on, once the image is claimed.
    pub fn new(
        allowed: std::sync::Arc<dyn Fn() -> bool + Send + Sync>,
        not_before: std::time::Instant,
    ) -> Self {
        Self {
            allowed,
            not_before,
            claim: Default::default(),
        }
    }

    /// No fence but the claim: destage whenever there is work.
    pub fn open() -> Self {
        Self::new(std::sync::Arc::new(|| true), std::time::Instant::now())
    }

    /// Whether destaging may go on now (the claim aside).
    pub fn allows(&self) -> bool {
        std::time::Instant::now() >= self.not_before && (self.allowed)()
    }

    /// Where the claim on the backend image stands.
    pub fn claim_state(&self) -> ClaimState {
        match self.claim.load(std::sync::atomic::Ordering::Acquire) {
            0 => ClaimState::Unclaimed,
            1 => ClaimState::Claimed,
            _ => ClaimState::Lost,
        }
    }

    pub(crate) fn set_claim(&self, s: ClaimState) {
        let n = match s {
            ClaimState::Unclaimed => 0,
            ClaimState::Claimed => 1,
            ClaimState::Lost => 2,
        };
        self.claim.store(n, std::sync::atomic::Ordering::Release);
    }
}

/// How the destager treats a volume's replicated writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaRole {
    /// This node destages them.
    Primary,
    /// The primary destages them; they leave this journal when it releases them. Every volume
    /// holding replicated writes is a follower until told otherwise (e.g. after a restart).
    Follower,
}

impl RepLog {
    fn note(&mut self, t: LogPos) {
        if t.seq == SeqNo(0) || t.seq < self.last.seq {
            return;
        }
        if self.runs.last().map(|r| r.1) != Some(t.epoch) {
            self.runs.push((t.seq, t.epoch));
        }
        self.last = t;
    }
}

impl Partition {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u32,
        medium: Arc<dyn Medium>,
        extent: PartitionExtent,
        nonce: u64,
        max_batch_data: u32,
        writer: WriterState,
        cursor: Cursor,
        index: PartIndex,
    ) -> Self {
        Self {
            id,
            medium,
            extent,
            nonce,
            max_batch_data,
            head_virt: AtomicU64::new(writer.head),
            tail_virt: AtomicU64::new(writer.tail),
            destaged_virt: AtomicU64::new(cursor.virt),
            writer: Mutex::new(writer),
            writer_cv: Condvar::new(),
            committer: RwLock::new(None),
            cursor: Mutex::new(cursor),
            index: RwLock::new(index),
            reclaim: RwLock::new(()),
            failed: Mutex::new(None),
            failed_flag: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            space_lock: Mutex::new(()),
            space_cv: Condvar::new(),
            work_lock: Mutex::new(false),
            work_cv: Condvar::new(),
            counters: Counters::default(),
            notify_bytes: AtomicU64::new(1 << 20),
            replog: Mutex::new(std::collections::HashMap::new()),
            primaries: Mutex::new(std::collections::HashMap::new()),
            to_release: Mutex::new(Vec::new()),
            hold_gen: AtomicU64::new(0),
            unhold_lock: Mutex::new(()),
            unhold_cv: Condvar::new(),
            read_bufs: Mutex::new(Vec::new()),
            prefetched: Mutex::new(None),
            follower_headers: Mutex::new(std::collections::VecDeque::new()),
            staging: Mutex::new(Vec::new()),
            versions_before: AtomicU64::new(u64::MAX),
            versions_held: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// The partition's number on its device.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Log length in blocks.
    pub(crate) fn log_blocks(&self) -> u64 {
        self.extent.blocks
    }

    pub(crate) fn phys(&self, virt: u64) -> u64 {
        virt % self.extent.blocks
    }

    /// Byte offset on the device of virtual block `virt`.
    pub(crate) fn dev_offset(&self, virt: u64) -> u64 {
        (self.extent.start + self.phys(virt)) * BLOCK as u64
    }

    /// The start of the lap after the one `virt` is in.
    pub(crate) fn next_lap(&self, virt: u64) -> u64 {
        (virt / self.extent.blocks + 1) * self.extent.blocks
    }

    pub(crate) fn device(&self) -> String {
        self.medium.describe()
    }

    /// Fails the partition (fail-stop) with `reason`; returns the error to report.
    pub(crate) fn fail(&self, reason: String) -> CacheError {
        let mut f = self.failed.lock();
        if f.is_none() {
            tracing::error!(partition = self.id, device = %self.device(), %reason,
                "cache device failed; refusing further writes");
            *f = Some(reason);
        }
        self.failed_flag.store(true, Ordering::SeqCst);
        self.space_cv.notify_all();
        self.failed_error(f.as_deref().unwrap_or_default())
    }

    fn failed_error(&self, reason: &str) -> CacheError {
        CacheError::DeviceFailed {
            device: self.device(),
            partition: self.id,
            reason: reason.to_string(),
        }
    }

    /// The fail-stop error, if the partition has failed.
    pub(crate) fn check_failed(&self) -> Result<(), CacheError> {
        if self.failed_flag.load(Ordering::SeqCst) {
            let f = self.failed.lock();
            return Err(self.failed_error(f.as_deref().unwrap_or_default()));
        }
        Ok(())
    }

    /// True once the partition has failed.
    pub fn is_failed(&self) -> bool {
        self.failed_flag.load(Ordering::SeqCst)
    }

    /// True once [`Partition::stop`] was called.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Asks waiting writers and the destager to give up (shutdown).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.space_cv.notify_all();
        self.notify_work();
        let _g = self.unhold_lock.lock();
        self.unhold_cv.notify_all();
    }

    /// Something that can let held writes go happened: wakes the destager.
    pub(crate) fn notify_unhold(&self) {
        {
            let _g = self.unhold_lock.lock();
            self.hold_gen.fetch_add(1, Ordering::AcqRel);
            self.unhold_cv.notify_all();
        }
        self.notify_work();
    }

    /// Waits until something may let held writes go after generation `gen` (see
    /// [`Partition::notify_unhold`]), the partition stops, or `timeout` passes. New commits do
    /// not end the wait: they cannot, as the round stopped at an older held batch.
    pub(crate) fn wait_for_unhold(&self, gen: u64, timeout: Duration) {
        let mut g = self.unhold_lock.lock();
        if self.hold_gen.load(Ordering::Acquire) == gen && !self.stopping() {
            self.unhold_cv.wait_for(&mut g, timeout);
        }
    }

    /// Wakes the destager.
    pub(crate) fn notify_work(&self) {
        *self.work_lock.lock() = true;
        self.work_cv.notify_all();
    }

    /// Waits until the writer reports new dirty data, or `timeout`.
    pub(crate) fn wait_for_work(&self, timeout: Duration) {
        let mut pending = self.work_lock.lock();
        if !*pending {
            self.work_cv.wait_for(&mut pending, timeout);
        }
        *pending = false;
    }

    pub(crate) fn notify_space(&self) {
        let _g = self.space_lock.lock();
        self.space_cv.notify_all();
    }

    /// Dirty blocks (log space not yet destaged).
    pub fn dirty_blocks(&self) -> u64 {
        self.head_virt.load(Ordering::Acquire) - self.destaged_virt.load(Ordering::Acquire)
    }

    /// Used blocks (dirty plus clean cached).
    pub fn used_blocks(&self) -> u64 {
        self.head_virt.load(Ordering::Acquire) - self.tail_virt.load(Ordering::Acquire)
    }

    /// Reads the batch header at `virt` and checks it is batch `seq` of this partition.
    pub(crate) fn header_at(&self, virt: u64, seq: u64) -> Result<Option<BatchHeader>, CacheError> {
        let mut b = AlignedBuf::zeroed(BLOCK);
        self.medium
            .read_at(&mut b, self.dev_offset(virt))
            .map_err(|e| self.fail(format!("reading the log at block {virt}: {e}")))?;
        Ok(BatchHeader::decode(&b)
            .ok()
            .filter(|h| h.nonce == self.nonce && h.partition == self.id)
            .filter(|h| h.seq == seq && h.virt == virt))
    }

    /// Finds batch `seq`, which starts at `virt` or, if the writer skipped, at the next lap.
    pub(crate) fn find_batch(
        &self,
        virt: u64,
        seq: u64,
    ) -> Result<Option<BatchHeader>, CacheError> {
        if let Some(h) = self.header_at(virt, seq)? {
            return Ok(Some(h));
        }
        if self.phys(virt) != 0 {
            return self.header_at(self.next_lap(virt), seq);
        }
        Ok(None)
    }

    /// Commits `ops` in order, in as many batches as needed: each batch is written with one
    /// device write and made durable with one sync (group commit). Returns one result per op;
    /// an op's `Ok` means it is durable. Only one thread may commit at a time (the lock on the
    /// writer state enforces it).
    pub fn commit(&self, ops: &[Op], epoch: u64) -> Vec<Result<(), CacheError>> {
        let tags = vec![LogPos::new(epoch, 0); ops.len()];
        self.commit_tagged(ops, &tags)
    }

    /// [`Partition::commit`] with a replication tag per op (`tags[i]` for `ops[i]`), kept in
    /// the op's journal entries and recovered with them.
    pub fn commit_tagged(&self, ops: &[Op], tags: &[LogPos]) -> Vec<Result<(), CacheError>> {
        assert_eq!(ops.len(), tags.len(), "one tag per op");
        if !Self::on_writer_thread() {
            if let Some(results) = self
                .ring_writer()
                .and_then(|r| r.commit_and_wait(ops, tags))
            {
                return results;
            }
        }
        self.commit_now(ops, tags)
    }

    fn ring_writer(&self) -> Option<Arc<dyn Committer>> {
        self.committer
            .read()
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
    }

    /// [`Partition::commit_tagged`] on the calling thread, after a batch staged for the ring
    /// (if any) is finished.
    pub(crate) fn commit_now(&self, ops: &[Op], tags: &[LogPos]) -> Vec<Result<(), CacheError>> {
        let mut results: Vec<Option<Result<(), CacheError>>> =
            (0..ops.len()).map(|_| None).collect();
        let mut w = self.writer.lock();
        while w.ring_batch {
            // Finished by whoever reaps; this thread reaps too, so that it needs nobody else.
            if self
                .writer_cv
                .wait_for(&mut w, Duration::from_millis(1))
                .timed_out()
            {
                if let Some(rw) = self.ring_writer() {
                    parking_lot::MutexGuard::unlocked(&mut w, || rw.finish_completed());
                }
            }
        }
        if self.is_failed() {
            return ops.iter().map(|_| self.check_failed()).collect();
        }
        let mut batch: Vec<Entry> = Vec::new();
        let mut batch_ops: Vec<usize> = Vec::new();
        let mut data_blocks: u32 = 0;
        for (i, (op, tag)) in ops.iter().zip(tags).enumerate() {
            if let Err(e) = self.check_op(op) {
                results[i] = Some(Err(e));
                continue;
            }
            let (need_entries, need_data) = self.cost(op);
            if !batch.is_empty()
                && (batch.len() + need_entries > MAX_ENTRIES
                    || data_blocks + need_data > self.max_batch_data)
            {
                let r = self.write_batch(&mut w, &batch, data_blocks);
                for &j in &batch_ops {
                    results[j] = Some(self.batch_result(&r));
                }
                batch.clear();
                batch_ops.clear();
                data_blocks = 0;
            }
            match self.build(&mut w, op, *tag, &batch, data_blocks) {
                Ok(b) => {
                    batch.extend(b.entries);
                    data_blocks += b.data_blocks;
                    batch_ops.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !batch.is_empty() {
            let r = self.write_batch(&mut w, &batch, data_blocks);
            for &j in &batch_ops {
                results[j] = Some(self.batch_result(&r));
            }
        }
        drop(w);
        self.counters
            .ops
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    /// A batch's outcome, as each op in it gets it.
    pub(crate) fn batch_result(&self, r: &Result<(), CacheError>) -> Result<(), CacheError> {
        r.as_ref().map(|_| ()).map_err(|e| self.clone_err(e))
    }

    fn clone_err(&self, e: &CacheError) -> CacheError {
        match e {
            CacheError::DeviceFailed { reason, .. } => self.failed_error(reason),
            CacheError::ShuttingDown => CacheError::ShuttingDown,
            other => self.failed_error(&other.to_string()),
        }
    }

    /// The blocks a write entry of the batch at `batch_virt` covers: (volume block, partition-
    /// relative log block holding its data).
    pub(crate) fn entry_blocks(
        &self,
        batch_virt: u64,
        e: &Entry,
    ) -> impl Iterator<Item = (CacheBlock, u32)> {
        let data = self.phys(batch_virt) + 1 + u64::from(e.data_offset);
        let first = e.first_block;
        (0..u64::from(e.data_blocks())).map(move |k| (first.plus(k), (data + k) as u32))
    }

    /// Applies a durable batch at `virt` to the index. `bad` lists entries whose data failed
    /// its checksum (recovery): their blocks are poisoned instead.
    pub(crate) fn apply(&self, virt: u64, header: &BatchHeader, bad: Option<&[bool]>) {
        let mut idx = self.index.write();
        let mut replog = self.replog.lock();
        for (i, e) in header.entries.iter().enumerate() {
            let corrupt = bad.is_some_and(|b| b[i]);
            if e.kind == EntryKind::DropVolume {
                replog.remove(&e.volume);
                if e.rep_seq > SeqNo(0) {
                    // A follower's reset: the log restarts after this position, everything up
                    // to which is in the backend.
                    replog.insert(
                        e.volume,
                        RepLog {
                            last: LogPos {
                                epoch: e.epoch,
                                seq: e.rep_seq,
                            },
                            runs: vec![(e.rep_seq, e.epoch)],
                            released: e.rep_seq,
                            destaged: SeqNo(0),
                        },
                    );
                }
            } else if e.kind == EntryKind::Release {
                let r = replog.entry(e.volume).or_default();
                r.released = r.released.max(e.rep_seq);
            } else if e.rep_seq > SeqNo(0) {
                replog.entry(e.volume).or_default().note(LogPos {
                    epoch: e.epoch,
                    seq: e.rep_seq,
                });
            }
            match e.kind {
                EntryKind::Release => {}
                EntryKind::DropVolume => {
                    idx.volumes.remove(&e.volume);
                    idx.dropped.insert(e.volume, e.seq);
                }
                EntryKind::Zero => {
                    let v = idx.volumes.entry(e.volume).or_default();
                    v.zero(e.first_block, e.end_block(), e.seq);
                }
                EntryKind::Write => {
                    let v = idx.volumes.entry(e.volume).or_default();
                    for (k, (block, phys)) in self.entry_blocks(virt, e).enumerate() {
                        if corrupt {
                            v.poison(block);
                        } else {
                            v.put(block, phys, e.mask_of(k as u32));
                        }
                    }
                }
            }
        }
    }

    /// Ensures the log can hold everything up to virtual block `end`: moves the tail over clean
    /// batches, and waits for destage while everything in the way is dirty (backpressure).
    pub(crate) fn make_space(&self, w: &mut WriterState, end: u64) -> Result<(), CacheError> {
        let mut throttled = false;
        while end - w.tail > self.log_blocks() {
            let limit = self.destaged_virt.load(Ordering::Acquire);
            if w.tail < limit {
                // Free more than needed at once, to amortise the locks and header reads.
                let slack = self.log_blocks() / 32;
                let target = (end + slack).saturating_sub(self.log_blocks()).min(limit);
                self.evict_until(w, target.max(w.tail + 1).min(limit))?;
                continue;
            }
            self.check_failed()?;
            if self.stopping.load(Ordering::SeqCst) {
                return Err(CacheError::ShuttingDown);
            }
            if !throttled {
                throttled = true;
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            self.notify_work();
            let mut g = self.space_lock.lock();
            if self.destaged_virt.load(Ordering::Acquire) <= w.tail {
                self.space_cv.wait_for(&mut g, Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Moves the tail forward over whole batches until it reaches at least `target` (which
    /// is at most the destage point), forgetting the index entries that point into them.
    fn evict_until(&self, w: &mut WriterState, target: u64) -> Result<(), CacheError> {
        let mut doomed: Vec<(VolumeId, CacheBlock, u32)> = Vec::new();
        let limit = self.destaged_virt.load(Ordering::Acquire);
        let read = self.read_batches(w.tail, w.tail_seq, target.min(limit), u64::MAX, 64)?;
        for (h, _, _) in &read.batches {
            for e in h.entries.iter().filter(|e| e.kind == EntryKind::Write) {
                doomed.extend(self.entry_blocks(h.virt, e).map(|(b, p)| (e.volume, b, p)));
            }
        }
        let (tail, seq) = read.next;
        self.recycle(read);
        if tail <= w.tail {
            return Err(self.fail(format!("eviction made no progress at block {}", w.tail)));
        }
        {
            let _readers_out = self.reclaim.write();
            let mut idx = self.index.write();
            for (vol, block, phys) in &doomed {
                if let Some(v) = idx.volumes.get_mut(vol) {
                    v.evict(*block, *phys);
                }
            }
        }
        self.counters
            .evicted_blocks
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
        w.tail = tail;
        w.tail_seq = seq;
        self.tail_virt.store(tail, Ordering::Release);
        // The new tail is visible before any write into the space it frees (the readers that
        // hold no lock check the tail after their device read).
        std::sync::atomic::fence(Ordering::SeqCst);
        Ok(())
    }
}
