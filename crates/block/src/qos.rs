//! QoS: a volume's limits (read, write and total IOPS and bytes per second, each with an
//! optional burst) enforced in front of its device. Each limit is a token bucket allowing debt
//! ([`RateLimiter`]): an I/O reserves its cost at once and waits until the debt it joined is
//! paid, so waiting I/Os are served in arrival order and the long-run rate is exact. Policies
//! change while volumes are exported.
//!
//! A limit of `per_sec` without a peak lets 100 ms of its allowance go at once. With a `peak`,
//! an idle volume saves up credit for a burst: it may then run at up to `peak` per second for
//! [`QosLimits::burst`] (a second unless set) before falling back to `per_sec`; a second bucket
//! at `peak` with 100 ms of credit holds the burst itself to the peak.

use std::sync::Arc;
use std::time::Duration;

use crate::rate::RateLimiter;
use crate::{BlockDevice, IoFuture};
use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;
use parking_lot::RwLock;

/// Without a burst, this much of a second's allowance may be spent at once.
const SLACK: Duration = Duration::from_millis(100);

/// How long a burst at the peak lasts when a policy does not say.
pub const DEFAULT_BURST: Duration = Duration::from_secs(1);

/// One limit: a sustained rate and, optionally, the peak rate a burst may reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Operations or bytes per second, in the long run.
    pub per_sec: u64,
    /// The rate a burst may reach (above `per_sec`; `None`: no burst beyond 100 ms of
    /// `per_sec`).
    pub peak: Option<u64>,
}

impl Rate {
    /// A limit of `per_sec` without a burst.
    pub fn per_sec(per_sec: u64) -> Self {
        Self {
            per_sec,
            peak: None,
        }
    }
}

/// A volume's limits; `None`: not limited. Write zeroes and unmaps count as write operations
/// that move no bytes; every operation counts toward the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QosLimits {
    /// Read operations per second.
    pub read_iops: Option<Rate>,
    /// Write operations per second.
    pub write_iops: Option<Rate>,
    /// Operations per second, reads and writes together.
    pub total_iops: Option<Rate>,
    /// Bytes read per second.
    pub read_bps: Option<Rate>,
    /// Bytes written per second.
    pub write_bps: Option<Rate>,
    /// Bytes per second, read and written together.
    pub total_bps: Option<Rate>,
    /// How long a burst at a limit's peak lasts from full credit.
    pub burst: Duration,
}

impl Default for QosLimits {
    fn default() -> Self {
        Self {
            read_iops: None,
            write_iops: None,
            total_iops: None,
            read_bps: None,
            write_bps: None,
            total_bps: None,
            burst: DEFAULT_BURST,
        }
    }
}

impl QosLimits {
    /// Each limit with its name (`read_iops`, ..., `total_bps`).
    pub fn named(&self) -> [(&'static str, Option<Rate>); 6] {
        [
            ("read_iops", self.read_iops),
            ("write_iops", self.write_iops),
            ("total_iops", self.total_iops),
            ("read_bps", self.read_bps),
            ("write_bps", self.write_bps),
            ("total_bps", self.total_bps),
        ]
    }
}

/// A limit's buckets: the sustained one and, for a burst, the peak's.
struct Buckets {
    sustained: RateLimiter,
    peak: Option<RateLimiter>,
}

impl Buckets {
    fn new(r: Rate, burst: Duration) -> Self {
        Self {
            sustained: RateLimiter::new(r.per_sec, sustained_credit(r, burst)),
            peak: r.peak.map(|p| RateLimiter::new(p, peak_credit(p))),
        }
    }
}

/// The credit of a sustained bucket: a burst's worth above the rate, or 100 ms of the rate.
fn sustained_credit(r: Rate, burst: Duration) -> u64 {
    let slack = (r.per_sec as f64 * SLACK.as_secs_f64()).max(1.0);
    let saved = match r.peak {
        Some(p) => p.saturating_sub(r.per_sec) as f64 * burst.as_secs_f64(),
        None => 0.0,
    };
    slack.max(saved) as u64
}

fn peak_credit(peak: u64) -> u64 {
    (peak as f64 * SLACK.as_secs_f64()).max(1.0) as u64
}

/// One limit in force, if any: its rate and its buckets.
#[derive(Default)]
struct Slot(RwLock<Option<(Rate, Arc<Buckets>)>>);

impl Slot {
    fn set(&self, rate: Option<Rate>, burst: Duration) {
        let mut s = self.0.write();
        *s = match (rate, s.take()) {
            (None, _) => None,
            // A limit that keeps (or keeps lacking) its peak keeps its buckets and their debt.
            (Some(r), Some((old, b))) if old.peak.is_some() == r.peak.is_some() => {
                b.sustained.set(r.per_sec, sustained_credit(r, burst));
                if let (Some(l), Some(p)) = (&b.peak, r.peak) {
                    l.set(p, peak_credit(p));
                }
                Some((r, b))
            }
            (Some(r), _) => Some((r, Arc::new(Buckets::new(r, burst)))),
        };
    }

