//! Threads around an [`Engine`]: a writer and a destager per partition, a pool of readers, and
//! [`CacheVolume`], the asynchronous [`BlockDevice`] that front ends use.
//!
//! * **Writer** (one per partition): takes every request queued, commits them as one group
//!   (one device write and one sync per batch), then completes them. While it syncs, new
//!   requests queue up and form the next group: the deeper the queue, the fewer syncs per write.
//! * **Destager** (one per partition): sleeps until there is dirty data; then runs destage
//!   rounds, each first paying the shared [`RateLimiter`] unless the partition's dirty fill is
//!   above the high watermark, where it runs uncapped so writers are never stalled for a cap.
//!   A failed round is retried with exponential backoff (the backend may be down).
//! * **Readers**: blocking reads (cache device and backend) run on a pool so that many can be
//!   in flight at once.
//! * **Cache hits without a thread**: where the cache device is a file or block device, the
//!   kernel has io_uring and the service starts inside a tokio runtime, a read held whole by
//!   consecutive cached blocks goes to the device through a [`Ring`] from the caller's task, and
//!   its completion comes back through the runtime's reactor (the ring's eventfd), with no
//!   hand-off to the reader pool. Whatever else a read needs (the backend, zeroes, partial
//!   blocks) stays on the pool. Which path serves hits is logged at start.
//!
//! * **Journal writes without a thread**: with the ring, and unless `ring_writes` is off, the
//!   caller's task stages the next group itself and hands its durable write to the ring; the
//!   reaper (or a waiting writer's poll) finishes it, answers the group and stages the next
//!   (`ring_writer`). Groups that need blocking work go to the writer thread in turn.
//!
//! Nothing polls: idle threads block on a channel or a condition variable, and the ring's
//! reaper task waits on its eventfd.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use alcubierre_block::{BlockDevice, IoFuture};
use alcubierre_types::{BlockCount, BlockSize, ByteSize, Lba, VolumeGeometry, VolumeId};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use futures::FutureExt;
use tokio::sync::oneshot;

use alcubierre_io::AlignedBuf;

use crate::engine::Engine;
use crate::error::CacheError;
use crate::format::BLOCK;
use crate::partition::{Op, Partition};
use crate::reaper::{open_ring, start_reaper, RingReads};
pub use crate::requests::WriteCallback;
use crate::requests::{Call, Done, WriteReq, WriterMsg};
use crate::ring_writer::RingWriter;
use alcubierre_block::RateLimiter;
use alcubierre_types::LogPos;

/// How the service runs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Destage rate limit shared by every destager of the node; `None` for uncapped.
    pub destage_limit: Option<Arc<RateLimiter>>,
    /// Dirty fill (0..1) of a partition above which its destage ignores the limit.
    pub high_watermark: f64,
    /// Bytes of journal data per destage round (at most).
    pub round_bytes: u64,
    /// Dirty bytes that start a round at once; less waits up to `max_dirty_age` so that rounds
    /// (each a backend flush and a checkpoint) are not spent on a few blocks.
    pub min_round_bytes: u64,
    /// How long dirty data may wait for `min_round_bytes` to build up.
    pub max_dirty_age: Duration,
    /// Reader threads.
    pub read_threads: usize,
    /// Most requests committed as one group.
    pub max_group: usize,
    /// Serve cache hits through io_uring where it can (see the module documentation); `false`
    /// keeps every read on the reader pool.
    pub ring_reads: bool,
    /// Write the journal through io_uring where it can (with `ring_reads`, which sets the ring
    /// up); `false` keeps every commit on the writer thread.
    pub ring_writes: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            // SPEC §2: 50 MB/s per active node by default.
            destage_limit: Some(Arc::new(RateLimiter::new(50_000_000, 4 << 20))),
            high_watermark: 0.75,
            round_bytes: 4 << 20,
            min_round_bytes: 1 << 20,
            max_dirty_age: Duration::from_millis(200),
            read_threads: 16,
            max_group: 128,
            ring_reads: true,
            ring_writes: true,
        }
    }
}

