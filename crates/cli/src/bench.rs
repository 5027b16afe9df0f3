//! `alcubierre bench engine`: the cache engine's baseline (see docs/PERFORMANCE.md).
//!
//! 1. Creates a cache file (zero-filled so its blocks are allocated), formats it, and attaches a
//!    volume whose backend is a sparse file in the same directory (or in `--backend-dir`).
//! 2. Through the threaded service, runs 4 KiB random writes then (after filling the volume so
//!    reads hit the cache) 4 KiB random reads, at each queue depth, for a fixed time; reports
//!    IOPS, p50/p99 latency, process CPU time per request, and RSS per GiB cached.
//! 3. Runs fio on the same file with the same patterns (O_DIRECT, fdatasync every 32 writes) as
//!    the device's limit, and prints the ratios.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_block::BlockDevice;
use alcubierre_cache::{CacheService, Engine, FormatOptions, ServiceConfig};
use alcubierre_io::{DirectFile, Medium};
use alcubierre_types::{BlockSize, ByteSize, Lba, VolumeGeometry, VolumeId};
use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;

use crate::load::{self, LoadResult, Pattern};
use crate::sysinfo;

/// Options of `bench engine`.
#[derive(clap::Args)]
pub struct EngineBenchArgs {
    /// Directory for the cache file and the backend (must support O_DIRECT, e.g. not tmpfs).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Cache file size in MiB.
    #[arg(long, default_value_t = 1024)]
    cache_mib: u64,
    /// Volume (and fio working set) size in MiB; reads hit the cache when it fits.
    #[arg(long, default_value_t = 512)]
    volume_mib: u64,
    /// Seconds per workload.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// Queue depths.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    qd: Vec<usize>,
    /// Skip the fio side of the comparison.
    #[arg(long)]
    no_fio: bool,
    /// Directory for the backend's files (default: `--dir`). Elsewhere than the cache file
    /// (e.g. /dev/shm), destage does not share the cache's disk, as with a backend on other
    /// hosts (Ceph).
    #[arg(long)]
    backend_dir: Option<PathBuf>,
}

#[derive(Serialize, Clone)]
struct Row {
    workload: String,
    qd: usize,
    iops: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
    /// Of which the destager (the cost of writing the backend, not of serving the request).
    destage_cpu_us_per_op: f64,
}

impl Row {
    fn from_load(workload: &str, qd: usize, r: &LoadResult, destage: Duration) -> Self {
        Self {
            workload: workload.into(),
            qd,
            iops: r.iops(),
            p50_us: r.lat_us(0.5),
            p99_us: r.lat_us(0.99),
            cpu_us_per_op: r.cpu_us_per_op(),
            destage_cpu_us_per_op: destage.as_secs_f64() * 1e6 / r.ops.max(1) as f64,
        }
    }
}

#[derive(Serialize)]
struct Report {
    machine: String,
    cache_file: String,
    backend_dir: String,
    engine: Vec<Row>,
    fio: Vec<Row>,
    rss_bytes_per_gib_cached: f64,
    syncs_per_write_qd32: f64,
    /// Reads served through io_uring (`None`: every read went to the reader threads).
    reads_through_io_uring: Option<u64>,
}

/// A formatted cache file `<name>-cache.img` of `cache_mib` MiB in `dir` (zero-filled, so its
/// blocks are allocated) with a fresh `volume_mib` MiB volume (512-byte blocks) attached, whose
/// backend is a sparse file under `<name>-backend` in `backend_in` (default `dir`): the
/// engine, the volume, the cache file and the backend's directory.
pub(crate) fn engine_on_files(
    dir: &std::path::Path,
    backend_in: Option<&std::path::Path>,
    name: &str,
    cache_mib: u64,
    volume_mib: u64,
) -> anyhow::Result<(Arc<Engine>, VolumeId, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let cache_path = dir.join(format!("{name}-cache.img"));
    let backend_dir = backend_in.unwrap_or(dir).join(format!("{name}-backend"));
    let _ = std::fs::remove_dir_all(&backend_dir);
    eprintln!(
        "creating {cache_mib} MiB cache file {}",
        cache_path.display()
    );
    let medium = DirectFile::create_file(&cache_path, cache_mib << 20)
        .with_context(|| format!("creating {}", cache_path.display()))?;
    Engine::format(&medium, &FormatOptions::default())?;
    drop(medium);
    let medium: Arc<dyn Medium> = Arc::new(DirectFile::open(&cache_path)?);
    let backend = Arc::new(FileBackend::new(&backend_dir)?);
    let vol = VolumeId::random();
    let size = ByteSize(volume_mib << 20);
    backend.create(vol, size)?;
    let engine = Arc::new(Engine::open(medium, backend as Arc<dyn Backend>)?);
    engine.attach(vol, VolumeGeometry::new(BlockSize::B512, size)?)?;
    Ok((engine, vol, cache_path, backend_dir))
}

