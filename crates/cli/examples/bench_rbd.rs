//! Destage into Ceph RBD against Ceph's own `rbd bench`, on one throwaway Ceph (a monitor and a
//! memstore OSD on loopback, started here):
//!
//! 1. `rbd bench --io-type write` (64 KiB sequential, 16 threads), as the cluster's limit;
//! 2. the RBD backend alone, without the cache engine: `MIB` MiB written the way destage writes
//!    a sequential round (4 MiB rounds of 16 writes of 256 KiB through `write_many`, a flush
//!    after each), which is the ceiling of what destage can reach through this client;
//! 3. uncapped destage: `MIB` MiB of 64 KiB sequential writes land in the cache with destage
//!    paused, then it runs unlimited; throughput = bytes destaged / time until nothing is dirty;
//!    1, 2 and 3 alternate `REPS` times (default 3) and the ratios are of the medians;
//! 4. capped destage at 50 MB/s: the measured rate over the drain against the cap.
//!
//! `cargo run --release -p alcubierre --example bench_rbd [MIB]` (default 256; needs ceph-mon,
//! ceph-osd and ceph-common; `ROUND_MIB=N` sets the destage round size). The OSD keeps its data
//! in 2 GiB of memory, so `MIB` is at most about 1024.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_backend::Backend;
use alcubierre_block::BlockDevice;
use alcubierre_cache::{CacheService, Engine, FormatOptions, RateLimiter, ServiceConfig};
use alcubierre_io::{DirectFile, Medium};
use alcubierre_rbd::testing::CephCluster;
use alcubierre_rbd::RbdBackend;
use alcubierre_types::{BlockSize, ByteOffset, ByteSize, Lba, VolumeGeometry, VolumeId};
use bytes::Bytes;

/// User + system CPU time of process `pid` ("self" for this one), from /proc.
fn cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10) // 100 clock ticks per second
}

/// The whole machine's (busy, total) CPU ticks so far, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The share of the machine's CPU busy since `since` (from [`machine_ticks`]).
fn busy_since(since: (u64, u64)) -> f64 {
    let now = machine_ticks();
    (now.0 - since.0) as f64 / (now.1 - since.1).max(1) as f64
}

/// The write size of the fill and of `rbd bench`.
const CHUNK: u64 = 64 << 10;

