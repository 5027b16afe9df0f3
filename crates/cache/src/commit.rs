//! Writing a batch to the journal: on the committing thread (`write_batch`, the blocking path),
//! or staged for the io_uring journal writer (`stage`, then `staged_written` once the device
//! write completed; see `ring_writer`).
//!
//! Both keep the journal's rule: one batch is written at a time, at the head, and the head moves
//! past it only once it is durable, so that a batch on the device means every batch before it is
//! durable too (recovery reads the log until the first batch that is not there). A staged batch
//! holds the writer's place (`WriterState::ring_batch`) without its lock: nothing else commits
//! until it is finished, while readers of the head, the tail and the index go on (the batch is in
//! none of them before it is durable).

use std::sync::atomic::Ordering;

use alcubierre_io::AlignedBuf;
use alcubierre_types::LogPos;

use crate::error::CacheError;
use crate::format::{BatchHeader, Entry, BLOCK, MAX_ENTRIES, SECTORS_PER_BLOCK as SPB};
use crate::partition::{Op, Partition, WriterState, SECTOR};

thread_local! {
    static ON_WRITER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A batch staged for a device write that its owner makes (through the ring).
pub(crate) struct Staged {
    at: u64,
    header: BatchHeader,
    /// The batch's bytes (header block, then data), taken from the writer's buffer; the write
    /// owns it until it completes.
    buf: Option<AlignedBuf>,
    /// The writer buffer's length, restored when the buffer comes back.
    full_len: usize,
}

impl Staged {
    /// Where on the cache device the batch goes.
    pub(crate) fn dev_offset(&self, part: &Partition) -> u64 {
        part.dev_offset(self.at)
    }

    /// The batch's bytes, to write (once).
    pub(crate) fn take_buf(&mut self) -> AlignedBuf {
        self.buf
            .take()
            .expect("a staged batch's buffer is taken once")
    }
}

/// What staging a group of ops gave.
pub(crate) enum Staging {
    /// Every op answered without a device write (failed checks, a failed partition).
    Answered(Vec<Result<(), CacheError>>),
    /// One batch to write; the ops already answered have `Some` (failed checks), the others
    /// are in the batch.
    Write(Staged, Vec<Option<Result<(), CacheError>>>),
    /// The group needs the blocking path ([`Partition::commit_now`]): a partial block to merge
    /// with data read from the device or the backend, space to free first, or more than one
    /// batch. Nothing was changed.
    Blocking,
}

impl Partition {
    /// Marks the calling thread as a partition's writer thread (see
    /// [`Partition::on_writer_thread`]).
    pub(crate) fn mark_writer_thread() {
        ON_WRITER_THREAD.with(|f| f.set(true));
    }

    /// Whether this is a partition's writer thread: a direct commit there (from a callback it
    /// runs once the ring is gone) commits inline, as it always did, instead of waiting in the
    /// ring writer's queue for this very thread.
    pub(crate) fn on_writer_thread() -> bool {
        ON_WRITER_THREAD.with(std::cell::Cell::get)
    }

    /// Writes and syncs the batch whose data is in `w.buf`, then applies it to the index.
    pub(crate) fn write_batch(
        &self,
        w: &mut WriterState,
        entries: &[Entry],
        data_blocks: u32,
    ) -> Result<(), CacheError> {
        let need = 1 + u64::from(data_blocks);
        let at = self.batch_place(w.head, need);
        self.make_space(w, at + need)?;
        let header = self.seal_batch(w, at, entries, data_blocks);
        let len = need as usize * BLOCK;
        // Everything written before is durable already (earlier batches, checkpoints), so a
        // write durable on its own (FUA) is enough.
        self.medium
            .write_durable(&w.buf[..len], self.dev_offset(at))
            .map_err(|e| self.fail(format!("journal write at block {at}: {e}")))?;
        self.batch_written(w, at, header);
        Ok(())
    }

    /// Where a batch of `need` blocks goes: at the head, or at the start of the next lap when
    /// it would cross the end of the log.
    fn batch_place(&self, head: u64, need: u64) -> u64 {
        if self.phys(head) + need > self.log_blocks() {
            self.next_lap(head)
        } else {
            head
        }
    }

    /// The header of the batch at `at`, encoded into the writer's buffer before its data.
    fn seal_batch(
        &self,
        w: &mut WriterState,
        at: u64,
        entries: &[Entry],
        data_blocks: u32,
    ) -> BatchHeader {
        let header = BatchHeader {
            partition: self.id,
            nonce: self.nonce,
            seq: w.head_seq,
            virt: at,
            data_blocks,
            entries: entries.to_vec(),
        };
        header.encode_into(&mut w.buf[..BLOCK]);
        header
    }

    /// The batch at `at` is durable: into the index, and the head moves past it.
    fn batch_written(&self, w: &mut WriterState, at: u64, header: BatchHeader) {
        let need = 1 + u64::from(header.data_blocks);
        self.apply(at, &header, None);
        self.keep_follower_header(header);
        let was_clean = w.head == self.destaged_virt.load(Ordering::Acquire);
        w.head = at + need;
        w.head_seq += 1;
        self.head_virt.store(w.head, Ordering::Release);
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.log_blocks_written.fetch_add(need, Ordering::Relaxed);
        // Wake the destager when dirty data appears, and when a round's worth has built up;
        // in between it sleeps on its own timer, so small writes do not wake it each time.
        if was_clean
            || self.dirty_blocks() * BLOCK as u64 >= self.notify_bytes.load(Ordering::Relaxed)
        {
            self.notify_work();
        }
    }

    /// Whether `op` is built without reading anything: whole blocks, or entries without data.
    pub(crate) fn builds_without_reads(op: &Op) -> bool {
        match op {
            Op::Write { sector, data, .. } => {
                sector.0.is_multiple_of(SPB) && (data.len() as u64 / SECTOR).is_multiple_of(SPB)
            }
            Op::Release { .. } | Op::Drop { .. } => true,
            Op::Zero { .. } => false,
        }
    }

    /// Stages `ops` (with `tags`) as one batch for a device write made elsewhere, when that
    /// needs no blocking work (see [`Staging::Blocking`]). Until [`Partition::staged_written`]
    /// finishes a staged batch, nothing else commits.
    pub(crate) fn stage(&self, ops: &[Op], tags: &[LogPos]) -> Staging {
        let mut w = self.writer.lock();
        while w.ring_batch {
            self.writer_cv.wait(&mut w);
        }
        if self.is_failed() {
            return Staging::Answered(ops.iter().map(|_| self.check_failed()).collect());
        }
        // Decide before anything changes.
        let checks: Vec<Result<(), CacheError>> = ops.iter().map(|op| self.check_op(op)).collect();
        let (mut entries, mut data) = (0usize, 0u32);
        for (op, c) in ops.iter().zip(&checks) {
            if c.is_ok() {
                if !Self::builds_without_reads(op) {
                    return Staging::Blocking;
                }
                let (e, d) = self.cost(op);
                entries += e;
                data += d;
            }
        }
        if entries == 0 {
            return Staging::Answered(checks);
        }
        if entries > MAX_ENTRIES || data > self.max_batch_data {
            return Staging::Blocking;
        }
        let need = 1 + u64::from(data);
        let at = self.batch_place(w.head, need);
        if at + need - w.tail > self.log_blocks() {
            return Staging::Blocking; // space to free first: eviction reads the device
        }
        let mut results: Vec<Option<Result<(), CacheError>>> = Vec::with_capacity(ops.len());
        let mut batch: Vec<Entry> = Vec::new();
        let mut data_blocks = 0u32;
        for ((op, tag), check) in ops.iter().zip(tags).zip(checks) {
            if check.is_err() {
                results.push(Some(check));
                continue;
            }
            match self.build(&mut w, op, *tag, &batch, data_blocks) {
                Ok(b) => {
                    batch.extend(b.entries);
                    data_blocks += b.data_blocks;
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        debug_assert_eq!(data_blocks, data, "a whole-block write builds as it costs");
        self.counters
            .ops
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        let header = self.seal_batch(&mut w, at, &batch, data_blocks);
        let full_len = w.buf.len();
        let spare = w
            .spare
            .take()
            .unwrap_or_else(|| AlignedBuf::zeroed(full_len));
        let mut buf = std::mem::replace(&mut w.buf, spare);
        buf.truncate((1 + data_blocks as usize) * BLOCK);
        w.ring_batch = true;
        Staging::Write(
            Staged {
                at,
                header,
                buf: Some(buf),
                full_len,
            },
            results,
        )
    }

    /// Finishes a staged batch once its device write completed with `outcome` (`buf`: the
    /// batch's bytes, back from the write). A write the ring itself could not make (interrupted,
    /// short, refused for lack of resources) is made again, whole, on this thread as the
    /// blocking path makes it; any other error is the device's and fails the partition
    /// (fail-stop, as on the blocking path), as does a second failure.
    pub(crate) fn staged_written(
        &self,
        staged: Staged,
        outcome: std::io::Result<()>,
        buf: Option<AlignedBuf>,
    ) -> Result<(), CacheError> {
        let Staged {
            at,
            header,
            full_len,
            ..
        } = staged;
        let mut w = self.writer.lock();
        debug_assert!(w.ring_batch, "a staged batch is in flight");
        let r = match (outcome, &buf) {
            (Ok(()), _) => Ok(()),
            (Err(e), Some(b)) if ring_trouble(&e) => {
                tracing::warn!(partition = self.id, error = %e,
                    "a journal write through io_uring failed; writing it again");
                self.medium
                    .write_durable(b, self.dev_offset(at))
                    .map_err(|e| self.fail(format!("journal write at block {at}: {e}")))
            }
            (Err(e), _) => Err(self.fail(format!("journal write at block {at}: {e}"))),
        };
        if let Some(mut b) = buf {
            b.set_len(full_len);
            w.spare = Some(b);
        }
        w.ring_batch = false;
        self.writer_cv.notify_all();
        r?;
        self.batch_written(&mut w, at, header);
        Ok(())
    }

    /// Commits `ops` as the ring's journal writer does (staged, written as one durable device
    /// write, finished), with the medium making the write: the staged path under a medium's
    /// fault models (the power-loss tests). A group that needs blocking work commits as the
    /// writer thread would.
    #[doc(hidden)]
    pub fn commit_staged(&self, ops: &[Op], epoch: u64) -> Vec<Result<(), CacheError>> {
        let tags = vec![LogPos::new(epoch, 0); ops.len()];
        match self.stage(ops, &tags) {
            Staging::Answered(r) => r,
            Staging::Blocking => self.commit_now(ops, &tags),
            Staging::Write(mut staged, results) => {
                let buf = staged.take_buf();
                let outcome = self.medium.write_durable(&buf, staged.dev_offset(self));
                let r = self.staged_written(staged, outcome, Some(buf));
                if r.is_ok() {
                    self.counters.ring_batches.fetch_add(1, Ordering::Relaxed);
                }
                results
                    .into_iter()
                    .map(|pre| pre.unwrap_or_else(|| self.batch_result(&r)))
                    .collect()
            }
        }
    }
}

/// Whether a write's error is io_uring's own (the request did not reach the device whole), not
/// the device's.
fn ring_trouble(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::UnexpectedEof
    ) || matches!(
        e.raw_os_error(),
        Some(libc::ECANCELED | libc::EBUSY | libc::ENOMEM)
    )
}