struct ReadReq {
    volume: VolumeId,
    lba: Lba,
    count: BlockCount,
    done: oneshot::Sender<Result<Bytes, CacheError>>,
}

/// A running cache: the engine plus its threads.
pub struct CacheService {
    engine: Arc<Engine>,
    writers: Vec<Sender<WriterMsg>>,
    reads: Sender<Option<ReadReq>>,
    threads: Vec<JoinHandle<()>>,
    read_threads: usize,
    ring: Option<RingReads>,
    reaper: Option<tokio::task::JoinHandle<()>>,
    /// Each partition's journal writer on the ring, where it runs there.
    ring_writers: Vec<Option<Arc<RingWriter>>>,
}

impl CacheService {
    /// Starts the threads.
    pub fn start(engine: Arc<Engine>, cfg: ServiceConfig) -> Self {
        let mut threads = Vec::new();
        let mut writers = Vec::new();
        let mut ring_writers = Vec::new();
        let open = cfg.ring_reads.then(|| open_ring(&engine)).flatten();
        let write_ring = open
            .as_ref()
            .filter(|o| cfg.ring_writes && o.ring.writes())
            .map(|o| o.ring.clone());
        for p in engine.partitions() {
            p.notify_bytes
                .store(cfg.min_round_bytes, std::sync::atomic::Ordering::Relaxed);
            let (tx, rx) = crossbeam_channel::unbounded();
            let rw = write_ring.as_ref().map(|ring| {
                Arc::new(RingWriter::new(
                    p.clone(),
                    ring.clone(),
                    tx.clone(),
                    cfg.max_group,
                ))
            });
            if let Some(rw) = &rw {
                *p.committer.write() =
                    Some(Arc::downgrade(rw) as std::sync::Weak<dyn crate::partition::Committer>);
            }
            writers.push(tx);
            let part = p.clone();
            let max_group = cfg.max_group;
            let thread_rw = rw.as_ref().map(Arc::downgrade);
            ring_writers.push(rw);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cache-writer-{}", p.id))
                    .spawn(move || writer_loop(&part, &rx, max_group, thread_rw))
                    .expect("spawn writer"),
            );
            let part = p.clone();
            let engine2 = engine.clone();
            let cfg2 = cfg.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cache-destage-{}", p.id))
                    .spawn(move || destage_loop(&engine2, &part, &cfg2))
                    .expect("spawn destager"),
            );
        }
        let (rtx, rrx) = crossbeam_channel::unbounded::<Option<ReadReq>>();
        for i in 0..cfg.read_threads.max(1) {
            let rx = rrx.clone();
            let engine2 = engine.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cache-reader-{i}"))
                    .spawn(move || {
                        while let Ok(Some(r)) = rx.recv() {
                            let _ = r.done.send(engine2.read(r.volume, r.lba, r.count));
                        }
                    })
                    .expect("spawn reader"),
            );
        }
        let (ring, reaper) = match open {
            Some(open) => {
                let on_ring: Vec<Arc<RingWriter>> =
                    ring_writers.iter().flatten().cloned().collect();
                tracing::info!(device = %engine.partitions()[0].device(),
                    journal_writes = if on_ring.is_empty() { "writer threads" } else { "io_uring" },
                    "cache hits are read through io_uring");
                let (r, t) = start_reaper(open, on_ring);
                (Some(r), Some(t))
            }
            None => (None, None),
        };
        Self {
            engine,
            writers,
            reads: rtx,
            threads,
            read_threads: cfg.read_threads.max(1),
            ring,
            reaper,
            ring_writers,
        }
    }

    /// Whether journal writes go through io_uring.
    pub fn ring_writes(&self) -> bool {
        self.ring_writers.iter().any(Option::is_some)
    }

    /// Reads served through io_uring so far; `None` when hits go to the reader threads.
    pub fn ring_reads(&self) -> Option<u64> {
        self.ring
            .as_ref()
            .map(|r| r.served.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// A block device for an attached volume.
    pub fn volume(&self, volume: VolumeId) -> Result<CacheVolume, CacheError> {
        self.volumes().volume(volume)
    }

    /// A handle that opens volumes of this service from elsewhere (e.g. a reconciler task),
    /// while the service itself stays with its owner for [`CacheService::shutdown`].
    pub fn volumes(&self) -> VolumeOpener {
        VolumeOpener {
            engine: self.engine.clone(),
            writers: self.writers.clone(),
            reads: self.reads.clone(),
            ring: self.ring.clone(),
            ring_writers: self.ring_writers.clone(),
        }
    }

    /// Stops the threads after the requests already queued; later requests fail with
    /// "shutting down". Dirty data stays in the journal (it is durable) for the next open.
    pub fn shutdown(self) {
        for p in self.engine.partitions() {
            p.stop();
        }
        // Requests queued on the ring are finished; later ones fail with "shutting down", and
        // direct commits (`Partition::commit_tagged`) go back to the calling thread (which
        // reaps the ring itself should a batch still be in flight).
        for rw in self.ring_writers.iter().flatten() {
            rw.stop();
        }
        for w in &self.writers {
            let _ = w.send(WriterMsg::Stop);
        }
        for _ in 0..self.read_threads {
            let _ = self.reads.send(None);
        }
        for t in self.threads {
            let _ = t.join();
        }
        // No read enters the ring from here on; those in flight complete (the reaper's guard
        // reaps them when it ends, and their own polls reap).
        if let Some(r) = &self.ring {
            *r.stopped.write() = true;
        }
        if let Some(reaper) = self.reaper {
            reaper.abort();
        }
    }
}

fn writer_loop(
    part: &Partition,
    rx: &Receiver<WriterMsg>,
    max_group: usize,
    ring: Option<std::sync::Weak<RingWriter>>,
) {
    Partition::mark_writer_thread();
    let mut ops = Vec::with_capacity(max_group);
    let mut tags = Vec::with_capacity(max_group);
    let mut dones = Vec::with_capacity(max_group);
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { return };
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Req(r) => {
                    ops.push(r.op);
                    tags.push(r.tag);
                    dones.push(r.done);
                }
                WriterMsg::Group(o, t, d) => {
                    // The ring's writer waits for this group; it answers it in turn.
                    let results = part.commit_now(&o, &t);
                    let answers = d.into_iter().zip(results).collect();
                    match ring.as_ref().and_then(std::sync::Weak::upgrade) {
                        Some(rw) => rw.thread_done(answers),
                        None => answer(answers),
                    }
                    continue;
                }
                WriterMsg::Stop => stop = true,
            }
            if ops.len() < max_group && !stop {
                next = rx.try_recv().ok();
            }
        }
        if ops.is_empty() {
            continue;
        }
        let results = part.commit_now(&ops, &tags);
        ops.clear();
        tags.clear();
        answer(dones.drain(..).zip(results).collect());
    }
}

