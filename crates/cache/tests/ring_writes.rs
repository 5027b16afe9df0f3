//! Journal writes through io_uring (`ring_writer`): on a real file opened with O_DIRECT, inside a
//! tokio runtime, whole-block writes are staged by the writing task and written through the ring,
//! while partial-block writes and zeroes (which read or need more than a staged batch) go to the
//! writer thread in turn, and direct commits from a thread wait for the same queue. With the log
//! going round under them (a small cache), every acknowledged write reads back, before and after
//! a reopen, and replicated writes' callbacks run in the order the writes were submitted.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_block::BlockDevice;
use alcubierre_cache::{Engine, FormatOptions, LogPos, ServiceConfig};
use alcubierre_types::{BlockCount, ByteSize, Lba};
use bytes::Bytes;
use common::{
    cache_file, engine_with_volume, geometry, io_uring_enabled, pattern, runtime, start_in, vol,
};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BLOCKS: u64 = 512; // 2 MiB volumes
const SECTORS: u64 = BLOCKS * 8;
const TASKS: u64 = 8;
/// Sectors per read when checking a whole volume (within the engine's largest transfer).
const CHUNK: u64 = 64;

/// Data for `sectors` sectors at `sector`, written by write `id`.
fn payload(id: u64, sector: u64, sectors: u64) -> Vec<u8> {
    let mut d = vec![0u8; (sectors * 512) as usize];
    for (i, s) in d.chunks_mut(512).enumerate() {
        pattern(id, sector + i as u64, s);
    }
    d
}

/// Compares a volume's contents with the model, naming the first sector that differs.
fn check(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: sector {} differs from the last acknowledged write",
            i / 512
        );
    }
}

