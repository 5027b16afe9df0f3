//! The read path: merge cached blocks, zero ranges and the backend into one buffer.

use std::sync::atomic::Ordering;

use alcubierre_backend::Backend;
use alcubierre_io::AlignedBuf;
use alcubierre_types::{ByteOffset, CacheBlock, Sector, VolumeId};

use crate::error::CacheError;
use crate::format::{BLOCK, FULL_MASK, SECTORS_PER_BLOCK as SPB};
use crate::index::Loc;
use crate::partition::{Partition, SECTOR};

/// A read served whole by one run of cached blocks that lie consecutively in the log (the
/// common cache hit), which can go to the device without the engine's threads.
pub(crate) struct CachedRun {
    /// Where the run starts in the log (virtual block).
    virt: u64,
    /// Blocks in the run.
    pub(crate) blocks: usize,
    /// Byte offset of the run on the device.
    pub(crate) dev_offset: u64,
    /// The bytes asked for: from `skip` in the run, `len` of them.
    pub(crate) skip: usize,
    pub(crate) len: usize,
}

impl Partition {
    /// The run of cached blocks that holds all of `sectors` sectors of `volume` at `sector`,
    /// if one does (every block cached whole, consecutive in the log); `None` sends the read
    /// the general way ([`Partition::read`]).
    pub(crate) fn cached_run(
        &self,
        volume: VolumeId,
        sector: Sector,
        sectors: u64,
    ) -> Option<CachedRun> {
        let (sector, end) = (sector.0, sector.0 + sectors);
        let (first, last) = (sector / SPB, (end - 1) / SPB);
        let idx = self.index.read();
        let v = idx.volumes.get(&volume)?;
        let Loc::Cached {
            phys,
            mask: FULL_MASK,
        } = v.lookup(CacheBlock(first))
        else {
            return None;
        };
        for (k, b) in (first + 1..=last).enumerate() {
            match v.lookup(CacheBlock(b)) {
                Loc::Cached {
                    phys: p,
                    mask: FULL_MASK,
                } if u64::from(p) == u64::from(phys) + 1 + k as u64 => {}
                _ => return None,
            }
        }
        // The run is in the log's live region [tail, head), which is shorter than a lap: its
        // virtual position follows from the tail (read under the index lock: eviction drops
        // index entries before it publishes a new tail, so an entry found here is at or past
        // either tail).
        let tail = self.tail_virt.load(Ordering::Acquire);
        let l = self.log_blocks();
        let virt = tail + (u64::from(phys) + l - tail % l) % l;
        Some(CachedRun {
            virt,
            blocks: (last - first + 1) as usize,
            dev_offset: self.dev_offset(virt),
            skip: ((sector - first * SPB) * SECTOR) as usize,
            len: (sectors * SECTOR) as usize,
        })
    }

