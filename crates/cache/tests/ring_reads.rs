//! Cache hits read through io_uring: on a real file opened with O_DIRECT, inside a tokio
//! runtime, reads held whole by cached blocks go through the ring; while the log goes round
//! under them (a small cache, writes all the time), every read returns the data of the block
//! it asked for, in a version at least as new as the last one acknowledged before it.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_block::BlockDevice;
use alcubierre_cache::{Engine, FormatOptions, ServiceConfig};
use alcubierre_types::{BlockCount, Lba, VolumeId};
use bytes::Bytes;
use common::{engine_with_volume, io_uring_enabled, runtime, start_in, vol};

const BLOCKS: u64 = 256; // a 1 MiB working set of 4 KiB blocks

/// Block `b`'s data in version `v`: both written all over it.
fn data(b: u64, v: u64) -> Bytes {
    let mut d = vec![0u8; 4096];
    for c in d.chunks_mut(16) {
        c[..8].copy_from_slice(&b.to_le_bytes());
        c[8..].copy_from_slice(&v.to_le_bytes());
    }
    Bytes::from(d)
}

fn parse(d: &[u8]) -> (u64, u64) {
    let b = u64::from_le_bytes(d[..8].try_into().unwrap());
    let v = u64::from_le_bytes(d[8..16].try_into().unwrap());
    for c in d.chunks(16) {
        assert_eq!((&c[..8], &c[8..]), (&d[..8], &d[8..16]), "a torn block");
    }
    (b, v)
}

/// An 8 MiB cache file formatted with `fmt`, with a volume of `BLOCKS` blocks attached: the
/// engine, the volume and the file.
fn engine_on_file(name: &str, fmt: &FormatOptions) -> (Arc<Engine>, VolumeId, PathBuf) {
    engine_with_volume(name, fmt, vol(1), BLOCKS)
}

#[test]
fn cache_hits_through_io_uring_stay_right_while_the_log_goes_round() {
    // 8 MiB of cache for a 1 MiB working set rewritten all the time: the log goes round
    // every few hundred milliseconds and evicts under the readers.
    let (engine, v, path) = engine_on_file(
        "ring-reads",
        &FormatOptions {
            partitions: 1,
            max_batch_data_blocks: 16,
        },
    );
    let rt = runtime(2);
    let cfg = ServiceConfig {
        destage_limit: None,
        ..ServiceConfig::default()
    };
    let svc = start_in(&rt, &engine, cfg);
    if !io_uring_enabled() {
        assert_eq!(svc.ring_reads(), None);
        eprintln!("io_uring is disabled on this kernel: the ring path is not tested here");
        svc.shutdown();
        return;
    }
    assert_eq!(svc.ring_reads(), Some(0), "the ring serves hits");
    let dev = Arc::new(svc.volume(v).unwrap());
    // The newest acknowledged version of each block (512-byte LBAs, 8 per block).
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..BLOCKS).map(|_| AtomicU64::new(0)).collect());
    rt.block_on(async {
        for b in 0..BLOCKS {
            dev.write(Lba(b * 8), data(b, 1)).await.unwrap();
            acked[b as usize].store(1, Ordering::Release);
        }
        let until = Instant::now() + Duration::from_secs(4);
        let writer = {
            let (dev, acked) = (dev.clone(), acked.clone());
            tokio::spawn(async move {
                let mut v = 1;
                while Instant::now() < until {
                    v += 1;
                    for b in 0..BLOCKS {
                        dev.write(Lba(b * 8), data(b, v)).await.unwrap();
                        acked[b as usize].store(v, Ordering::Release);
                    }
                }
                v
            })
        };
        let mut readers = Vec::new();
        for r in 0..4u64 {
            let (dev, acked) = (dev.clone(), acked.clone());
            readers.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut b = r * 61;
                while Instant::now() < until {
                    b = (b * 31 + 7) % BLOCKS;
                    let floor = acked[b as usize].load(Ordering::Acquire);
                    // Whole blocks, and (every fourth read) three sectors from the middle.
                    let (lba, count) = if n % 4 == 3 {
                        (b * 8 + 2, 3)
                    } else {
                        (b * 8, 8)
                    };
                    let got = dev.read(Lba(lba), BlockCount(count)).await.unwrap();
                    assert_eq!(got.len() as u64, count * 512);
                    let (gb, gv) = if count == 8 {
                        parse(&got)
                    } else {
                        // Sector 2 starts 1024 bytes into the block: a whole 16-byte cell.
                        parse(&got[..count as usize * 512])
                    };
                    assert_eq!(gb, b, "read of block {b} returned block {gb}'s data");
                    assert!(
                        gv >= floor,
                        "block {b}: version {gv} older than acked {floor}"
                    );
                    n += 1;
                }
                n
            }));
        }
        let versions = writer.await.unwrap();
        let mut reads = 0;
        for r in readers {
            reads += r.await.unwrap();
        }
        assert!(
            versions > 10,
            "the log went round: {versions} versions of each block"
        );
        eprintln!("{reads} reads checked over {versions} versions of each block");
    });
    let stats = engine.stats();
    let ring = svc.ring_reads().unwrap();
    assert!(
        stats.evicted_blocks > 0,
        "the log went round under the readers"
    );
    assert!(ring > 100, "reads went through the ring: {ring}");
    eprintln!(
        "{ring} reads through the ring, {} blocks evicted meanwhile",
        stats.evicted_blocks
    );
    // Nothing acknowledged was lost either.
    let want: HashMap<u64, u64> = (0..BLOCKS)
        .map(|b| (b, acked[b as usize].load(Ordering::Acquire)))
        .collect();
    rt.block_on(async {
        for (b, v) in &want {
            let got = dev.read(Lba(b * 8), BlockCount(8)).await.unwrap();
            assert_eq!(parse(&got), (*b, *v));
        }
    });
    svc.shutdown();
    // After shutdown a hit is answered (as "shutting down"), not left waiting on a ring
    // nobody reaps.
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_secs(5), dev.read(Lba(0), BlockCount(8)))
            .await
            .expect("answered after shutdown");
        assert!(r.is_err(), "no reads after shutdown");
    });
    drop(dev);
    drop(rt);
    std::fs::remove_file(&path).unwrap();
}

/// A task that polls without letting its runtime run the reactor (the NVMe/TCP driver's busy
/// poll) still sees its write and its read complete: polling either reaps the ring.
#[test]
fn a_busy_polled_write_and_read_complete_without_the_reactor() {
    use futures::FutureExt;
    if !io_uring_enabled() {
        return;
    }
    let (engine, v, path) = engine_on_file("ring-poll", &FormatOptions::default());
    // A current-thread runtime that nobody drives after the start: its reaper never runs.
    let rt = runtime(0);
    let svc = start_in(&rt, &engine, ServiceConfig::default());
    let dev = svc.volume(v).unwrap();
    // Polls until done, as a busy-polling task does, without ever letting the runtime run.
    fn spin<T>(mut f: alcubierre_block::IoFuture<T>, what: &str) -> T {
        let start = Instant::now();
        loop {
            if let Some(r) = (&mut f).now_or_never() {
                break r.unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the {what} never completed"
            );
            std::thread::yield_now();
        }
    }
    assert!(svc.ring_writes(), "the journal is written through the ring");
    spin(dev.write(Lba(8), data(1, 7)), "write");
    let got = spin(dev.read(Lba(8), BlockCount(8)), "read");
    assert_eq!(parse(&got), (1, 7));
    assert_eq!(svc.ring_reads(), Some(1), "served by the ring");
    svc.shutdown();
    drop(rt);
    std::fs::remove_file(&path).unwrap();
}
