//! Per-volume I/O statistics: [`Metered`] wraps any [`BlockDevice`] and counts operations, bytes,
//! errors and latency (a fixed-bucket histogram, Prometheus style) into an [`IoStats`] that
//! metrics endpoints read without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;

use crate::{BlockDevice, HostId, IoFuture, Op, Reservations, ResvCommand};

/// Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000,
];

/// A latency histogram with [`LATENCY_BOUNDS_US`] buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, ns: u64) {
        let us = ns / 1000;
        let i = LATENCY_BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Cumulative counts per bound (the last one is +Inf, the total count), and the sum in
    /// seconds, as Prometheus wants them.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        (counts, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }
}

/// Counters of one direction (reads or writes).
#[derive(Default)]
pub struct DirStats {
    /// Completed operations.
    pub ops: AtomicU64,
    /// Bytes transferred by successful operations.
    pub bytes: AtomicU64,
    /// Failed operations.
    pub errors: AtomicU64,
    /// Latency of every operation.
    pub latency: Histogram,
}

impl DirStats {
    fn record<T>(&self, start: Instant, r: &Result<T, crate::BlockError>, bytes: u64) {
        self.ops.fetch_add(1, Relaxed);
        match r {
            Ok(_) => {
                self.bytes.fetch_add(bytes, Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
            }
        }
        self.latency.observe(start.elapsed().as_nanos() as u64);
    }
}

/// A volume's I/O statistics.
#[derive(Default)]
pub struct IoStats {
    /// Reads.
    pub read: DirStats,
    /// Writes, write zeroes and unmaps (bytes: the range they cover).
    pub write: DirStats,
    /// Flushes.
    pub flush: DirStats,
}

/// A device that records its I/O into shared [`IoStats`].
pub struct Metered<D> {
    inner: Arc<D>,
    stats: Arc<IoStats>,
}

impl<D: BlockDevice + 'static> Metered<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, stats: Arc<IoStats>) -> Self {
        Self {
            inner: Arc::new(inner),
            stats,
        }
    }

    fn timed<T: Send + 'static>(
        &self,
        f: IoFuture<T>,
        pick: fn(&IoStats) -> &DirStats,
        bytes: u64,
    ) -> IoFuture<T> {
        let stats = self.stats.clone();
        let start = Instant::now();
        Box::pin(async move {
            let r = f.await;
            pick(&stats).record(start, &r, bytes);
            r
        })
    }
}

impl<D: BlockDevice + 'static> BlockDevice for Metered<D> {
    fn geometry(&self) -> VolumeGeometry {
        self.inner.geometry()
    }

    fn max_transfer(&self) -> ByteSize {
        self.inner.max_transfer()
    }

    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        let bytes = self.inner.geometry().len_of(count).0;
        self.timed(self.inner.read(lba, count), |s| &s.read, bytes)
    }

    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        let bytes = data.len() as u64;
        self.timed(self.inner.write(lba, data), |s| &s.write, bytes)
    }

    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        let bytes = self.inner.geometry().len_of(count).0;
        self.timed(self.inner.write_zeroes(lba, count), |s| &s.write, bytes)
    }

    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        let bytes = self.inner.geometry().len_of(count).0;
        self.timed(self.inner.unmap(lba, count), |s| &s.write, bytes)
    }

    fn flush(&self) -> IoFuture<()> {
        self.timed(self.inner.flush(), |s| &s.flush, 0)
    }

    fn submit(&self, host: &HostId, op: Op) -> IoFuture<Bytes> {
        let (pick, bytes): (fn(&IoStats) -> &DirStats, u64) = match &op {
            Op::Read { count, .. } => (|s| &s.read, self.inner.geometry().len_of(*count).0),
            Op::Write { data, .. } => (|s| &s.write, data.len() as u64),
            Op::WriteZeroes { count, .. } | Op::Unmap { count, .. } => {
                (|s| &s.write, self.inner.geometry().len_of(*count).0)
            }
            Op::Flush => (|s| &s.flush, 0),
        };
        self.timed(self.inner.submit(host, op), pick, bytes)
    }

    fn reserve(&self, host: HostId, cntlid: u16, cmd: ResvCommand) -> IoFuture<Reservations> {
        self.inner.reserve(host, cntlid, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBlockDevice;
    use alcubierre_types::BlockSize;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(5_000); // 5 us -> first bucket
        h.observe(10_000); // 10 us -> still the first (bounds are inclusive)
        h.observe(30_000); // 30 us -> third (50 us)
        h.observe(20_000_000_000); // 20 s -> +Inf
        let (c, sum) = h.snapshot();
        assert_eq!(c[0], 2);
        assert_eq!(c[1], 2);
        assert_eq!(c[2], 3);
        assert_eq!(c[LATENCY_BOUNDS_US.len() - 1], 3);
        assert_eq!(c[LATENCY_BOUNDS_US.len()], 4);
        assert!((sum - 20.000045).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn counts_ops_bytes_and_errors() {
        let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(1)).unwrap();
        let stats = Arc::new(IoStats::default());
        let d = Metered::new(MemBlockDevice::new(g), stats.clone());
        futures::executor::block_on(async {
            d.write(Lba(0), Bytes::from(vec![7u8; 8192])).await.unwrap();
            d.read(Lba(0), BlockCount(2)).await.unwrap();
            d.read(Lba(1000), BlockCount(1)).await.unwrap_err();
            d.unmap(Lba(0), BlockCount(1)).await.unwrap();
            d.flush().await.unwrap();
        });
        assert_eq!(stats.write.ops.load(Relaxed), 2);
        assert_eq!(stats.write.bytes.load(Relaxed), 8192 + 4096);
        assert_eq!(stats.read.ops.load(Relaxed), 2);
        assert_eq!(stats.read.errors.load(Relaxed), 1);
        assert_eq!(stats.read.bytes.load(Relaxed), 8192);
        assert_eq!(stats.flush.ops.load(Relaxed), 1);
        assert_eq!(stats.read.latency.snapshot().0[LATENCY_BOUNDS_US.len()], 2);
    }
}