    fn rate(&self) -> Option<Rate> {
        self.0.read().as_ref().map(|(r, _)| *r)
    }

    /// Reserves `cost`; how long to wait for it.
    fn reserve(&self, cost: u64) -> Duration {
        match self.0.read().as_ref() {
            None => Duration::ZERO,
            Some((_, b)) => {
                b.sustained.spend(cost);
                let mut wait = b.sustained.delay();
                if let Some(p) = &b.peak {
                    p.spend(cost);
                    wait = wait.max(p.delay());
                }
                wait
            }
        }
    }
}

/// A volume's live limits.
#[derive(Default)]
pub struct Qos {
    read_iops: Slot,
    write_iops: Slot,
    total_iops: Slot,
    read_bps: Slot,
    write_bps: Slot,
    total_bps: Slot,
    burst: RwLock<Option<Duration>>,
}

impl Qos {
    /// Applies `p` from now on.
    pub fn apply(&self, p: &QosLimits) {
        *self.burst.write() = Some(p.burst);
        self.read_iops.set(p.read_iops, p.burst);
        self.write_iops.set(p.write_iops, p.burst);
        self.total_iops.set(p.total_iops, p.burst);
        self.read_bps.set(p.read_bps, p.burst);
        self.write_bps.set(p.write_bps, p.burst);
        self.total_bps.set(p.total_bps, p.burst);
    }

    /// The limits in force.
    pub fn limits(&self) -> QosLimits {
        QosLimits {
            read_iops: self.read_iops.rate(),
            write_iops: self.write_iops.rate(),
            total_iops: self.total_iops.rate(),
            read_bps: self.read_bps.rate(),
            write_bps: self.write_bps.rate(),
            total_bps: self.total_bps.rate(),
            burst: self.burst.read().unwrap_or(DEFAULT_BURST),
        }
    }

    fn wait_read(&self, bytes: u64) -> Duration {
        self.read_iops
            .reserve(1)
            .max(self.read_bps.reserve(bytes))
            .max(self.total_iops.reserve(1))
            .max(self.total_bps.reserve(bytes))
    }

    fn wait_write(&self, bytes: u64) -> Duration {
        self.write_iops
            .reserve(1)
            .max(self.write_bps.reserve(bytes))
            .max(self.total_iops.reserve(1))
            .max(self.total_bps.reserve(bytes))
    }
}

/// A device whose I/O waits for its volume's QoS limits. Flushes are not limited; write zeroes
/// and unmaps count as one write operation with no bytes (they move no data).
pub struct Limited<D> {
    inner: Arc<D>,
    qos: Arc<Qos>,
}

impl<D: BlockDevice + 'static> Limited<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, qos: Arc<Qos>) -> Self {
        Self {
            inner: Arc::new(inner),
            qos,
        }
    }

    fn after<T: Send + 'static>(wait: Duration, f: IoFuture<T>) -> IoFuture<T> {
        if wait.is_zero() {
            return f;
        }
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            f.await
        })
    }
}