/// Answers a committed group: replies, then callbacks in order (the last one told so).
fn answer(answers: Vec<(Done, Result<(), CacheError>)>) {
    let mut calls = Vec::new();
    for (done, r) in answers {
        match done {
            Done::Reply(tx) => {
                let _ = tx.send(r);
            }
            Done::Call(f) => calls.push((f, r)),
        }
    }
    let n = calls.len();
    for (i, (f, r)) in calls.into_iter().enumerate() {
        f.call(r, i + 1 == n);
    }
}

fn destage_loop(engine: &Engine, part: &Partition, cfg: &ServiceConfig) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if part.is_failed() || part.stopping() {
            return;
        }
        // A primary that became a follower gives its backend claim up at once, not at the
        // next round: the new primary's claim would otherwise fence this node off.
        if part.has_claims_to_give_up() {
            part.give_claims_up(&**engine.backend());
        }
        if part.dirty_blocks() == 0 {
            part.wait_for_work(Duration::from_secs(5));
            continue;
        }
        let fill = part.dirty_blocks() as f64 / part.log_blocks() as f64;
        let capped = fill < cfg.high_watermark;
        // Below the high watermark the destage rate is capped, small rounds included (they
        // used to go regardless of the cap: a trickle of writes was destaged at any rate).
        if let (true, Some(limit)) = (capped, &cfg.destage_limit) {
            let d = limit.delay();
            if !d.is_zero() {
                part.wait_for_work(d.min(Duration::from_millis(200)));
                continue;
            }
        }
        if capped && part.dirty_blocks() * 4096 < cfg.min_round_bytes {
            // A little dirty data: give it time to grow into a round (woken early if it does).
            part.wait_for_work(cfg.max_dirty_age);
            if part.dirty_blocks() * 4096 < cfg.min_round_bytes && !part.stopping() {
                let _ = run_round(engine, part, cfg, capped, &mut backoff);
            }
            continue;
        }
        if run_round(engine, part, cfg, capped, &mut backoff).is_err() {
            return;
        }
    }
}

