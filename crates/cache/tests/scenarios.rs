//! Scenario tests of the cache engine: bad input, fail-stop, eviction, backpressure, backend
//! outage, volume drop, group commit through the threaded service.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_block::{BlockDevice, BlockError};
use alcubierre_cache::{
    CacheError, CacheService, Engine, FormatOptions, RateLimiter, ServiceConfig,
};
use alcubierre_io::fault::{CrashMedium, Fault};
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, BlockSize, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;
use common::{geometry, open, small_format, vol};

fn setup(
    medium_len: usize,
    fmt: FormatOptions,
    vol_size: u64,
) -> (Arc<MemMedium>, Arc<MemBackend>, Engine) {
    let medium = Arc::new(MemMedium::new(medium_len));
    Engine::format(&*medium, &fmt).unwrap();
    let backend = Arc::new(MemBackend::new());
    backend.create(vol(1), ByteSize(vol_size)).unwrap();
    let e = open(
        medium.clone(),
        backend.clone(),
        &[(vol(1), geometry(vol_size))],
    );
    (medium, backend, e)
}

#[test]
fn unformatted_device_is_refused_clearly() {
    let m: Arc<dyn Medium> = Arc::new(MemMedium::new(1 << 20));
    let err = Engine::open(m, Arc::new(MemBackend::new())).err().unwrap();
    assert!(matches!(err, CacheError::Superblock { .. }), "{err}");
    assert!(err.to_string().contains("no superblock here"), "{err}");
}

/// A formatted device whose superblock `edit` has changed.
fn with_superblock(edit: impl FnOnce(&mut Vec<u8>)) -> Arc<MemMedium> {
    let m = Arc::new(MemMedium::new(4 << 20));
    Engine::format(&*m, &small_format(1)).unwrap();
    let mut b = vec![0u8; 4096];
    m.read_at(&mut b, 0).unwrap();
    edit(&mut b);
    m.write_at(&b, 0).unwrap();
    m
}

