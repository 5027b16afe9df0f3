//! A closed-loop load generator over any [`BlockDevice`]: keeps `qd` requests in flight for a
//! fixed time and records each one's latency.

use std::time::{Duration, Instant};

use alcubierre_block::BlockDevice;
use alcubierre_types::{BlockCount, Lba};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::{Rng, SeedableRng};

/// Random 4 KiB reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Random 4 KiB writes.
    RandWrite,
    /// Random 4 KiB reads.
    RandRead,
}

/// What a run measured.
pub struct LoadResult {
    /// Completed requests.
    pub ops: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Process CPU time used during the run.
    pub cpu: Duration,
    /// Sorted latencies in nanoseconds.
    pub lat_ns: Vec<u64>,
}

impl LoadResult {
    /// Requests per second.
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    /// The `q`-quantile latency in microseconds.
    pub fn lat_us(&self, q: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_ns.len() - 1) as f64 * q).round() as usize;
        self.lat_ns[i] as f64 / 1000.0
    }
    /// CPU microseconds per request.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }
}

/// Runs `pattern` at queue depth `qd` over the first `span_blocks` 4 KiB blocks for `runtime`.
pub async fn run(
    dev: &dyn BlockDevice,
    pattern: Pattern,
    qd: usize,
    span_blocks: u64,
    runtime: Duration,
) -> anyhow::Result<LoadResult> {
    let per4k = 4096 / dev.geometry().block_size().bytes();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let data = Bytes::from(vec![0xa5u8; 4096]);
    let mut lat_ns = Vec::with_capacity(1 << 20);
    let cpu0 = crate::sysinfo::process_cpu();
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut ops = 0u64;
    loop {
        let submitting = start.elapsed() < runtime;
        while submitting && in_flight.len() < qd {
            let lba = Lba(rng.gen_range(0..span_blocks) * per4k);
            let t = Instant::now();
            let fut = match pattern {
                Pattern::RandWrite => dev.write(lba, data.clone()),
                Pattern::RandRead => {
                    let f = dev.read(lba, BlockCount(per4k));
                    Box::pin(async move { f.await.map(|_| ()) })
                }
            };
            in_flight.push(async move { fut.await.map(|()| t.elapsed()) });
        }
        match in_flight.next().await {
            Some(r) => {
                lat_ns.push(r?.as_nanos() as u64);
                ops += 1;
            }
            None => break,
        }
    }
    let elapsed = start.elapsed();
    let cpu = crate::sysinfo::process_cpu().saturating_sub(cpu0);
    lat_ns.sort_unstable();
    Ok(LoadResult {
        ops,
        elapsed,
        cpu,
        lat_ns,
    })
}