/// Fills the cache with `mib` MiB of 64 KiB sequential writes (QD32) with destage paused, then
/// lets it run at `rate` (bytes/s); the destaged bytes and the time to drain.
fn destage(ceph: &CephCluster, mib: u64, rate: u64) -> anyhow::Result<(u64, Duration)> {
    let osd = ceph.osd_pid().to_string();
    std::fs::create_dir_all("target")?;
    let dir = tempfile::tempdir_in("target")?;
    let cache = dir.path().join("cache.img");
    let medium = DirectFile::create_file(&cache, (mib * 3) << 20)?;
    Engine::format(&medium, &FormatOptions::default())?;
    drop(medium);
    let medium: Arc<dyn Medium> = Arc::new(DirectFile::open(&cache)?);
    let backend = Arc::new(RbdBackend::connect(&ceph.config())?);
    let vol = VolumeId::random();
    let size = ByteSize((mib * 2) << 20);
    backend.create(vol, size)?;
    let engine = Arc::new(Engine::open(medium, backend.clone() as Arc<dyn Backend>)?);
    engine.attach(vol, VolumeGeometry::new(BlockSize::B4096, size)?)?;
    let limit = Arc::new(RateLimiter::new(1, 4 << 20));
    let svc = CacheService::start(
        engine.clone(),
        ServiceConfig {
            destage_limit: Some(limit.clone()),
            high_watermark: 1.0,
            round_bytes: std::env::var("ROUND_MIB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(ServiceConfig::default().round_bytes, |m| m << 20),
            ..ServiceConfig::default()
        },
    );
    let dev = svc.volume(vol)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let chunks = (mib << 20) / CHUNK;
    rt.block_on(async {
        let data = Bytes::from(vec![0xa5u8; CHUNK as usize]);
        let mut inflight = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        for i in 0..chunks {
            inflight.push(dev.write(Lba(i * CHUNK / 4096), data.clone()));
            if inflight.len() >= 32 {
                inflight.next().await.expect("in flight")?;
            }
        }
        while let Some(r) = inflight.next().await {
            r?;
        }
        anyhow::Ok(())
    })?;
    let s0 = engine.stats();
    let d0 = s0.destaged_bytes;
    let (me0, osd0, m0) = (cpu("self"), cpu(&osd), machine_ticks());
    limit.set_rate(rate);
    // The clock starts at the first destaged byte: a destager paused by the limit sleeps up to
    // 200 ms before it sees the new rate, which is not destage time.
    while engine.stats().destaged_bytes == d0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    // Bytes counted from here on (the first round finished before the clock started).
    let d0 = engine.stats().destaged_bytes;
    while engine.stats().dirty_bytes > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed();
    let destaged = engine.stats().destaged_bytes - d0;
    let (me, osd, busy) = (cpu("self") - me0, cpu(&osd) - osd0, busy_since(m0));
    let s1 = engine.stats();
    let ms = |a: u64, b: u64| (a - b) as f64 / 1e6;
    println!(
        "  {} rounds; time in them: reading the cache {:.0} ms, the backend {:.0} ms, checkpoints {:.0} ms",
        s1.destage_rounds - s0.destage_rounds,
        ms(s1.destage_read_ns, s0.destage_read_ns),
        ms(s1.destage_backend_ns, s0.destage_backend_ns),
        ms(s1.destage_checkpoint_ns, s0.destage_checkpoint_ns),
    );
    println!(
        "  drain: {:.2} s; CPU: destager process {:.2} s, OSD {:.2} s; machine {:.0}% busy",
        took.as_secs_f64(),
        me.as_secs_f64(),
        osd.as_secs_f64(),
        busy * 100.0
    );
    svc.shutdown();
    drop(engine);
    backend.delete(vol)?;
    Ok((destaged, took))
}

/// Writes `mib` MiB to a new image through the RBD backend as destage writes a sequential
/// round (16 writes of 256 KiB at once, then a flush); bytes per second and the machine's busy
/// share.
fn backend_alone(ceph: &CephCluster, mib: u64) -> anyhow::Result<(f64, f64)> {
    let backend = RbdBackend::connect(&ceph.config())?;
    let vol = VolumeId::random();
    backend.create(vol, ByteSize(mib << 20))?;
    const ROUND: usize = 4 << 20;
    const EXTENT: usize = 256 << 10;
    let buf = vec![0x5au8; ROUND];
    let (m0, t0) = (machine_ticks(), Instant::now());
    for round in 0..(mib << 20) / ROUND as u64 {
        let extents: Vec<(ByteOffset, &[u8])> = buf
            .chunks(EXTENT)
            .enumerate()
            .map(|(i, c)| (ByteOffset(round * ROUND as u64 + (i * EXTENT) as u64), c))
            .collect();
        backend.write_many(vol, &extents)?;
        backend.flush(vol)?;
    }
    let bps = (mib << 20) as f64 / t0.elapsed().as_secs_f64();
    let busy = busy_since(m0);
    backend.delete(vol)?;
    Ok((bps, busy))
}

/// The bytes per second of `rbd bench`'s summary line ("elapsed: 0  ops: 8192  ops/sec:
/// 31130.5  bytes/sec: 1.9 GiB/s"), from its ops/sec times the write size: bytes/sec is printed
/// with two significant digits only.
fn bytes_per_sec(out: &str) -> Option<f64> {
    let v = out
        .lines()
        .rev()
        .find_map(|l| l.split("ops/sec: ").nth(1))?;
    let ops: f64 = v.split_whitespace().next()?.parse().ok()?;
    Some(ops * CHUNK as f64)
}

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(256);
    let t = Instant::now();
    let ceph = CephCluster::start()?;
    println!(
        "Ceph (one monitor, one memstore OSD, loopback) up in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // `rbd bench` and the uncapped destage alternate, REPS times (default 3): both vary from
    // run to run on this shared machine, and the ratio is of their medians. A first `rbd bench`
    // is not counted: on a fresh memstore OSD writes run at half the speed they reach once the
    // OSD has memory freed by a deleted image to reuse, which every later run has.
    let warm = |name: &str| -> anyhow::Result<()> {
        ceph.rbd(&["create", "--size", &format!("{}M", mib * 2), name])?;
        ceph.rbd(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "1M",
            "--io-threads",
            "16",
            "--io-total",
            &format!("{mib}M"),
            "--io-pattern",
            "seq",
            name,
        ])?;
        ceph.rbd(&["rm", name])?;
        Ok(())
    };
    warm("warm-up")?;
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut theirs, mut alone, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=reps {
        ceph.rbd(&["create", "--size", &format!("{}M", mib * 2), "bench"])?;
        let m0 = machine_ticks();
        let out = ceph.rbd(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "64K",
            "--io-threads",
            "16",
            "--io-total",
            &format!("{mib}M"),
            "--io-pattern",
            "seq",
            "bench",
        ])?;
        let busy = busy_since(m0);
        let rbd_bps = bytes_per_sec(&out)
            .ok_or_else(|| anyhow::anyhow!("no bytes/sec in rbd bench's output: {out}"))?;
        println!(
            "[{rep}] rbd bench write 64K sequential, 16 threads, {mib} MiB: {:.1} MB/s; machine {:.0}% busy",
            rbd_bps / 1e6,
            busy * 100.0
        );
        ceph.rbd(&["rm", "bench"])?;
        let (raw, busy) = backend_alone(&ceph, mib)?;
        println!(
            "[{rep}] RBD backend alone, 4 MiB rounds of 16 x 256 KiB + flush: {:.1} MB/s = {:.2}x rbd bench; machine {:.0}% busy",
            raw / 1e6,
            raw / rbd_bps.max(1.0),
            busy * 100.0
        );
        alone.push(raw);
        let (bytes, took) = destage(&ceph, mib, u64::MAX / 4)?;
        let bps = bytes as f64 / took.as_secs_f64();
        println!(
            "[{rep}] uncapped destage of {} MiB of 64K sequential writes: {:.2} s, {:.1} MB/s = {:.2}x rbd bench",
            bytes >> 20,
            took.as_secs_f64(),
            bps / 1e6,
            bps / rbd_bps.max(1.0)
        );
        theirs.push(rbd_bps);
        ours.push(bps);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t, a, o) = (median(&mut theirs), median(&mut alone), median(&mut ours));
    println!(
        "median of {reps}: rbd bench {:.1} MB/s, RBD backend alone {:.1} MB/s ({:.2}x), uncapped destage {:.1} MB/s = {:.2}x rbd bench, {:.2}x the backend alone",
        t / 1e6,
        a / 1e6,
        a / t.max(1.0),
        o / 1e6,
        o / t.max(1.0),
        o / a.max(1.0)
    );
    let cap = 50_000_000u64;
    let (bytes, took) = destage(&ceph, mib, cap)?;
    let rate = bytes as f64 / took.as_secs_f64();
    println!(
        "destage capped at 50 MB/s: {} MiB in {:.2} s = {:.2} MB/s ({:+.1}% of the cap)",
        bytes >> 20,
        took.as_secs_f64(),
        rate / 1e6,
        (rate / cap as f64 - 1.0) * 100.0
    );
    Ok(())
}
