//! The engine for one cache device: format, open (recovery), volumes, and a synchronous API
//! that the threaded service ([`crate::CacheService`]) and the deterministic tests both use.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use alcubierre_backend::Backend;
use alcubierre_block::{check_payload, check_range, BlockError};
use alcubierre_io::{AlignedBuf, Medium};
use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry, VolumeId};
use bytes::Bytes;
use parking_lot::RwLock;

use crate::destage::RoundStats;
use crate::error::CacheError;
use crate::format::{
    checkpoint_blocks, Checkpoint, PartitionExtent, Superblock, BLOCK, MAX_PARTITIONS,
};
use crate::partition::{Op, Partition};
use crate::recovery::PartitionReport;
use alcubierre_types::{LogPos, SeqNo};

/// Layout choices made when a device is formatted.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// Independent journals on the device (default 1).
    pub partitions: u32,
    /// Most data blocks (4 KiB) in one batch; the longest write is one block less (default
    /// 257: 1 MiB writes, even unaligned).
    pub max_batch_data_blocks: u32,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            partitions: 1,
            max_batch_data_blocks: 257,
        }
    }
}

/// What recovery found when the engine opened.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// One report per partition.
    pub partitions: Vec<PartitionReport>,
}

impl RecoveryReport {
    /// Sum of the partitions' replayed batches.
    pub fn batches(&self) -> u64 {
        self.partitions.iter().map(|p| p.batches).sum()
    }
    /// Sum of the partitions' poisoned blocks.
    pub fn poisoned_blocks(&self) -> u64 {
        self.partitions.iter().map(|p| p.poisoned_blocks).sum()
    }
    /// Sum of torn batches discarded.
    pub fn torn_batches(&self) -> u64 {
        self.partitions.iter().map(|p| p.torn_batches).sum()
    }
}

/// Counters and gauges of an engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Log capacity over all partitions, bytes.
    pub capacity_bytes: u64,
    /// Log space holding data (dirty and clean), bytes.
    pub used_bytes: u64,
    /// Log space not yet destaged, bytes.
    pub dirty_bytes: u64,
    /// Requests committed.
    pub ops: u64,
    /// Batches written (group commits).
    pub batches: u64,
    /// Durable device writes on the write path (one per batch).
    pub syncs: u64,
    /// Batches staged and written through io_uring (the others by the writer thread).
    pub ring_batches: u64,
    /// Bytes written to the log (headers included).
    pub log_bytes_written: u64,
    /// Bytes written to the backend by destage.
    pub destaged_bytes: u64,
    /// Blocks destage passed over because the journal holds a newer version of them (or a
    /// newer zeroing): only a block's newest version goes to the backend.
    pub superseded_blocks: u64,
    /// Destage rounds completed.
    pub destage_rounds: u64,
    /// Destage rounds failed by the backend.
    pub backend_errors: u64,
    /// Backend images claimed by this node as a volume's primary (`Backend::claim`).
    pub claims: u64,
    /// Claims lost: another node claimed the image, fencing this one off it.
    pub claims_lost: u64,
    /// Commits that had to wait for destage to free space.
    pub throttled: u64,
    /// Clean blocks evicted.
    pub evicted_blocks: u64,
    /// Blocks read from the cache.
    pub read_hit_blocks: u64,
    /// Blocks read from the backend.
    pub read_miss_blocks: u64,
    /// Cached blocks in the index.
    pub index_blocks: u64,
    /// Partitions that failed (fail-stop).
    pub failed_partitions: u64,
    /// Destage time reading the cache device, nanoseconds.
    pub destage_read_ns: u64,
    /// Destage time writing and flushing the backend, nanoseconds.
    pub destage_backend_ns: u64,
    /// Destage time writing checkpoints, nanoseconds.
    pub destage_checkpoint_ns: u64,
}

/// The engine. See the module documentation.
pub struct Engine {
    medium: Arc<dyn Medium>,
    superblock: Superblock,
    partitions: Vec<Arc<Partition>>,
    backend: Arc<dyn Backend>,
    volumes: RwLock<HashMap<VolumeId, VolumeGeometry>>,
    report: RecoveryReport,
}

fn io_err(medium: &dyn Medium, op: &'static str) -> impl FnOnce(std::io::Error) -> CacheError {
    let device = medium.describe();
    move |source| CacheError::Io { device, op, source }
}

