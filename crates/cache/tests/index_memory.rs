//! Index memory after a 4K random fill (issue: at most 16 bytes per cached 4 KiB block),
//! measured with a counting global allocator: everything the engine allocates while filling the
//! cache, divided by the blocks the index then holds.

use std::sync::Arc;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_cache::{Engine, FormatOptions, Op};
use alcubierre_io::{CountingAlloc, MemMedium};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};
use bytes::Bytes;
use rand::{Rng, SeedableRng};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

/// Fills a 256 MiB cache with 4 KiB random writes (groups of 32, as at QD32) over a volume of
/// `volume_blocks`, and returns (bytes per cached block, cached blocks).
fn fill(volume_blocks: u64, seed: u64) -> (f64, u64) {
    let medium = Arc::new(MemMedium::new(256 << 20));
    Engine::format(&*medium, &FormatOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FileBackend::new(dir.path()).unwrap());
    let v = VolumeId::random();
    let g = VolumeGeometry::new(BlockSize::B4096, ByteSize(volume_blocks * 4096)).unwrap();
    backend.create(v, g.size()).unwrap();
    let e = Engine::open(medium, backend as Arc<dyn Backend>).unwrap();
    e.attach(v, g).unwrap();
    let p = e.partition_of(v).clone();
    let capacity = e.superblock().partitions[0].blocks;
    let data = Bytes::from(vec![7u8; 4096]);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let before = CountingAlloc::live_bytes();
    // Leave room for the last group: 33 blocks per group of 32 writes.
    while p.dirty_blocks() + 2 * 33 < capacity {
        let ops: Vec<Op> = (0..32)
            .map(|_| Op::Write {
                volume: v,
                sector: alcubierre_types::Sector(rng.gen_range(0..volume_blocks) * 8),
                data: data.clone(),
            })
            .collect();
        for r in p.commit(&ops, 0) {
            r.unwrap();
        }
    }
    let after = CountingAlloc::live_bytes();
    let cached = e.stats().index_blocks;
    ((after - before) as f64 / cached as f64, cached)
}

#[test]
fn index_costs_at_most_16_bytes_per_cached_block() {
    // Dense: the volume is twice the cache. Sparse: a 1 TiB volume.
    for (name, blocks) in [("dense", 2 * 65536u64), ("sparse", 1 << 28)] {
        let (per_block, cached) = fill(blocks, 42);
        println!("index memory, {name} 4K random fill: {per_block:.2} bytes per cached block ({cached} blocks)");
        assert!(cached > 50_000, "{name}: only {cached} blocks cached");
        assert!(
            per_block <= 16.0,
            "{name}: {per_block:.2} bytes per cached 4 KiB block"
        );
    }
}
