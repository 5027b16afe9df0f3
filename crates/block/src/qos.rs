//! QoS: a volume's limits (read / write IOPS and bytes per second) enforced in front of its
//! device. Each limit is a token bucket allowing debt ([`RateLimiter`]): an I/O reserves its cost
//! at once and waits until the debt it joined is paid, so waiting I/Os are served in arrival
//! order and the long-run rate is exact. Policies change while volumes are exported.

use std::sync::Arc;
use std::time::Duration;

use crate::rate::RateLimiter;
use crate::{BlockDevice, IoFuture};
use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;
use parking_lot::RwLock;

/// Burst: this much of a second's allowance may be spent at once.
const BURST: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Slot(RwLock<Option<Arc<RateLimiter>>>);

impl Slot {
    fn set(&self, rate: Option<u64>) {
        let mut s = self.0.write();
        match (rate, s.as_ref()) {
            (None, _) => *s = None,
            (Some(r), Some(l)) => l.set_rate(r),
            (Some(r), None) => {
                let burst = (r as f64 * BURST.as_secs_f64()).max(1.0) as u64;
                *s = Some(Arc::new(RateLimiter::new(r, burst)));
            }
        }
    }

    fn rate(&self) -> Option<u64> {
        self.0.read().as_ref().map(|l| l.rate())
    }

    /// Reserves `cost`; how long to wait for it.
    fn reserve(&self, cost: u64) -> Duration {
        match self.0.read().as_ref() {
            None => Duration::ZERO,
            Some(l) => {
                l.spend(cost);
                l.delay()
            }
        }
    }
}

/// A volume's limits; `None`: not limited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosLimits {
    /// Read operations per second.
    pub read_iops: Option<u64>,
    /// Write operations per second (write zeroes and unmaps count as writes).
    pub write_iops: Option<u64>,
    /// Bytes read per second.
    pub read_bps: Option<u64>,
    /// Bytes written per second.
    pub write_bps: Option<u64>,
}

impl QosLimits {
    /// Each limit with its name (`read_iops`, `write_iops`, `read_bps`, `write_bps`).
    pub fn named(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("read_iops", self.read_iops),
            ("write_iops", self.write_iops),
            ("read_bps", self.read_bps),
            ("write_bps", self.write_bps),
        ]
    }
}

/// A volume's live limits.
#[derive(Default)]
pub struct Qos {
    read_iops: Slot,
    write_iops: Slot,
    read_bps: Slot,
    write_bps: Slot,
}

impl Qos {
    /// Applies `p` from now on.
    pub fn apply(&self, p: &QosLimits) {
        self.read_iops.set(p.read_iops);
        self.write_iops.set(p.write_iops);
        self.read_bps.set(p.read_bps);
        self.write_bps.set(p.write_bps);
    }

    /// The limits in force.
    pub fn limits(&self) -> QosLimits {
        QosLimits {
            read_iops: self.read_iops.rate(),
            write_iops: self.write_iops.rate(),
            read_bps: self.read_bps.rate(),
            write_bps: self.write_bps.rate(),
        }
    }

    fn wait_read(&self, bytes: u64) -> Duration {
        self.read_iops.reserve(1).max(self.read_bps.reserve(bytes))
    }

    fn wait_write(&self, bytes: u64) -> Duration {
        self.write_iops
            .reserve(1)
            .max(self.write_bps.reserve(bytes))
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
            write_iops: Some(100),
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
        assert_eq!(qos.limits().write_iops, Some(100));
        // Removing the policy lifts the limit.
        qos.apply(&QosLimits::default());
        assert_eq!(qos.limits(), QosLimits::default());
    }

    #[tokio::test]
    async fn bandwidth_limits_count_bytes() {
        let qos = Arc::new(Qos::default());
        qos.apply(&QosLimits {
            read_bps: Some(1 << 20),
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
}