#[test]
fn corrupt_superblock_is_refused_clearly() {
    let m = with_superblock(|b| b[100] ^= 0xff);
    let err = Engine::open(m, Arc::new(MemBackend::new())).err().unwrap();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[test]
fn other_format_version_is_refused_clearly() {
    let m = with_superblock(|b| {
        b[8..12].copy_from_slice(&7u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[..4092]);
        b[4092..].copy_from_slice(&crc.to_le_bytes());
    });
    let err = Engine::open(m, Arc::new(MemBackend::new())).err().unwrap();
    assert!(
        err.to_string()
            .contains("format version 7; this build reads version 1"),
        "{err}"
    );
}

#[test]
fn too_small_device_and_bad_options_are_refused() {
    let m = MemMedium::new(64 << 10);
    let err = Engine::format(&m, &FormatOptions::default()).unwrap_err();
    assert!(matches!(err, CacheError::TooSmall { .. }), "{err}");
    let m = MemMedium::new(64 << 20);
    let err = Engine::format(
        &m,
        &FormatOptions {
            partitions: 65,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("partitions"), "{err}");
    // A device that shrank after formatting.
    let m = MemMedium::new(8 << 20);
    Engine::format(&m, &small_format(1)).unwrap();
    let shrunk: Arc<dyn Medium> = Arc::new(MemMedium::from_image(m.image()[..4 << 20].to_vec()));
    let err = Engine::open(shrunk, Arc::new(MemBackend::new()))
        .err()
        .unwrap();
    assert!(matches!(err, CacheError::TooSmall { .. }), "{err}");
}

#[test]
fn out_of_range_and_misaligned_requests_are_refused() {
    let (_m, _b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let v = vol(1);
    let err = e
        .write(v, Lba(2047), Bytes::from(vec![0; 1024]))
        .unwrap_err();
    assert!(matches!(
        err,
        CacheError::Request(BlockError::OutOfRange { capacity: 2048, .. })
    ));
    let err = e.write(v, Lba(0), Bytes::from(vec![0; 100])).unwrap_err();
    assert!(matches!(
        err,
        CacheError::Request(BlockError::Misaligned { .. })
    ));
    let err = e.read(v, Lba(u64::MAX), BlockCount(2)).unwrap_err();
    assert!(matches!(
        err,
        CacheError::Request(BlockError::OutOfRange { .. })
    ));
    let err = e.zero(v, Lba(10), BlockCount(0)).unwrap_err();
    assert!(matches!(err, CacheError::Request(_)));
    let err = e
        .write(v, Lba(0), Bytes::from(vec![0; 1 << 20]))
        .unwrap_err();
    assert!(matches!(
        err,
        CacheError::Request(BlockError::TooLarge { .. })
    ));
    let err = e
        .write(vol(9), Lba(0), Bytes::from(vec![0; 512]))
        .unwrap_err();
    assert!(matches!(err, CacheError::UnknownVolume(_)));
    assert!(matches!(
        e.attach(v, geometry(1 << 20)),
        Err(CacheError::AlreadyAttached(_))
    ));
    let small = VolumeGeometry::new(BlockSize::B512, ByteSize(512 << 10)).unwrap();
    assert!(matches!(
        e.resize(v, small),
        Err(CacheError::InvalidOption { .. })
    ));
}

#[test]
fn device_write_error_fails_stop() {
    let m = Arc::new(CrashMedium::new(4 << 20, 1));
    Engine::format(&*m, &small_format(1)).unwrap();
    let b = Arc::new(MemBackend::new());
    b.create(vol(1), ByteSize(1 << 20)).unwrap();
    let e = open(m.clone(), b, &[(vol(1), geometry(1 << 20))]);
    e.write(vol(1), Lba(0), Bytes::from(vec![1; 4096])).unwrap();
    m.schedule(1, Fault::FailWrites);
    let err = e
        .write(vol(1), Lba(8), Bytes::from(vec![2; 4096]))
        .unwrap_err();
    assert!(matches!(err, CacheError::DeviceFailed { .. }), "{err}");
    // No blind retry: every later write is refused, even though it might now succeed.
    let err = e
        .write(vol(1), Lba(16), Bytes::from(vec![3; 4096]))
        .unwrap_err();
    assert!(err.to_string().contains("refuses writes"), "{err}");
    assert_eq!(e.stats().failed_partitions, 1);
    // Data acknowledged before the failure is still readable.
    assert_eq!(
        &e.read(vol(1), Lba(0), BlockCount(8)).unwrap()[..],
        &[1u8; 4096][..]
    );
}

#[test]
fn clean_data_is_evicted_and_reads_fall_back_to_backend() {
    // 4 MiB cache, 8 MiB volume written twice over: the log wraps several times.
    let (_m, b, e) = setup(4 << 20, small_format(1), 8 << 20);
    let v = vol(1);
    for pass in 0..2u8 {
        for blk in 0..(8 << 20) / 4096u64 {
            let op = e
                .write_op(v, Lba(blk * 8), Bytes::from(vec![pass + 1; 4096]))
                .unwrap();
            common::make_room(&e, &op);
            e.submit(op).unwrap();
        }
    }
    let s = e.stats();
    assert!(s.evicted_blocks > 2000, "{s:?}");
    for blk in (0..2048u64).step_by(97) {
        assert_eq!(
            &e.read(v, Lba(blk * 8), BlockCount(8)).unwrap()[..],
            &[2u8; 4096][..]
        );
    }
    let s = e.stats();
    assert!(s.read_miss_blocks > 0 && s.read_hit_blocks > 0, "{s:?}");
    e.destage_all().unwrap();
    assert!(b.contents(v).unwrap().iter().all(|&x| x == 2));
}

#[test]
fn backend_outage_keeps_writes_flowing_and_fails_uncached_reads_clearly() {
    let (_m, b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let v = vol(1);
    e.write(v, Lba(0), Bytes::from(vec![5; 4096])).unwrap();
    b.set_available(false);
    e.write(v, Lba(8), Bytes::from(vec![6; 4096])).unwrap();
    // Cached data reads fine; uncached data is a clear backend error.
    assert_eq!(
        &e.read(v, Lba(8), BlockCount(8)).unwrap()[..],
        &[6u8; 4096][..]
    );
    let err = e.read(v, Lba(64), BlockCount(8)).unwrap_err();
    assert!(matches!(err, CacheError::Backend(_)), "{err}");
    assert!(matches!(
        err.into_block(BlockSize::B4096),
        BlockError::Backend(_)
    ));
    assert!(e.destage_round(1 << 20).is_err());
    b.set_available(true);
    e.destage_all().unwrap();
    let c = b.contents(v).unwrap();
    assert!(c[..4096].iter().all(|&x| x == 5) && c[4096..8192].iter().all(|&x| x == 6));
}

#[test]
fn dropped_volume_is_not_destaged_and_survives_reopen_as_dropped() {
    let (m, b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let v = vol(1);
    e.write(v, Lba(0), Bytes::from(vec![5; 4096])).unwrap();
    e.drop_volume(v).unwrap();
    b.delete(v).unwrap();
    drop(e);
    let e = open(m, b.clone(), &[]);
    assert_eq!(e.stats().index_blocks, 0);
    e.destage_all().unwrap(); // does not touch the deleted image
    assert!(b.contents(v).is_none());
}

#[test]
fn grown_volume_accepts_io_beyond_old_end() {
    let (_m, b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let v = vol(1);
    assert!(e.write(v, Lba(2048), Bytes::from(vec![1; 512])).is_err());
    b.resize(v, ByteSize(2 << 20)).unwrap();
    e.resize(v, geometry(2 << 20)).unwrap();
    e.write(v, Lba(2048), Bytes::from(vec![1; 512])).unwrap();
    assert_eq!(
        &e.read(v, Lba(2048), BlockCount(1)).unwrap()[..],
        &[1u8; 512][..]
    );
}

/// Group commit through the threaded service: 32 writers in flight cost far fewer syncs than
/// writes. With the backend down the cache fills and writers are throttled, not refused; when the
/// backend returns, destage resumes by itself and the writers finish (SPEC §2).
#[test]
fn service_groups_commits_and_throttles_when_full() {
    let medium = Arc::new(MemMedium::new(4 << 20));
    Engine::format(&*medium, &small_format(1)).unwrap();
    let backend = Arc::new(MemBackend::new());
    backend.create(vol(1), ByteSize(16 << 20)).unwrap();
    let e = Arc::new(open(
        medium,
        backend.clone(),
        &[(vol(1), geometry(16 << 20))],
    ));
    let svc = CacheService::start(
        e.clone(),
        ServiceConfig {
            destage_limit: Some(Arc::new(RateLimiter::new(2_000_000, 1 << 20))),
            high_watermark: 0.5,
            ..Default::default()
        },
    );
    backend.set_available(false);
    let watcher = {
        let (e, backend) = (e.clone(), backend.clone());
        std::thread::spawn(move || {
            // Bring the backend back once a writer has had to wait for space and destage has
            // met the outage (both, or the order of the two would decide the test).
            let start = std::time::Instant::now();
            while (e.stats().throttled == 0 || e.stats().backend_errors == 0)
                && start.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            backend.set_available(true);
        })
    };
    let dev = svc.volume(vol(1)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let writes = 4096u64; // 16 MiB through a 4 MiB cache
    rt.block_on(async {
        let mut in_flight = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        for i in 0..writes {
            let data = Bytes::from(vec![(i % 251) as u8 + 1; 4096]);
            in_flight.push(dev.write(Lba(i * 8), data));
            if in_flight.len() >= 32 {
                in_flight.next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = in_flight.next().await {
            r.unwrap();
        }
        for i in (0..writes).step_by(61) {
            let got = dev.read(Lba(i * 8), BlockCount(8)).await.unwrap();
            assert_eq!(got[0], (i % 251) as u8 + 1, "block {i}");
        }
        dev.flush().await.unwrap();
    });
    watcher.join().unwrap();
    let s = e.stats();
    assert_eq!(s.ops, writes);
    assert!(s.backend_errors > 0, "destage met the outage: {s:?}");
    assert!(
        s.syncs * 4 < writes,
        "group commit: {} syncs for {writes} writes",
        s.syncs
    );
    assert!(s.throttled > 0, "a full cache throttles: {s:?}");
    svc.shutdown();
    let err = rt
        .block_on(dev.write(Lba(0), Bytes::from(vec![0; 512])))
        .unwrap_err();
    assert!(matches!(err, BlockError::Unavailable(_)), "{err}");
}

#[test]
fn destage_rate_is_capped() {
    let (_m, _backend, e) = setup(32 << 20, FormatOptions::default(), 16 << 20);
    let e = Arc::new(e);
    for i in 0..1024u64 {
        e.write(vol(1), Lba(i * 16), Bytes::from(vec![1; 8192]))
            .unwrap();
    }
    // 8 MiB dirty in a 32 MiB cache (below the watermark), at 20 MB/s with no burst credit.
    let start = std::time::Instant::now();
    let svc = CacheService::start(
        e.clone(),
        ServiceConfig {
            destage_limit: Some(Arc::new(RateLimiter::new(20_000_000, 0))),
            round_bytes: 1 << 20,
            ..Default::default()
        },
    );
    while e.stats().dirty_bytes > 0 {
        std::thread::sleep(Duration::from_millis(20));
        assert!(start.elapsed() < Duration::from_secs(10), "destage stalled");
    }
    let took = start.elapsed();
    // 8 MiB at 20 MB/s: at least 0.37 s even if the first round rides on no credit.
    assert!(
        took >= Duration::from_millis(370),
        "cap not applied: {took:?}"
    );
    svc.shutdown();
}

#[test]
fn a_trickle_of_dirty_data_respects_the_destage_cap_too() {
    let (_m, backend, e) = setup(32 << 20, FormatOptions::default(), 16 << 20);
    let e = Arc::new(e);
    // 256 KiB dirty: less than a minimum round, which waits `max_dirty_age` to grow and then
    // went to the backend whatever the cap said.
    for i in 0..64u64 {
        e.write(vol(1), Lba(i * 8), Bytes::from(vec![2; 4096]))
            .unwrap();
    }
    let dirty = e.stats().dirty_bytes;
    assert!(dirty > 0 && dirty < ServiceConfig::default().min_round_bytes);
    // A cap deep in debt: nothing may be destaged.
    let limit = Arc::new(RateLimiter::new(1, 1));
    limit.spend(1 << 40);
    let cfg = ServiceConfig {
        destage_limit: Some(limit.clone()),
        ..Default::default()
    };
    let waits = cfg.max_dirty_age * 5;
    let svc = CacheService::start(e.clone(), cfg);
    std::thread::sleep(waits);
    assert_eq!(e.stats().dirty_bytes, dirty, "destaged past the cap");
    assert_eq!(backend.counts().0, 0, "backend writes past the cap");
    // Lifting the cap lets it go.
    limit.set_rate(u64::MAX / 4);
    let start = std::time::Instant::now();
    while e.stats().dirty_bytes > 0 {
        std::thread::sleep(Duration::from_millis(10));
        assert!(start.elapsed() < Duration::from_secs(10), "destage stalled");
    }
    svc.shutdown();
}

#[test]
fn malformed_ops_given_to_a_partition_fail_alone() {
    let (_m, _b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let p = e.partition_of(vol(1)).clone();
    let ops = [
        alcubierre_cache::Op::Write {
            volume: vol(1),
            sector: alcubierre_types::Sector(0),
            data: Bytes::new(),
        },
        alcubierre_cache::Op::Write {
            volume: vol(1),
            sector: alcubierre_types::Sector(0),
            data: Bytes::from(vec![1; 700]),
        },
        alcubierre_cache::Op::Zero {
            volume: vol(1),
            sector: alcubierre_types::Sector(0),
            sectors: 0,
        },
        alcubierre_cache::Op::Write {
            volume: vol(1),
            sector: alcubierre_types::Sector(0),
            data: Bytes::from(vec![9; 17 * 4096]), // more than a batch holds
        },
        alcubierre_cache::Op::Write {
            volume: vol(1),
            sector: alcubierre_types::Sector(8),
            data: Bytes::from(vec![2; 512]),
        },
    ];
    let r = p.commit(&ops, 0);
    assert!(
        r[..4]
            .iter()
            .all(|r| matches!(r, Err(CacheError::Request(_)))),
        "{r:?}"
    );
    assert!(r[4].is_ok());
    assert_eq!(
        &e.read(vol(1), Lba(8), BlockCount(1)).unwrap()[..],
        &[2u8; 512][..]
    );
}

#[test]
fn snapshot_destages_first_and_clones_see_the_snapshot_time_data() {
    let (_m, b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let v = vol(1);
    e.write(v, Lba(0), Bytes::from(vec![1; 4096])).unwrap();
    e.write(v, Lba(3), Bytes::from(vec![2; 512])).unwrap(); // partial block, dirty
    assert!(e.stats().dirty_bytes > 0);
    e.snapshot(v, "before").unwrap();
    assert_eq!(
        e.stats().dirty_bytes,
        0,
        "the snapshot destaged the volume first"
    );
    e.write(v, Lba(0), Bytes::from(vec![9; 4096])).unwrap();
    b.clone_snapshot(v, "before", vol(2)).unwrap();
    e.attach(vol(2), geometry(1 << 20)).unwrap();
    let got = e.read(vol(2), Lba(0), BlockCount(8)).unwrap();
    let mut want = vec![1u8; 4096];
    want[3 * 512..4 * 512].fill(2);
    assert_eq!(&got[..], &want[..]);
    assert_eq!(
        &e.read(v, Lba(0), BlockCount(8)).unwrap()[..],
        &[9u8; 4096][..]
    );
    assert!(matches!(
        e.snapshot(v, "before"),
        Err(CacheError::Backend(_))
    ));
}

/// A primary that becomes a follower gives its backend claim up at once, even with nothing
/// dirty (the destager would otherwise sleep until the next write, and the new primary's claim
/// would fence this node off).
#[test]
fn a_claim_is_given_up_at_once_when_nothing_is_dirty() {
    use alcubierre_cache::{LogPos, ReplicaRole};

    let (_m, backend, e) = setup(8 << 20, small_format(1), 1 << 20);
    let e = Arc::new(e);
    let svc = CacheService::start(e.clone(), ServiceConfig::default());
    e.set_replica_role(vol(1), ReplicaRole::Primary);
    let p = e.partition_of(vol(1)).clone();
    let op = e
        .write_op(vol(1), Lba(0), Bytes::from(vec![7u8; 4096]))
        .unwrap();
    p.commit_tagged(&[op], &[LogPos::new(1, 1)])
        .pop()
        .unwrap()
        .unwrap();
    let t = std::time::Instant::now();
    while e.stats().dirty_bytes > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "not destaged");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(backend.claim_log(), vec![(vol(1), true)]);
    e.set_replica_role(vol(1), ReplicaRole::Follower);
    let t = std::time::Instant::now();
    while backend.claim_log().len() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the claim was not given up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(backend.claim_log()[1], (vol(1), false));
    svc.shutdown();
}

/// A journal entry whose data fails its checksum at recovery poisons its blocks; a read of them
/// is a medium error that names the first unreadable LBA in the volume's own 512-byte blocks,
/// not the 4 KiB cache block (8x smaller).
#[test]
fn a_corrupt_journal_entry_reports_the_volume_lba_it_lost() {
    let (m, b, e) = setup(4 << 20, small_format(1), 1 << 20);
    let v = vol(1);
    // LBA 24..32 is cache block 3; a later write keeps the bad entry off the journal's end
    // (where it would be a torn batch, not corruption).
    let marker = Bytes::from(b"lost-data-".repeat(410)[..4096].to_vec());
    e.write(v, Lba(24), marker.clone()).unwrap();
    e.write(v, Lba(800), Bytes::from(vec![7; 4096])).unwrap();
    drop(e);
    let image = m.image();
    let at = image
        .windows(marker.len())
        .position(|w| w == &marker[..])
        .expect("the entry's data is on the device");
    m.write_at(&[image[at] ^ 0xff], at as u64).unwrap();
    let e = open(m, b, &[(v, geometry(1 << 20))]);
    assert_eq!(e.recovery_report().poisoned_blocks(), 1);

    // A read from LBA 20 meets the bad block at its first sector, LBA 24.
    let err = e.read(v, Lba(20), BlockCount(16)).unwrap_err();
    assert!(matches!(err, CacheError::Medium { .. }), "{err}");
    match err.into_block(BlockSize::B512) {
        BlockError::Medium { lba, reason } => {
            assert_eq!(lba, 24, "{reason}");
            assert!(reason.contains("byte 12288"), "{reason}");
        }
        other => panic!("{other}"),
    }
    // A read starting inside the block names its own first LBA.
    match e
        .read(v, Lba(27), BlockCount(2))
        .unwrap_err()
        .into_block(BlockSize::B512)
    {
        BlockError::Medium { lba, .. } => assert_eq!(lba, 27),
        other => panic!("{other}"),
    }
    // The blocks around it read as written.
    assert_eq!(
        &e.read(v, Lba(800), BlockCount(8)).unwrap()[..],
        &[7u8; 4096][..]
    );
    assert!(e.read(v, Lba(16), BlockCount(8)).is_ok());
}
