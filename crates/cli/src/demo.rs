//! `alcubierre demo`: what exists today, end to end on one machine.
//!
//! A cache file and a file backend in a temporary directory; a volume written through the
//! cache at queue depth 32 and verified; the process "restarts" with dirty data in the journal
//! (recovery replays it); destage at the configured rate; the backend image compared with what
//! was written. The three-node cluster demo exported over NVMe/TCP replaces this with the
//! control plane (issue 5).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_block::BlockDevice;
use alcubierre_cache::{CacheService, Engine, FormatOptions, ServiceConfig};
use alcubierre_io::{DirectFile, Medium};
use alcubierre_types::{BlockCount, BlockSize, ByteSize, Lba, VolumeGeometry, VolumeId};
use anyhow::Context;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

const CACHE: u64 = 256 << 20;
const VOLUME: u64 = 1 << 30;
const WRITES: u64 = 16384; // 64 MiB of 4 KiB writes

fn block_data(i: u64) -> Bytes {
    let mut v = vec![0u8; 4096];
    for (j, c) in v.chunks_mut(8).enumerate() {
        c.copy_from_slice(&(i * 512 + j as u64).to_le_bytes());
    }
    Bytes::from(v)
}

/// The demo's volume blocks: a permutation of the first WRITES*4 blocks, so writes are random.
fn target(i: u64) -> u64 {
    (i * 7919) % (WRITES * 4)
}

/// The demo's directory: the one given (created if needed), or a new temporary directory under
/// /var/tmp (removed when the returned guard drops).
pub fn demo_dir(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            (d, None)
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("alcubierre-demo-")
                .tempdir_in("/var/tmp")?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    })
}

pub fn run(dir: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let (dir, _tmp) = demo_dir(dir)?;
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    let cache_path = dir.join("cache.img");
    say(format!(
        "cache device: {} ({})",
        cache_path.display(),
        ByteSize(CACHE)
    ));
    let m = DirectFile::create_file(&cache_path, CACHE)
        .with_context(|| format!("creating {}", cache_path.display()))?;
    Engine::format(&m, &FormatOptions::default())?;
    drop(m);
    let backend = Arc::new(FileBackend::new(dir.join("backend"))?);
    let vol = VolumeId::random();
    backend.create(vol, ByteSize(VOLUME))?;
    let geometry = VolumeGeometry::new(BlockSize::B512, ByteSize(VOLUME))?;
    say(format!(
        "volume {vol}: {} in {}",
        ByteSize(VOLUME),
        backend.describe()
    ));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let open = |rate: u64| -> anyhow::Result<(Arc<Engine>, CacheService)> {
        let medium: Arc<dyn Medium> = Arc::new(DirectFile::open(&cache_path)?);
        let e = Arc::new(Engine::open(medium, backend.clone() as Arc<dyn Backend>)?);
        e.attach(vol, geometry)?;
        let svc = CacheService::start(
            e.clone(),
            ServiceConfig {
                destage_limit: Some(Arc::new(alcubierre_cache::RateLimiter::new(rate, 0))),
                ..Default::default()
            },
        );
        Ok((e, svc))
    };

    // Destage is held to 1 MB/s at first, so the restart finds a journal to replay.
    say("destage rate: 1 MB/s before the restart, 50 MB/s after".into());
    let (engine, svc) = open(1_000_000)?;
    let dev = svc.volume(vol)?;
    let t = Instant::now();
    rt.block_on(async {
        let mut q = FuturesUnordered::new();
        for i in 0..WRITES {
            q.push(dev.write(Lba(target(i) * 8), block_data(i)));
            if q.len() == 32 {
                q.next().await.expect("in flight")?;
            }
        }
        while let Some(r) = q.next().await {
            r?;
        }
        anyhow::Ok(())
    })?;
    let el = t.elapsed();
    let s = engine.stats();
    say(format!(
        "wrote {} in {:.2} s at QD32: {:.0} IOPS, {} device syncs ({:.1} writes per sync)",
        ByteSize(WRITES * 4096),
        el.as_secs_f64(),
        WRITES as f64 / el.as_secs_f64(),
        s.syncs,
        WRITES as f64 / s.syncs as f64
    ));
    verify(&rt, &dev)?;
    say(format!(
        "verified every block; dirty in cache: {}, destaged so far: {}",
        ByteSize(s.dirty_bytes),
        ByteSize(engine.stats().destaged_bytes)
    ));

    say("restarting: stopping the service with dirty data in the journal".into());
    svc.shutdown();
    drop(dev);
    drop(engine);
    let (engine, svc) = open(50_000_000)?;
    let r = engine.recovery_report();
    say(format!(
        "recovery replayed {} batches; {} dirty; torn batches {}, poisoned blocks {}",
        r.batches(),
        ByteSize(engine.stats().dirty_bytes),
        r.torn_batches(),
        r.poisoned_blocks()
    ));
    let dev = svc.volume(vol)?;
    verify(&rt, &dev)?;
    say("verified every block after the restart".into());

    let t = Instant::now();
    while engine.stats().dirty_bytes > 0 {
        anyhow::ensure!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "destage did not finish within 60 s ({} still dirty)",
            ByteSize(engine.stats().dirty_bytes)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let s = engine.stats();
    say(format!(
        "destaged {} to the backend in {:.1} s (cap 50 MB/s, lifted above 75% dirty)",
        ByteSize(s.destaged_bytes),
        t.elapsed().as_secs_f64()
    ));
    svc.shutdown();
    drop(dev);
    // The backend alone now holds every block.
    let mut buf = vec![0u8; 4096];
    for i in 0..WRITES {
        backend.read(
            vol,
            alcubierre_types::ByteOffset(target(i) * 4096),
            &mut buf,
        )?;
        anyhow::ensure!(
            buf[..] == block_data(i)[..],
            "backend block {} differs",
            target(i)
        );
    }
    say("the backend image matches every write".into());
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "writes": WRITES, "destaged_bytes": s.destaged_bytes,
                "recovered_batches": engine.recovery_report().batches()})
        );
    } else {
        println!(
            "demo complete. The 3-node cluster demo over NVMe/TCP arrives with the control plane."
        );
    }
    Ok(())
}

fn verify(rt: &tokio::runtime::Runtime, dev: &dyn BlockDevice) -> anyhow::Result<()> {
    rt.block_on(async {
        let mut q = FuturesUnordered::new();
        for i in 0..WRITES {
            let f = dev.read(Lba(target(i) * 8), BlockCount(8));
            q.push(async move { (i, f.await) });
            if q.len() == 32 || i + 1 == WRITES {
                while let Some((i, got)) = q.next().await {
                    anyhow::ensure!(
                        got? == block_data(i),
                        "block {} reads back wrong",
                        target(i)
                    );
                    if q.len() < 32 && i + 1 < WRITES {
                        break;
                    }
                }
            }
        }
        while let Some((i, got)) = q.next().await {
            anyhow::ensure!(
                got? == block_data(i),
                "block {} reads back wrong",
                target(i)
            );
        }
        Ok(())
    })
}