pub fn run(args: &EngineBenchArgs, json: bool) -> anyhow::Result<()> {
    let (engine, vol, cache_path, backend_dir) = engine_on_files(
        &args.dir,
        args.backend_dir.as_deref(),
        "engine",
        args.cache_mib,
        args.volume_mib,
    )?;
    let size = ByteSize(args.volume_mib << 20);
    // The service starts inside the load's runtime, so that cache hits go through io_uring
    // with their completions on this runtime's reactor, as in a node.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let svc = {
        let _in = rt.enter();
        CacheService::start(engine.clone(), ServiceConfig::default())
    };
    let dev = svc.volume(vol)?;
    let span = size.0 / 4096;
    let runtime = Duration::from_secs(args.runtime);
    let mut rows = Vec::new();
    let mut syncs_per_write_qd32 = 0.0;
    for &qd in &args.qd {
        let s0 = engine.stats();
        let d0 = destage_cpu();
        let r = rt.block_on(load::run(&dev, Pattern::RandWrite, qd, span, runtime))?;
        let d = destage_cpu().saturating_sub(d0);
        let s1 = engine.stats();
        if qd == 32 {
            syncs_per_write_qd32 = (s1.syncs - s0.syncs) as f64 / (s1.ops - s0.ops) as f64;
        }
        eprintln!("engine randwrite qd{qd}: {:.0} IOPS", r.iops());
        rows.push(Row::from_load("randwrite", qd, &r, d));
    }
    // Fill the whole volume so reads hit the cache, and measure RSS per GiB cached.
    let rss0 = sysinfo::rss_bytes();
    rt.block_on(async {
        let chunk = 256 << 10;
        let data = Bytes::from(vec![0x5au8; chunk]);
        let mut lba = 0;
        while lba * 512 < size.0 {
            dev.write(Lba(lba), data.clone()).await?;
            lba += chunk as u64 / 512;
        }
        anyhow::Ok(())
    })?;
    let cached_gib = engine.stats().index_blocks as f64 * 4096.0 / (1u64 << 30) as f64;
    let rss_per_gib = (sysinfo::rss_bytes().saturating_sub(rss0)) as f64 / cached_gib;
    // Reads are measured with destage idle, so they show the engine rather than the backend's
    // writes competing for the same disk.
    while engine.stats().dirty_bytes > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &qd in &args.qd {
        let d0 = destage_cpu();
        let r = rt.block_on(load::run(&dev, Pattern::RandRead, qd, span, runtime))?;
        let d = destage_cpu().saturating_sub(d0);
        eprintln!("engine randread qd{qd}: {:.0} IOPS", r.iops());
        rows.push(Row::from_load("randread", qd, &r, d));
    }
    let stats = engine.stats();
    let reads_through_io_uring = svc.ring_reads();
    svc.shutdown();
    drop(engine);
    let mut fio = Vec::new();
    if !args.no_fio {
        for rw in ["randwrite", "randread"] {
            for &qd in &args.qd {
                // Writes: fdatasync every 32 writes (the device limit); at QD1 also
                // after every write, which is what a durable acknowledgement costs.
                let syncs: &[u32] = match (rw, qd) {
                    ("randwrite", 1) => &[32, 1],
                    ("randwrite", _) => &[32],
                    _ => &[0],
                };
                for &every in syncs {
                    let row = run_fio(&cache_path, rw, qd, every, args.volume_mib, args.runtime)
                        .with_context(|| "running fio (install it, or pass --no-fio)")?;
                    eprintln!("fio {} qd{qd}: {:.0} IOPS", row.workload, row.iops);
                    fio.push(row);
                }
            }
        }
    }
    let report = Report {
        machine: sysinfo::machine(),
        cache_file: cache_path.display().to_string(),
        backend_dir: backend_dir.display().to_string(),
        engine: rows,
        fio,
        rss_bytes_per_gib_cached: rss_per_gib,
        syncs_per_write_qd32,
        reads_through_io_uring,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
        eprintln!(
            "cache stats: {} ops, {} batches, {} destaged, {} throttled; reads through io_uring: {}",
            stats.ops,
            stats.batches,
            ByteSize(stats.destaged_bytes),
            stats.throttled,
            report
                .reads_through_io_uring
                .map_or("none (reader threads)".to_string(), |n| n.to_string())
        );
    }
    Ok(())
}