impl<D: BlockDevice + 'static> BlockDevice for Limited<D> {
    fn geometry(&self) -> VolumeGeometry {
        self.inner.geometry()
    }

    fn max_transfer(&self) -> ByteSize {
        self.inner.max_transfer()
    }

    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        let wait = self.qos.wait_read(self.inner.geometry().len_of(count).0);
        let inner = self.inner.clone();
        Self::after(wait, Box::pin(async move { inner.read(lba, count).await }))
    }

    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        let wait = self.qos.wait_write(data.len() as u64);
        let inner = self.inner.clone();
        Self::after(wait, Box::pin(async move { inner.write(lba, data).await }))
    }

    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        let wait = self.qos.wait_write(0);
        let inner = self.inner.clone();
        Self::after(
            wait,
            Box::pin(async move { inner.write_zeroes(lba, count).await }),
        )
    }

    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        let wait = self.qos.wait_write(0);
        let inner = self.inner.clone();
        Self::after(wait, Box::pin(async move { inner.unmap(lba, count).await }))
    }

    fn flush(&self) -> IoFuture<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBlockDevice;
    use alcubierre_types::BlockSize;
    use std::time::Instant;

    fn dev(qos: Arc<Qos>) -> Limited<MemBlockDevice> {
        let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(4)).unwrap();
        Limited::new(MemBlockDevice::new(g), qos)
    }

    #[tokio::test]
    async fn write_iops_are_held_to_the_limit_and_reads_are_not() {
        let qos = Arc::new(Qos::default());
        qos.apply(&QosLimits {
            write_iops: Some(Rate::per_sec(100)),
            ..QosLimits::default()
        });
        let d = dev(qos.clone());
        // 30 writes at 100 IOPS with a 10-write burst: at least 0.2 s.
        let t0 = Instant::now();
        let all: Vec<_> = (0..30)
            .map(|i| d.write(Lba(i), Bytes::from(vec![1u8; 4096])))
            .collect();
        for f in all {
            f.await.unwrap();
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        // Reads have no limit: they do not wait behind the writes' debt.
        assert_eq!(qos.wait_read(4096), Duration::ZERO);
        d.read(Lba(0), BlockCount(1)).await.unwrap();
        assert_eq!(qos.limits().write_iops, Some(Rate::per_sec(100)));
        // Removing the policy lifts the limit.
        qos.apply(&QosLimits::default());
        assert_eq!(qos.limits(), QosLimits::default());
    }

    #[tokio::test]
    async fn bandwidth_limits_count_bytes() {
        let qos = Arc::new(Qos::default());
        qos.apply(&QosLimits {
            read_bps: Some(Rate::per_sec(1 << 20)),
            ..QosLimits::default()
        });
        let d = dev(qos);
        // 512 KiB at 1 MiB/s with a 100 ms burst: at least 0.35 s.
        let t0 = Instant::now();
        for i in 0..4 {
            d.read(Lba(i * 32), BlockCount(32)).await.unwrap();
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(350), "{took:?}");
    }

    /// The wait an I/O is given right after `n - 1` others, in seconds.
    fn nth_write_wait(qos: &Qos, n: usize, bytes: u64) -> f64 {
        let mut last = Duration::ZERO;
        for _ in 0..n {
            last = qos.wait_write(bytes);
        }
        last.as_secs_f64()
    }

    #[test]
    fn total_limits_count_reads_and_writes_together() {
        let qos = Qos::default();
        qos.apply(&QosLimits {
            total_iops: Some(Rate::per_sec(1000)),
            ..QosLimits::default()
        });
        // 100 ms of credit (100 ops), then 1 ms per op: the 300th op of a mix waits ~0.2 s.
        for _ in 0..150 {
            assert!(qos.wait_read(4096) <= Duration::from_millis(60));
        }
        let w = nth_write_wait(&qos, 150, 4096);
        assert!((0.18..0.21).contains(&w), "{w}");
        // Reads and writes have no limits of their own.
        assert_eq!(qos.limits().read_iops, None);
    }

    #[test]
    fn a_burst_runs_at_the_peak_for_its_length_then_at_the_rate() {
        let limits = |peak| QosLimits {
            write_iops: Some(Rate { per_sec: 100, peak }),
            burst: Duration::from_millis(500),
            ..QosLimits::default()
        };
        // Without a peak: 10 ops of credit, then 10 ms each: the 400th waits ~3.9 s.
        let plain = Qos::default();
        plain.apply(&limits(None));
        let w = nth_write_wait(&plain, 400, 0);
        assert!((3.85..3.95).contains(&w), "{w}");
        // With a peak of 1000/s for 0.5 s, an idle volume has (1000 - 100) x 0.5 = 450 ops of
        // credit, spent no faster than the peak (100 ops at once, then 1 ms each): the 400th
        // waits ~0.3 s, on the peak's bucket alone.
        let burst = Qos::default();
        burst.apply(&limits(Some(1000)));
        let w = nth_write_wait(&burst, 400, 0);
        assert!((0.29..0.31).contains(&w), "{w}");
        // Past the burst's credit the sustained rate rules: 200 more ops are 150 past it, at
        // 10 ms each.
        let w = nth_write_wait(&burst, 200, 0);
        assert!((1.45..1.55).contains(&w), "{w}");
        // A policy change keeps the debt and pays it at the new rates: the peak's 500 ops of
        // debt at 2000/s outlast the sustained 150 at 1000/s.
        burst.apply(&QosLimits {
            write_iops: Some(Rate {
                per_sec: 1000,
                peak: Some(2000),
            }),
            ..limits(None)
        });
        let w = nth_write_wait(&burst, 1, 0);
        assert!((0.24..0.26).contains(&w), "{w}");
        assert_eq!(burst.limits().burst, Duration::from_millis(500));
    }
}