/// One destage round; `Err` only when the partition failed and the destager must stop.
fn run_round(
    engine: &Engine,
    part: &Partition,
    cfg: &ServiceConfig,
    capped: bool,
    backoff: &mut Duration,
) -> Result<(), ()> {
    let gen = part.hold_gen.load(std::sync::atomic::Ordering::Acquire);
    match part.destage_round(&**engine.backend(), cfg.round_bytes) {
        Ok(stats) => {
            *backoff = Duration::from_millis(50);
            if let (true, Some(limit)) = (capped, &cfg.destage_limit) {
                limit.spend(stats.bytes);
            }
            if stats.batches == 0 {
                // Dirty but nothing can go: a follower's writes wait for the primary's release
                // (or a new role, or a drop). Sleep until one of those, not woken by every
                // commit, which could not help; the round runs again within 1 s regardless
                // (for time-based holds: a primary's lease or its fence's start time).
                part.wait_for_unhold(gen, Duration::from_secs(1));
            }
            Ok(())
        }
        Err(CacheError::DeviceFailed { .. }) => Err(()),
        Err(e) => {
            tracing::warn!(partition = part.id, error = %e, retry_in = ?*backoff,
                "destage failed; will retry");
            part.wait_for_work(*backoff);
            *backoff = (*backoff * 2).min(Duration::from_secs(5));
            Ok(())
        }
    }
}

/// The future of a request handed to a service thread: its reply, or "shutting down" if the
/// thread stopped before answering.
/// A cache error names its volume's block for a `block_size`-byte LBA.
/// With `drive` (a write queued on the ring's journal writer), each poll that finds no reply yet
/// reaps the ring and finishes what completed, so the write completes for a caller that polls
/// without the reactor (a busy-polling task).
fn reply<T: Send + 'static>(
    mut rx: oneshot::Receiver<Result<T, CacheError>>,
    block_size: BlockSize,
    drive: Option<Arc<RingWriter>>,
) -> IoFuture<T> {
    async move {
        let r = std::future::poll_fn(|cx| {
            use std::future::Future;
            let polled = std::pin::Pin::new(&mut rx).poll(cx);
            match &drive {
                Some(rw) if polled.is_pending() => {
                    rw.drive();
                    std::pin::Pin::new(&mut rx).poll(cx)
                }
                _ => polled,
            }
        })
        .await;
        match r {
            Ok(r) => r.map_err(|e| e.into_block(block_size)),
            Err(_) => Err(CacheError::ShuttingDown.into_block(block_size)),
        }
    }
    .boxed()
}

