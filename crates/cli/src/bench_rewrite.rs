//! `alcubierre bench rewrite`: how much cache a rewritten working set takes while the backend
//! is slow (see docs/PERFORMANCE.md, "Rewrites").
//!
//! A small working set (16 MiB by default) of a larger volume is rewritten with 4 KiB random
//! writes at a fixed queue depth while destage runs at a low cap (the slow backend). The dirty
//! bytes are sampled every 50 ms; the report gives their peak and mean, what the host wrote, what
//! destage wrote into the backend, how often writers waited for space, and how long the cache
//! took to drain once the load stopped. A cache whose capacity follows the live data keeps the
//! dirty bytes near the working set and destages each block's newest version only.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_block::RateLimiter;
use alcubierre_cache::{CacheService, ServiceConfig};
use serde::Serialize;

use crate::load::{self, Pattern};

/// Options of `bench rewrite`.
#[derive(clap::Args)]
pub struct RewriteBenchArgs {
    /// Directory for the cache file and the backend (must support O_DIRECT, e.g. not tmpfs).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Cache file size in MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Volume size in MiB.
    #[arg(long, default_value_t = 1024)]
    volume_mib: u64,
    /// The rewritten working set in MiB (the first part of the volume).
    #[arg(long, default_value_t = 16)]
    working_set_mib: u64,
    /// Destage cap in MB/s: the slow backend.
    #[arg(long, default_value_t = 10)]
    destage_mb_s: u64,
    /// Seconds of rewriting.
    #[arg(long, default_value_t = 20)]
    runtime: u64,
    /// Queue depth.
    #[arg(long, default_value_t = 32)]
    qd: usize,
}

#[derive(Serialize)]
struct Report {
    machine: String,
    working_set_bytes: u64,
    cache_bytes: u64,
    destage_cap_bytes_per_s: u64,
    qd: usize,
    iops: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    cpu_us_per_op: f64,
    host_bytes: u64,
    destaged_bytes: u64,
    /// Blocks destage skipped because a newer version of them was in the journal.
    superseded_blocks: u64,
    dirty_peak_bytes: u64,
    dirty_mean_bytes: u64,
    dirty_end_bytes: u64,
    /// Times a commit waited for destage to free journal space.
    throttled: u64,
    /// From the end of the load until nothing was dirty.
    drain_s: f64,
}

pub fn run(args: &RewriteBenchArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.working_set_mib >= 1 && args.working_set_mib <= args.volume_mib,
        "--working-set-mib must be between 1 and --volume-mib ({})",
        args.volume_mib
    );
    anyhow::ensure!(args.destage_mb_s >= 1, "--destage-mb-s must be at least 1");
    let (engine, vol, _, _) =
        crate::bench::engine_on_files(&args.dir, None, "rewrite", args.cache_mib, args.volume_mib)?;
    let cap = args.destage_mb_s * 1_000_000;
    let cfg = ServiceConfig {
        destage_limit: Some(Arc::new(RateLimiter::new(cap, 1 << 20))),
        ..ServiceConfig::default()
    };
    let cache_bytes = engine.stats().capacity_bytes;
    // Started inside the load's runtime, as in a node (cache hits through io_uring).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let svc = {
        let _in = rt.enter();
        CacheService::start(engine.clone(), cfg)
    };
    let dev = svc.volume(vol)?;

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Acquire) {
                samples.push(engine.stats().dirty_bytes);
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let s0 = engine.stats();
    let span = (args.working_set_mib << 20) / 4096;
    let r = rt.block_on(load::run(
        &dev,
        Pattern::RandWrite,
        args.qd,
        span,
        Duration::from_secs(args.runtime),
    ))?;
    done.store(true, Ordering::Release);
    let samples = sampler.join().expect("sampler");
    let end = engine.stats();
    let t = Instant::now();
    while engine.stats().dirty_bytes > 0 {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "the cache did not drain in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_s = t.elapsed().as_secs_f64();
    let fin = engine.stats();
    svc.shutdown();
    let report = Report {
        machine: crate::sysinfo::machine(),
        working_set_bytes: args.working_set_mib << 20,
        cache_bytes,
        destage_cap_bytes_per_s: cap,
        qd: args.qd,
        iops: r.iops(),
        p50_us: r.lat_us(0.5),
        p99_us: r.lat_us(0.99),
        max_us: r.lat_us(1.0),
        cpu_us_per_op: r.cpu_us_per_op(),
        host_bytes: r.ops * 4096,
        destaged_bytes: fin.destaged_bytes - s0.destaged_bytes,
        superseded_blocks: fin.superseded_blocks - s0.superseded_blocks,
        dirty_peak_bytes: samples.iter().copied().max().unwrap_or(0),
        dirty_mean_bytes: samples.iter().sum::<u64>() / samples.len().max(1) as u64,
        dirty_end_bytes: end.dirty_bytes,
        throttled: fin.throttled - s0.throttled,
        drain_s,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn print(r: &Report) {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!("machine: {}", r.machine);
    println!(
        "rewriting {:.0} MiB at QD{} with destage capped at {:.0} MB/s, {:.0} MiB of journal",
        mib(r.working_set_bytes),
        r.qd,
        r.destage_cap_bytes_per_s as f64 / 1e6,
        mib(r.cache_bytes)
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!("| IOPS | {:.0} |", r.iops);
    println!(
        "| latency p50 / p99 / max µs | {:.0} / {:.0} / {:.0} |",
        r.p50_us, r.p99_us, r.max_us
    );
    println!("| CPU µs per write | {:.1} |", r.cpu_us_per_op);
    println!("| host wrote MiB | {:.1} |", mib(r.host_bytes));
    println!(
        "| destaged MiB (by the end of the drain) | {:.1} |",
        mib(r.destaged_bytes)
    );
    println!("| superseded blocks skipped | {} |", r.superseded_blocks);
    println!(
        "| dirty MiB: peak / mean / at the end of the load | {:.1} / {:.1} / {:.1} |",
        mib(r.dirty_peak_bytes),
        mib(r.dirty_mean_bytes),
        mib(r.dirty_end_bytes)
    );
    println!("| commits that waited for space | {} |", r.throttled);
    println!("| drain after the load, s | {:.2} |", r.drain_s);
}