fn destage_cpu() -> Duration {
    sysinfo::cpu_by_role()
        .get("cache-destage")
        .copied()
        .unwrap_or_default()
}

fn print_table(r: &Report) {
    println!("machine: {}", r.machine);
    println!(
        "| side | workload | QD | IOPS | p50 µs | p99 µs | CPU µs/op | of which destage | IOPS vs engine |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for e in &r.engine {
        println!(
            "| engine | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | 1.00 |",
            e.workload, e.qd, e.iops, e.p50_us, e.p99_us, e.cpu_us_per_op, e.destage_cpu_us_per_op
        );
        for f in r
            .fio
            .iter()
            .filter(|f| f.qd == e.qd && f.workload.starts_with(&e.workload))
        {
            println!(
                "| fio | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | - | {:.2} |",
                f.workload,
                f.qd,
                f.iops,
                f.p50_us,
                f.p99_us,
                f.cpu_us_per_op,
                f.iops / e.iops
            );
        }
    }
    println!(
        "RSS per GiB cached: {:.1} MiB; syncs per write at QD32: {:.3}",
        r.rss_bytes_per_gib_cached / (1u64 << 20) as f64,
        r.syncs_per_write_qd32
    );
}

fn run_fio(
    file: &std::path::Path,
    rw: &str,
    qd: usize,
    fdatasync_every: u32,
    size_mib: u64,
    runtime: u64,
) -> anyhow::Result<Row> {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=bench",
        &format!("--filename={}", file.display()),
        &format!("--size={size_mib}M"),
        "--bs=4k",
        "--direct=1",
        &format!("--rw={rw}"),
        &format!("--iodepth={qd}"),
        &format!("--runtime={runtime}"),
        "--time_based",
        "--randrepeat=0",
        "--output-format=json",
    ]);
    cmd.arg(if qd > 1 {
        "--ioengine=libaio"
    } else {
        "--ioengine=psync"
    });
    if fdatasync_every > 0 {
        cmd.arg(format!("--fdatasync={fdatasync_every}"));
    }
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let job = &v["jobs"][0];
    let side = if rw.contains("write") {
        "write"
    } else {
        "read"
    };
    let s = &job[side];
    let pct = |p: &str| s["clat_ns"]["percentile"][p].as_f64().unwrap_or(0.0) / 1000.0;
    let ios = s["total_ios"].as_f64().unwrap_or(0.0);
    let secs = job["job_runtime"].as_f64().unwrap_or(1.0) / 1000.0;
    let cpu_pct = job["usr_cpu"].as_f64().unwrap_or(0.0) + job["sys_cpu"].as_f64().unwrap_or(0.0);
    let workload = if fdatasync_every > 0 {
        format!("{rw} fdatasync/{fdatasync_every}")
    } else {
        rw.to_string()
    };
    Ok(Row {
        workload,
        qd,
        iops: s["iops"].as_f64().unwrap_or(0.0),
        p50_us: pct("50.000000"),
        p99_us: pct("99.000000"),
        cpu_us_per_op: cpu_pct / 100.0 * secs * 1e6 / ios.max(1.0),
        destage_cpu_us_per_op: 0.0,
    })
}