/// Opens [`CacheVolume`]s of a running [`CacheService`]; cheap to clone.
#[derive(Clone)]
pub struct VolumeOpener {
    engine: Arc<Engine>,
    writers: Vec<Sender<WriterMsg>>,
    reads: Sender<Option<ReadReq>>,
    ring: Option<RingReads>,
    ring_writers: Vec<Option<Arc<RingWriter>>>,
}

impl VolumeOpener {
    /// A block device for an attached volume.
    pub fn volume(&self, volume: VolumeId) -> Result<CacheVolume, CacheError> {
        let geometry = self.engine.geometry(volume)?;
        let i = self.engine.partition_of(volume).id as usize;
        Ok(CacheVolume {
            volume,
            geometry,
            engine: self.engine.clone(),
            writer: self.writers[i].clone(),
            ring_writer: self.ring_writers[i].clone(),
            reads: self.reads.clone(),
            ring: self.ring.clone(),
        })
    }
}

/// One attached volume as an asynchronous [`BlockDevice`].
#[derive(Clone)]
pub struct CacheVolume {
    volume: VolumeId,
    geometry: VolumeGeometry,
    engine: Arc<Engine>,
    writer: Sender<WriterMsg>,
    /// The partition's journal writer on the ring, when writes go there.
    ring_writer: Option<Arc<RingWriter>>,
    reads: Sender<Option<ReadReq>>,
    ring: Option<RingReads>,
}

impl CacheVolume {
    /// The volume's id.
    pub fn id(&self) -> VolumeId {
        self.volume
    }

    /// A replicated write: durable with its replication tag (see [`Engine::replication_log`]).
    pub fn write_tagged(&self, lba: Lba, data: Bytes, tag: LogPos) -> IoFuture<()> {
        self.submit_tagged(self.engine.write_op(self.volume, lba, data), tag)
    }

    /// Replicated write zeroes / unmap.
    pub fn zero_tagged(&self, lba: Lba, count: BlockCount, tag: LogPos) -> IoFuture<()> {
        self.submit_tagged(self.engine.zero_op(self.volume, lba, count), tag)
    }

    /// A replicated write or write zeroes (`data: None`, `count` blocks), completed by `done`
    /// on the writer thread (see [`WriteCallback`]) rather than through a future, which saves a
    /// task wake-up per write. A request that fails its checks, or finds the service stopped,
    /// returns the error here and `done` is never called (so a caller may hold locks that
    /// `done` takes).
    pub fn submit_with(
        &self,
        lba: Lba,
        data: Option<Bytes>,
        count: BlockCount,
        tag: LogPos,
        done: WriteCallback,
    ) -> Result<(), CacheError> {
        let op = match data {
            Some(data) => self.engine.write_op(self.volume, lba, data),
            None => self.engine.zero_op(self.volume, lba, count),
        }?;
        let req = WriteReq {
            op,
            tag,
            done: Done::Call(Call(Some(done))),
        };
        match self.send(req) {
            Ok(()) => Ok(()),
            Err(WriteReq {
                done: Done::Call(mut c),
                ..
            }) => {
                c.0.take(); // not called: the caller hears of it here
                Err(CacheError::ShuttingDown)
            }
            Err(_) => Err(CacheError::ShuttingDown),
        }
    }

    /// Queues `req` on the ring's journal writer or the writer thread; `Err` gives it back
    /// when the service has stopped.
    fn send(&self, req: WriteReq) -> Result<(), WriteReq> {
        match &self.ring_writer {
            Some(rw) => rw.submit(req),
            None => self
                .writer
                .send(WriterMsg::Req(req))
                .map_err(|e| match e.0 {
                    WriterMsg::Req(r) => r,
                    _ => unreachable!("a request was sent"),
                }),
        }
    }

