//! Shared helpers for the cache engine's integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::{Engine, FormatOptions, Op};
use alcubierre_io::Medium;
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};

/// Small layouts so that tests wrap the log, evict and throttle.
pub fn small_format(partitions: u32) -> FormatOptions {
    FormatOptions {
        partitions,
        max_batch_data_blocks: 16,
    }
}

/// A deterministic volume id.
pub fn vol(n: u128) -> VolumeId {
    VolumeId(uuid::Uuid::from_u128(
        0x5eed_0000_0000_0000_0000_0000_0000_0000 | n,
    ))
}

/// A 512-byte-block volume of `size` bytes.
pub fn geometry(size: u64) -> VolumeGeometry {
    VolumeGeometry::new(BlockSize::B512, ByteSize(size)).unwrap()
}

/// Opens `medium`, attaching `volumes`.
pub fn open(
    medium: Arc<dyn Medium>,
    backend: Arc<MemBackend>,
    volumes: &[(VolumeId, VolumeGeometry)],
) -> Engine {
    let e = Engine::open(medium, backend as Arc<dyn Backend>).expect("open");
    for (v, g) in volumes {
        e.attach(*v, *g).unwrap();
    }
    e
}

/// Destages everything when the op about to run might not find room, so that a test driving
/// the engine from one thread never waits for a destager that is not running.
pub fn make_room(e: &Engine, op: &Op) {
    let p = e.partition_of(op.volume());
    let max = u64::from(e.superblock().max_batch_data_blocks) + 1;
    if p.dirty_blocks() + 2 * max > e.superblock().partitions[p.id() as usize].blocks {
        e.destage_all().expect("destage");
    }
}

/// The data a test writes: sector `s` of write `id` (never all zero).
pub fn pattern(id: u64, sector: u64, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = id
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(sector.wrapping_mul(0xbf58_476d_1ce4_e5b9))
            .wrapping_add(i as u64)
            | 1;
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    out[..8].copy_from_slice(&id.to_le_bytes());
}

/// Whether the kernel allows io_uring (`kernel.io_uring_disabled`).
pub fn io_uring_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or(true, |s| s.trim() == "0")
}

/// A cache file `<name>-<pid>.img` of `mib` MiB under target/tmp (O_DIRECT needs a real file
/// system), formatted with `fmt` and opened as an `O_DIRECT` medium.
pub fn cache_file(
    name: &str,
    mib: u64,
    fmt: &FormatOptions,
) -> (Arc<dyn Medium>, std::path::PathBuf) {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tmp"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.img", std::process::id()));
    let m = alcubierre_io::DirectFile::create_file(&path, mib << 20).unwrap();
    Engine::format(&m, fmt).unwrap();
    drop(m);
    let medium: Arc<dyn Medium> = Arc::new(alcubierre_io::DirectFile::open(&path).unwrap());
    (medium, path)
}

/// A runtime like a node's (two workers), or one thread that nobody drives after the start.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut b = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all().build().unwrap()
}

/// Starts a cache service inside `rt`, so that its ring completes on `rt`'s reactor.
pub fn start_in(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    cfg: alcubierre_cache::ServiceConfig,
) -> alcubierre_cache::CacheService {
    let _in = rt.enter();
    alcubierre_cache::CacheService::start(engine.clone(), cfg)
}

/// An 8 MiB cache file with one volume of `blocks` 4 KiB blocks attached (its backend in
/// memory): the engine, the volume and the file.
pub fn engine_with_volume(
    name: &str,
    fmt: &FormatOptions,
    v: VolumeId,
    blocks: u64,
) -> (Arc<Engine>, VolumeId, std::path::PathBuf) {
    let (medium, path) = cache_file(name, 8, fmt);
    let backend = Arc::new(MemBackend::new());
    backend.create(v, ByteSize(blocks * 4096)).unwrap();
    let engine = Arc::new(Engine::open(medium, backend as Arc<dyn Backend>).unwrap());
    engine.attach(v, geometry(blocks * 4096)).unwrap();
    (engine, v, path)
}