impl Engine {
    /// Formats `medium`: a new superblock, nonce and empty journals. Everything on it is lost.
    pub fn format(medium: &dyn Medium, opts: &FormatOptions) -> Result<Superblock, CacheError> {
        if opts.partitions == 0 || opts.partitions > MAX_PARTITIONS {
            return Err(CacheError::InvalidOption {
                field: "partitions",
                reason: format!("must be 1..={MAX_PARTITIONS}, got {}", opts.partitions),
            });
        }
        if opts.max_batch_data_blocks < 2 || opts.max_batch_data_blocks > 4096 {
            return Err(CacheError::InvalidOption {
                field: "max_batch_data_blocks",
                reason: format!("must be 2..=4096, got {}", opts.max_batch_data_blocks),
            });
        }
        let blocks = medium.len() / BLOCK as u64;
        let meta = 1 + 2 * u64::from(opts.partitions);
        let first = meta.div_ceil(256) * 256;
        let min_part = 4 * (u64::from(opts.max_batch_data_blocks) + 1);
        let needed = (first + min_part * u64::from(opts.partitions)) * BLOCK as u64;
        if medium.len() < needed {
            return Err(CacheError::TooSmall {
                device: medium.describe(),
                size: medium.len(),
                needed,
            });
        }
        let per = ((blocks - first) / u64::from(opts.partitions)).min(u64::from(u32::MAX));
        let partitions = (0..u64::from(opts.partitions))
            .map(|i| PartitionExtent {
                start: first + i * per,
                blocks: per,
            })
            .collect();
        let sb = Superblock {
            device_id: uuid::Uuid::new_v4(),
            nonce: rand::random(),
            device_blocks: blocks,
            max_batch_data_blocks: opts.max_batch_data_blocks,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            partitions,
        };
        let mut b = AlignedBuf::zeroed(BLOCK);
        for p in 0..opts.partitions {
            let [a, z] = checkpoint_blocks(p);
            let cp = Checkpoint {
                partition: p,
                nonce: sb.nonce,
                generation: 0,
                destage_virt: 0,
                destage_seq: 1,
                entry_seq: 1,
            };
            b.copy_from_slice(&cp.encode());
            medium
                .write_at(&b, a * BLOCK as u64)
                .map_err(io_err(medium, "writing a checkpoint"))?;
            b.fill(0);
            medium
                .write_at(&b, z * BLOCK as u64)
                .map_err(io_err(medium, "writing a checkpoint"))?;
        }
        medium.sync().map_err(io_err(medium, "syncing"))?;
        // The superblock goes last: a device whose format was interrupted does not open.
        b.copy_from_slice(&sb.encode());
        medium
            .write_at(&b, 0)
            .and_then(|()| medium.sync())
            .map_err(io_err(medium, "writing the superblock"))?;
        Ok(sb)
    }

    /// Opens a formatted device and recovers every partition. Volumes must be attached again.
    pub fn open(medium: Arc<dyn Medium>, backend: Arc<dyn Backend>) -> Result<Self, CacheError> {
        let mut b = AlignedBuf::zeroed(BLOCK);
        if medium.len() < BLOCK as u64 {
            return Err(CacheError::TooSmall {
                device: medium.describe(),
                size: medium.len(),
                needed: BLOCK as u64,
            });
        }
        medium
            .read_at(&mut b, 0)
            .map_err(io_err(&*medium, "reading the superblock"))?;
        let superblock = Superblock::decode(&b).map_err(|source| CacheError::Superblock {
            device: medium.describe(),
            source,
        })?;
        if superblock.device_blocks * BLOCK as u64 > medium.len() {
            return Err(CacheError::TooSmall {
                device: medium.describe(),
                size: medium.len(),
                needed: superblock.device_blocks * BLOCK as u64,
            });
        }
        let mut partitions = Vec::new();
        let mut report = RecoveryReport::default();
        for (i, extent) in superblock.partitions.iter().enumerate() {
            let (p, r) = Partition::recover(
                i as u32,
                medium.clone(),
                *extent,
                superblock.nonce,
                superblock.max_batch_data_blocks,
            )?;
            tracing::info!(
                partition = i,
                batches = r.batches,
                dirty_blocks = r.dirty_blocks,
                torn = r.torn_batches,
                poisoned = r.poisoned_blocks,
                "partition recovered"
            );
            partitions.push(Arc::new(p));
            report.partitions.push(r);
        }
        Ok(Self {
            medium,
            superblock,
            partitions,
            backend,
            volumes: RwLock::new(HashMap::new()),
            report,
        })
    }