    fn submit(&self, op: Result<Op, CacheError>) -> IoFuture<()> {
        self.submit_tagged(op, LogPos::default())
    }

    fn submit_tagged(&self, op: Result<Op, CacheError>, tag: LogPos) -> IoFuture<()> {
        let op = match op {
            Ok(op) => op,
            Err(e) => return self.failed(e),
        };
        let (tx, rx) = oneshot::channel();
        let req = WriteReq {
            op,
            tag,
            done: Done::Reply(tx),
        };
        if self.send(req).is_err() {
            return self.failed(CacheError::ShuttingDown);
        }
        reply(rx, self.block_size(), self.ring_writer.clone())
    }

    fn block_size(&self) -> BlockSize {
        self.geometry.block_size()
    }

    /// A cache hit read through io_uring (see the module documentation), or `None` when this
    /// read goes to the reader pool.
    fn read_by_ring(&self, lba: Lba, count: BlockCount) -> Option<IoFuture<Bytes>> {
        // A ring with its completion queue half full sends reads to the pool meanwhile.
        let rr = self.ring.as_ref().filter(|r| r.ring.has_room())?;
        let (part, run) = self.engine.cached_run(self.volume, lba, count)?;
        let read = {
            let stopped = rr.stopped.read();
            if *stopped {
                return None;
            }
            rr.ring
                .read_at(AlignedBuf::zeroed(run.blocks * BLOCK), run.dev_offset)
        };
        let (me, served) = (self.clone(), rr.served.clone());
        Some(
            async move {
                match read.await {
                    Ok(buf) if part.run_still_valid(&run) => {
                        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(if run.skip == 0 && run.len == buf.len() {
                            Bytes::from_owner(buf)
                        } else {
                            Bytes::copy_from_slice(&buf[run.skip..run.skip + run.len])
                        })
                    }
                    // The writer reused the log space while it was read (the cache went
                    // round meanwhile): read again the general way.
                    Ok(_) => me.read_by_pool(lba, count).await,
                    // The pool reads again and reports a device error as before (a ring's own
                    // trouble, such as a short or interrupted read, is not the device's).
                    Err(e) => {
                        tracing::debug!(error = %e, device = %part.device(),
                            "a read through io_uring failed; reading again on the pool");
                        me.read_by_pool(lba, count).await
                    }
                }
            }
            .boxed(),
        )
    }

    /// A read on the reader pool.
    fn read_by_pool(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        let (tx, rx) = oneshot::channel();
        let req = ReadReq {
            volume: self.volume,
            lba,
            count,
            done: tx,
        };
        if self.reads.send(Some(req)).is_err() {
            return self.failed(CacheError::ShuttingDown);
        }
        reply(rx, self.block_size(), None)
    }

    /// A request that failed before it was sent.
    fn failed<T: Send + 'static>(&self, e: CacheError) -> IoFuture<T> {
        futures::future::ready(Err(e.into_block(self.block_size()))).boxed()
    }
}

impl BlockDevice for CacheVolume {
    fn geometry(&self) -> VolumeGeometry {
        self.engine.geometry(self.volume).unwrap_or(self.geometry)
    }

    fn max_transfer(&self) -> ByteSize {
        self.engine.max_transfer()
    }

    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        match self.read_by_ring(lba, count) {
            Some(f) => f,
            None => self.read_by_pool(lba, count),
        }
    }

    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        self.submit(self.engine.write_op(self.volume, lba, data))
    }

    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.submit(self.engine.zero_op(self.volume, lba, count))
    }

    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.submit(self.engine.zero_op(self.volume, lba, count))
    }

    fn flush(&self) -> IoFuture<()> {
        // Every acknowledged write is already durable (crate invariant 1); report a failed
        // device so hosts learn of it.
        let r = self
            .engine
            .partition_of(self.volume)
            .check_failed()
            .map_err(|e| e.into_block(self.block_size()));
        futures::future::ready(r).boxed()
    }
}