    /// Whether a run read without the `reclaim` guard was read from log space not reused
    /// meanwhile: the writer reuses space only after it moved the tail past it, so a tail still
    /// at or before the run once the read completed means the read saw the run's data.
    pub(crate) fn run_still_valid(&self, run: &CachedRun) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        let ok = self.tail_virt.load(Ordering::Acquire) <= run.virt;
        if ok {
            self.counters
                .read_hit_blocks
                .fetch_add(run.blocks as u64, Ordering::Relaxed);
        }
        ok
    }

    /// Reads `out.len() / 512` sectors of `volume` at `sector` into `out`.
    ///
    /// Cached data is read under the `reclaim` guard (so its log space cannot be reused while it
    /// is read); backend reads happen after the guard is released.
    pub fn read(
        &self,
        volume: VolumeId,
        sector: Sector,
        out: &mut [u8],
        backend: &dyn Backend,
    ) -> Result<(), CacheError> {
        let sector = sector.0;
        let sectors = out.len() as u64 / SECTOR;
        let end = sector + sectors;
        let first = sector / SPB;
        let last = (end - 1) / SPB;
        // The part of block `b` the request covers, as sectors [from, to) of the block and the
        // offset in `out` where sector `from` goes.
        let span = |b: u64| {
            let from = if b == first { sector % SPB } else { 0 };
            let to = if b == last { end - b * SPB } else { SPB };
            let out_at = ((b * SPB + from - sector) * SECTOR) as usize;
            (from, to, out_at)
        };
        // Blocks (and the sectors of them) still to fetch from the backend.
        let mut from_backend: Vec<(u64, u8)> = Vec::new();
        {
            let _guard = self.reclaim.read();
            let plan: Vec<Loc> = {
                let idx = self.index.read();
                match idx.volumes.get(&volume) {
                    Some(v) => (first..=last).map(|b| v.lookup(CacheBlock(b))).collect(),
                    None => vec![Loc::Backend; (last - first + 1) as usize],
                }
            };
            let mut hits = 0;
            let mut i = 0;
            while i < plan.len() {
                let b = first + i as u64;
                match plan[i] {
                    Loc::Poisoned => {
                        let from = (b * SPB).max(sector);
                        return Err(CacheError::Medium {
                            volume,
                            offset: ByteOffset(from * SECTOR),
                        });
                    }
                    Loc::Zero => {
                        let (from, to, at) = span(b);
                        out[at..at + ((to - from) * SECTOR) as usize].fill(0);
                        i += 1;
                    }
                    Loc::Backend => {
                        from_backend.push((b, FULL_MASK));
                        i += 1;
                    }
                    Loc::Cached { phys, .. } => {
                        // A run of blocks stored consecutively in the log: one device read.
                        let mut n = 1;
                        while i + n < plan.len() {
                            match plan[i + n] {
                                Loc::Cached { phys: p, .. } if p == phys + n as u32 => n += 1,
                                _ => break,
                            }
                        }
                        let mut buf = AlignedBuf::zeroed(n * BLOCK);
                        self.medium
                            .read_at(
                                &mut buf,
                                (self.extent.start + u64::from(phys)) * BLOCK as u64,
                            )
                            .map_err(|e| CacheError::Io {
                                device: self.device(),
                                op: "reading cached data",
                                source: e,
                            })?;
                        for k in 0..n {
                            let b = first + (i + k) as u64;
                            let Loc::Cached { mask, .. } = plan[i + k] else {
                                unreachable!("run holds cached blocks only")
                            };
                            let (from, to, at) = span(b);
                            let src = &buf[k * BLOCK..(k + 1) * BLOCK];
                            for s in from..to {
                                if mask & (1 << s) != 0 {
                                    let o = at + ((s - from) * SECTOR) as usize;
                                    out[o..o + SECTOR as usize].copy_from_slice(
                                        &src[(s * SECTOR) as usize..((s + 1) * SECTOR) as usize],
                                    );
                                }
                            }
                            if mask != FULL_MASK {
                                from_backend.push((b, !mask));
                            }
                        }
                        hits += n;
                        i += n;
                    }
                }
            }
            self.counters
                .read_hit_blocks
                .fetch_add(hits as u64, Ordering::Relaxed);
        }
        self.counters
            .read_miss_blocks
            .fetch_add(from_backend.len() as u64, Ordering::Relaxed);
        // Backend: coalesce consecutive whole blocks; partial ones sector by sector.
        let mut j = 0;
        while j < from_backend.len() {
            let (b, mask) = from_backend[j];
            if mask == FULL_MASK {
                let mut n = 1;
                while j + n < from_backend.len() && from_backend[j + n] == (b + n as u64, FULL_MASK)
                {
                    n += 1;
                }
                let (from, _, at) = span(b);
                let (_, to, _) = span(b + n as u64 - 1);
                let len = (((n as u64 - 1) * SPB + to - from) * SECTOR) as usize;
                backend.read(
                    volume,
                    ByteOffset((b * SPB + from) * SECTOR),
                    &mut out[at..at + len],
                )?;
                j += n;
            } else {
                let (from, to, at) = span(b);
                for s in from..to {
                    if mask & (1 << s) != 0 {
                        let o = at + ((s - from) * SECTOR) as usize;
                        backend.read(
                            volume,
                            ByteOffset((b * SPB + s) * SECTOR),
                            &mut out[o..o + SECTOR as usize],
                        )?;
                    }
                }
                j += 1;
            }
        }
        Ok(())
    }
}