    /// What recovery found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The device.
    pub fn medium(&self) -> &Arc<dyn Medium> {
        &self.medium
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// The partition that journals `volume`.
    pub fn partition_of(&self, volume: VolumeId) -> &Arc<Partition> {
        let i = (volume.0.as_u128() % self.partitions.len() as u128) as usize;
        &self.partitions[i]
    }

    /// The longest single transfer.
    pub fn max_transfer(&self) -> ByteSize {
        ByteSize(u64::from(self.superblock.max_batch_data_blocks - 1) * BLOCK as u64)
    }

    /// Makes `volume` available for I/O with `geometry`. Its backend image must exist.
    pub fn attach(&self, volume: VolumeId, geometry: VolumeGeometry) -> Result<(), CacheError> {
        let mut vols = self.volumes.write();
        if vols.contains_key(&volume) {
            return Err(CacheError::AlreadyAttached(volume));
        }
        vols.insert(volume, geometry);
        Ok(())
    }

    /// Grows an attached volume.
    pub fn resize(&self, volume: VolumeId, geometry: VolumeGeometry) -> Result<(), CacheError> {
        let mut vols = self.volumes.write();
        let g = vols
            .get_mut(&volume)
            .ok_or(CacheError::UnknownVolume(volume))?;
        if geometry.block_size() != g.block_size() || geometry.size() < g.size() {
            return Err(CacheError::InvalidOption {
                field: "size",
                reason: format!(
                    "volumes only grow and keep their block size ({} -> {})",
                    g.size().0,
                    geometry.size().0
                ),
            });
        }
        *g = geometry;
        Ok(())
    }

    /// Stops I/O to `volume`; its dirty data stays in the journal and is still destaged.
    pub fn detach(&self, volume: VolumeId) -> Result<(), CacheError> {
        self.volumes
            .write()
            .remove(&volume)
            .map(|_| ())
            .ok_or(CacheError::UnknownVolume(volume))
    }

    /// A volume's replication log in this journal (empty when it holds no tagged write).
    pub fn replication_log(&self, volume: VolumeId) -> crate::partition::RepLog {
        self.partition_of(volume)
            .replog
            .lock()
            .get(&volume)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets how the destager treats `volume`'s replicated writes (a follower's wait for the
    /// primary's release). Not persistent: after a restart every volume holding replicated
    /// writes is a follower until its role is set again. A primary that becomes a follower
    /// gives its claim on the backend image up (the destager does, before its next round).
    pub fn set_replica_role(&self, volume: VolumeId, role: crate::partition::ReplicaRole) {
        let p = self.partition_of(volume);
        {
            let mut set = p.primaries.lock();
            match role {
                crate::partition::ReplicaRole::Primary => {
                    set.entry(volume)
                        .or_insert_with(crate::partition::DestageFence::open);
                }
                crate::partition::ReplicaRole::Follower => {
                    if set
                        .remove(&volume)
                        .is_some_and(|f| f.claim_state() == crate::partition::ClaimState::Claimed)
                    {
                        p.to_release.lock().push(volume);
                    }
                }
            };
        }
        p.notify_unhold();
    }

    /// Makes this node `volume`'s primary, destaging its replicated writes only when `fence`
    /// allows (while the node's lease holds; not before an old primary's writes are done).
    pub fn set_primary_fenced(&self, volume: VolumeId, fence: crate::partition::DestageFence) {
        let p = self.partition_of(volume);
        p.primaries.lock().insert(volume, fence);
        p.notify_unhold();
    }

    /// A follower's writes of `volume` up to replication sequence number `seq` are in the
    /// backend: journals it (durably) so they are never destaged here, and lets their space go.
    ///
    /// The release takes effect in memory first, so a journal full of held writes can still
    /// be destaged to make room for the release's own entry. A crash before that entry is
    /// durable loses only the release: the primary sends it again when it reconnects.
    pub fn release(&self, volume: VolumeId, seq: SeqNo) -> Result<(), CacheError> {
        let p = self.partition_of(volume);
        {
            let mut logs = p.replog.lock();
            let r = logs.entry(volume).or_default();
            r.released = r.released.max(seq);
        }
        p.notify_unhold();
        let r = p
            .commit(&[Op::Release { volume, seq }], 0)
            .pop()
            .expect("one result");
        p.notify_work();
        r
    }

    /// The geometry of an attached volume.
    pub fn geometry(&self, volume: VolumeId) -> Result<VolumeGeometry, CacheError> {
        self.volumes
            .read()
            .get(&volume)
            .copied()
            .ok_or(CacheError::UnknownVolume(volume))
    }

    /// Checks a write and turns it into a journal op.
    pub fn write_op(&self, volume: VolumeId, lba: Lba, data: Bytes) -> Result<Op, CacheError> {
        let g = self.geometry(volume)?;
        let count = check_payload(&g, data.len())?;
        check_range(&g, self.max_transfer(), lba, count)?;
        Ok(Op::Write {
            volume,
            sector: g.sector_of(lba),
            data,
        })
    }

    /// Checks an unmap / write-zeroes request and turns it into a journal op.
    pub fn zero_op(&self, volume: VolumeId, lba: Lba, count: BlockCount) -> Result<Op, CacheError> {
        let g = self.geometry(volume)?;
        check_range(&g, ByteSize(u64::MAX), lba, count)?;
        if count.0 == 0 {
            return Err(BlockError::OutOfRange {
                lba: lba.0,
                count: 0,
                capacity: g.blocks().0,
            }
            .into());
        }
        Ok(Op::Zero {
            volume,
            sector: g.sector_of(lba),
            sectors: g.sectors_in(count),
        })
    }

    /// Commits one op and waits for it (no grouping: the service groups).
    pub fn submit(&self, op: Op) -> Result<(), CacheError> {
        self.partition_of(op.volume())
            .commit(std::slice::from_ref(&op), 0)
            .pop()
            .expect("one result per op")
    }

    /// Writes `data` at `lba`; durable when it returns.
    pub fn write(&self, volume: VolumeId, lba: Lba, data: Bytes) -> Result<(), CacheError> {
        self.submit(self.write_op(volume, lba, data)?)
    }

    /// Makes `count` blocks at `lba` read as zeroes (unmap and write zeroes alike).
    pub fn zero(&self, volume: VolumeId, lba: Lba, count: BlockCount) -> Result<(), CacheError> {
        self.submit(self.zero_op(volume, lba, count)?)
    }

    /// The cached run that serves a read of `count` blocks at `lba` whole, with its partition
    /// (see [`Partition::cached_run`]); `None` for anything else, bad requests included.
    pub(crate) fn cached_run(
        &self,
        volume: VolumeId,
        lba: Lba,
        count: BlockCount,
    ) -> Option<(Arc<Partition>, crate::read::CachedRun)> {
        let g = self.geometry(volume).ok()?;
        check_range(&g, self.max_transfer(), lba, count).ok()?;
        if count.0 == 0 {
            return None;
        }
        let p = self.partition_of(volume);
        let run = p.cached_run(volume, g.sector_of(lba), g.len_of(count).0 / 512)?;
        Some((p.clone(), run))
    }

    /// Reads `count` blocks at `lba`.
    pub fn read(&self, volume: VolumeId, lba: Lba, count: BlockCount) -> Result<Bytes, CacheError> {
        let g = self.geometry(volume)?;
        check_range(&g, self.max_transfer(), lba, count)?;
        if count.0 == 0 {
            return Ok(Bytes::new());
        }
        let mut out = vec![0u8; g.len_of(count).0 as usize];
        self.partition_of(volume)
            .read(volume, g.sector_of(lba), &mut out, &*self.backend)?;
        Ok(Bytes::from(out))
    }

    /// Deletes `volume` from the cache: journals the drop (its dirty data will not be destaged)
    /// and detaches it. The backend image is the caller's to delete.
    pub fn drop_volume(&self, volume: VolumeId) -> Result<(), CacheError> {
        let _ = self.detach(volume);
        // A drop without a position: the volume's replication log goes too.
        self.reset_replica(volume, LogPos::default())
    }

    /// A follower's rebuild starts: forgets every write of `volume` (as
    /// [`Engine::drop_volume`], but the volume stays attached throughout) and journals `base`,
    /// the primary's destage point, as the volume's replication position: its log restarts
    /// after `base`, and everything up to it is released (in the backend). Recovery restores
    /// the same position.
    pub fn reset_replica(&self, volume: VolumeId, base: LogPos) -> Result<(), CacheError> {
        let p = self.partition_of(volume);
        let r = p
            .commit_tagged(&[Op::Drop { volume }], &[base])
            .pop()
            .expect("one result");
        p.notify_unhold();
        r
    }

    /// Snapshots `volume` in the backend as `name`, after destaging every write acknowledged
    /// before the call (SPEC §2: flush the volume's dirty data, then snapshot). Writes that
    /// race with the call may or may not be in the snapshot. Destage here ignores the rate limit.
    pub fn snapshot(&self, volume: VolumeId, name: &str) -> Result<(), CacheError> {
        self.destage_now(volume, None)?;
        self.backend.snapshot(volume, name)?;
        Ok(())
    }

    /// Destages everything `volume`'s partition holds now (every volume's writes committed
    /// before the call), ignoring the rate limit; with `within`, gives up after that long (a
    /// follower's held writes of another volume can make it wait for their primary).
    pub fn destage_now(
        &self,
        volume: VolumeId,
        within: Option<std::time::Duration>,
    ) -> Result<(), CacheError> {
        let p = self.partition_of(volume);
        // Writes after `head` do not stand in for older ones, in these rounds or the
        // destager's: the image must hold every write made before this call (a snapshot is
        // taken of it next).
        let hold = p.hold_versions_before();
        let head = hold.at;
        let start = std::time::Instant::now();
        while p.destaged_virt.load(Ordering::Acquire) < head {
            if p.destage_round(&*self.backend, 64 << 20)?.batches == 0 {
                // Another volume's follower writes wait for their primary's release.
                if within.is_some_and(|w| start.elapsed() >= w) {
                    return Err(CacheError::ShuttingDown);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Runs one destage round on every partition with dirty data.
    pub fn destage_round(&self, budget: u64) -> Result<RoundStats, CacheError> {
        let mut total = RoundStats::default();
        for p in &self.partitions {
            let s = p.destage_round(&*self.backend, budget)?;
            total.batches += s.batches;
            total.bytes += s.bytes;
            total.corrupt_blocks += s.corrupt_blocks;
            total.superseded_blocks += s.superseded_blocks;
        }
        Ok(total)
    }

    /// Destages until nothing is dirty; returns the bytes written to the backend.
    pub fn destage_all(&self) -> Result<u64, CacheError> {
        let mut bytes = 0;
        loop {
            let s = self.destage_round(64 << 20)?;
            if s.batches == 0 {
                return Ok(bytes);
            }
            bytes += s.bytes;
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats::default();
        for p in &self.partitions {
            let c = &p.counters;
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            s.capacity_bytes += p.log_blocks() * BLOCK as u64;
            s.used_bytes += p.used_blocks() * BLOCK as u64;
            s.dirty_bytes += p.dirty_blocks() * BLOCK as u64;
            s.ops += get(&c.ops);
            s.batches += get(&c.batches);
            // Each batch is one durable write (a FUA write or a write and a flush).
            s.syncs += get(&c.batches);
            s.ring_batches += get(&c.ring_batches);
            s.log_bytes_written += get(&c.log_blocks_written) * BLOCK as u64;
            s.destaged_bytes += get(&c.destaged_bytes);
            s.superseded_blocks += get(&c.superseded_blocks);
            s.destage_rounds += get(&c.destage_rounds);
            s.destage_read_ns += get(&c.destage_read_ns);
            s.destage_backend_ns += get(&c.destage_backend_ns);
            s.destage_checkpoint_ns += get(&c.destage_checkpoint_ns);
            s.backend_errors += get(&c.backend_errors);
            s.claims += get(&c.claims);
            s.claims_lost += get(&c.claims_lost);
            s.throttled += get(&c.throttled);
            s.evicted_blocks += get(&c.evicted_blocks);
            s.read_hit_blocks += get(&c.read_hit_blocks);
            s.read_miss_blocks += get(&c.read_miss_blocks);
            s.index_blocks += p
                .index
                .read()
                .volumes
                .values()
                .map(|v| v.blocks.len() as u64)
                .sum::<u64>();
            s.failed_partitions += u64::from(p.is_failed());
        }
        s
    }
}