#[test]
fn journal_writes_through_io_uring_keep_every_acknowledged_write_in_order() {
    if !io_uring_enabled() {
        eprintln!("io_uring is disabled on this kernel: the ring path is not tested here");
        return;
    }
    let fmt = FormatOptions {
        partitions: 1,
        max_batch_data_blocks: 16,
    };
    let (medium, path) = cache_file("ring-writes", 8, &fmt);
    let backend = Arc::new(MemBackend::new());
    let (a, b, c) = (vol(1), vol(2), vol(3));
    let vols = [a, b, c];
    for v in vols {
        backend.create(v, ByteSize(BLOCKS * 4096)).unwrap();
    }
    let engine = Arc::new(Engine::open(medium, backend.clone() as Arc<dyn Backend>).unwrap());
    for v in vols {
        engine.attach(v, geometry(BLOCKS * 4096)).unwrap();
    }
    // Volume b's replicated writes are this node's as the primary (a follower's would wait
    // for the primary's release before destage, and fill the small cache).
    engine.set_primary_fenced(
        b,
        alcubierre_cache::DestageFence::new(Arc::new(|| true), Instant::now()),
    );
    let rt = runtime(2);
    let cfg = ServiceConfig {
        destage_limit: None,
        ..ServiceConfig::default()
    };
    let svc = start_in(&rt, &engine, cfg);
    assert!(svc.ring_writes(), "the journal is written through the ring");
    let until = Instant::now() + Duration::from_secs(3);

    // Volume c: direct commits from a thread outside the runtime (`Engine::write`), which
    // queue behind the ring's batches and wait for their own.
    let direct = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let mut model = vec![0u8; (SECTORS * 512) as usize];
            let mut rng = SmallRng::seed_from_u64(3);
            let mut n = 0u64;
            while Instant::now() < until {
                let block = rng.gen_range(0..BLOCKS);
                let d = payload(3 << 32 | n, block * 8, 8);
                engine
                    .write(c, Lba(block * 8), Bytes::from(d.clone()))
                    .unwrap();
                model[(block * 4096) as usize..][..4096].copy_from_slice(&d);
                n += 1;
            }
            (model, n)
        })
    };

    let (model_a, model_b, callbacks, submitted) = rt.block_on(async {
        // Volume a: tasks with a region each, mixing whole-block writes (the ring), writes of
        // a few sectors anywhere (the writer thread: partial blocks are merged) and zeroes.
        let dev = Arc::new(svc.volume(a).unwrap());
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let dev = dev.clone();
            tasks.push(tokio::spawn(async move {
                let span = SECTORS / TASKS;
                let first = t * span;
                let mut model = vec![0u8; (span * 512) as usize];
                let mut rng = SmallRng::seed_from_u64(t);
                let mut id = t << 32;
                while Instant::now() < until {
                    id += 1;
                    let kind = rng.gen_range(0..16);
                    let (at, n) = if kind < 12 {
                        let blocks = rng.gen_range(1..=4);
                        (rng.gen_range(0..span / 8 - blocks) * 8, blocks * 8)
                    } else {
                        let n = rng.gen_range(1..=12);
                        (rng.gen_range(0..span - n), n)
                    };
                    let lba = Lba(first + at);
                    let range = (at * 512) as usize..((at + n) * 512) as usize;
                    let limit = Duration::from_secs(10);
                    if kind == 15 {
                        let w = dev.write_zeroes(lba, BlockCount(n));
                        tokio::time::timeout(limit, w)
                            .await
                            .expect("a write hung")
                            .unwrap();
                        model[range].fill(0);
                    } else {
                        let d = payload(id, first + at, n);
                        let w = dev.write(lba, Bytes::from(d.clone()));
                        tokio::time::timeout(limit, w)
                            .await
                            .expect("a write hung")
                            .unwrap();
                        model[range].copy_from_slice(&d);
                    }
                }
                (first, model)
            }));
        }
        // Volume b: replicated writes with callbacks, whole blocks and (one in five) a few
        // sectors, so that their groups alternate between the ring and the writer thread.
        let devb = svc.volume(b).unwrap();
        let order: Arc<Mutex<Vec<u64>>> = Arc::default();
        let mut model_b = vec![0u8; (SECTORS * 512) as usize];
        let mut rng = SmallRng::seed_from_u64(99);
        let mut seq = 0u64;
        while Instant::now() < until {
            for _ in 0..16 {
                seq += 1;
                let (at, n) = if seq.is_multiple_of(5) {
                    let n = rng.gen_range(1..=7);
                    (rng.gen_range(0..SECTORS - n), n)
                } else {
                    (rng.gen_range(0..BLOCKS) * 8, 8)
                };
                let d = payload(2 << 32 | seq, at, n);
                model_b[(at * 512) as usize..][..d.len()].copy_from_slice(&d);
                let order = order.clone();
                let s = seq;
                devb.submit_with(
                    Lba(at),
                    Some(Bytes::from(d)),
                    BlockCount(0),
                    LogPos::new(1, s),
                    Box::new(move |r, _last| {
                        r.expect("a replicated write failed");
                        order.lock().push(s);
                    }),
                )
                .unwrap();
            }
            // Keep at most a few groups queued.
            let deadline = Instant::now() + Duration::from_secs(10);
            while order.lock().len() as u64 + 48 < seq {
                assert!(Instant::now() < deadline, "callbacks stalled");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (order.lock().len() as u64) < seq {
            assert!(Instant::now() < deadline, "callbacks missing");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut model_a = vec![0u8; (SECTORS * 512) as usize];
        for t in tasks {
            let (first, m) = t.await.unwrap();
            model_a[(first * 512) as usize..][..m.len()].copy_from_slice(&m);
        }
        let callbacks = order.lock().clone();
        (model_a, model_b, callbacks, seq)
    });
    let (model_c, direct_writes) = direct.join().unwrap();
    assert_eq!(
        callbacks,
        (1..=submitted).collect::<Vec<_>>(),
        "replicated writes' callbacks ran out of order"
    );
    let stats = engine.stats();
    eprintln!(
        "{} batches, {} through the ring; {} replicated writes, {direct_writes} direct \
         commits; {} blocks evicted",
        stats.batches, stats.ring_batches, submitted, stats.evicted_blocks
    );
    assert!(stats.ring_batches > 100, "batches went through the ring");
    assert!(
        stats.batches > stats.ring_batches,
        "groups that need blocking work went to the writer thread"
    );
    assert!(stats.evicted_blocks > 0, "the log went round");
    assert!(direct_writes > 10, "direct commits made progress");
    let models = [model_a, model_b, model_c];
    rt.block_on(async {
        for (v, want) in vols.iter().zip(&models) {
            let dev = svc.volume(*v).unwrap();
            let mut got = Vec::new();
            for at in (0..SECTORS).step_by(CHUNK as usize) {
                got.extend_from_slice(&dev.read(Lba(at), BlockCount(CHUNK)).await.unwrap());
            }
            check(&format!("volume {v} while running"), &got, want);
        }
    });
    svc.shutdown();
    drop(rt);
    drop(engine);
    // Reopened from the file: recovery finds the same.
    let medium = Arc::new(alcubierre_io::DirectFile::open(&path).unwrap());
    let engine = Engine::open(medium, backend as Arc<dyn Backend>).unwrap();
    for (v, want) in vols.iter().zip(&models) {
        engine.attach(*v, geometry(BLOCKS * 4096)).unwrap();
        let mut got = Vec::new();
        for at in (0..SECTORS).step_by(CHUNK as usize) {
            got.extend_from_slice(&engine.read(*v, Lba(at), BlockCount(CHUNK)).unwrap());
        }
        check(&format!("volume {v} after reopening"), &got, want);
    }
    drop(engine);
    std::fs::remove_file(&path).unwrap();
}

/// Without any runtime thread free to reap (a current-thread runtime nobody drives), a direct
/// commit still completes: it reaps and finishes batches itself while it waits.
#[test]
fn a_direct_commit_completes_without_the_reaper() {
    if !io_uring_enabled() {
        return;
    }
    let (engine, v, path) =
        engine_with_volume("ring-direct", &FormatOptions::default(), vol(7), BLOCKS);
    let rt = runtime(0);
    let svc = start_in(&rt, &engine, ServiceConfig::default());
    assert!(svc.ring_writes());
    let d = payload(1, 0, 8);
    engine.write(v, Lba(0), Bytes::from(d.clone())).unwrap();
    assert_eq!(engine.stats().ring_batches, 1, "written through the ring");
    assert_eq!(&engine.read(v, Lba(0), BlockCount(8)).unwrap()[..], &d[..]);
    svc.shutdown();
    drop(rt);
    std::fs::remove_file(&path).unwrap();
}

/// A write whose completion a spinning reader reaps (polling a read reaps the ring) still
/// completes: the reader's reap signals the eventfd for it, and the reaper finishes the batch.
#[test]
fn writes_complete_while_a_reader_spins_on_the_ring() {
    use futures::FutureExt;
    if !io_uring_enabled() {
        return;
    }
    let (engine, v, path) =
        engine_with_volume("ring-spin", &FormatOptions::default(), vol(8), BLOCKS);
    let rt = runtime(2);
    let svc = start_in(&rt, &engine, ServiceConfig::default());
    let dev = Arc::new(svc.volume(v).unwrap());
    let writes = rt.block_on(async {
        dev.write(Lba(0), Bytes::from(payload(1, 0, 8)))
            .await
            .unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        // A reader that polls cache hits in a loop, reaping whatever completes meanwhile.
        let spinner = {
            let dev = dev.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < until {
                    let mut r = dev.read(Lba(0), BlockCount(8));
                    while (&mut r).now_or_never().is_none() {
                        std::hint::spin_loop();
                    }
                    n += 1;
                }
                n
            })
        };
        let mut writes = 0u64;
        while Instant::now() < until {
            writes += 1;
            let w = dev.write(Lba(8 + writes % 64 * 8), Bytes::from(payload(writes, 8, 8)));
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a write whose completion another thread reaped hung")
                .unwrap();
        }
        assert!(spinner.join().unwrap() > 0);
        writes
    });
    assert!(writes > 10, "{writes} writes");
    assert!(engine.stats().ring_batches > 10, "through the ring");
    svc.shutdown();
    drop(rt);
    std::fs::remove_file(&path).unwrap();
}
