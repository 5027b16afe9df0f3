//! Superseded versions: destage writes only a block's newest version, so a rewritten working set
//! costs backend writes (and journal space) by the data that survives, not by the writes made.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::{Engine, LogPos, ReplicaRole};
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, ByteOffset, ByteSize, Lba, SeqNo, VolumeId};
use bytes::Bytes;
use common::{geometry, open, small_format, vol};

const VOL: u64 = 1 << 20;

fn engine() -> (Arc<MemBackend>, Engine, VolumeId) {
    let medium: Arc<dyn Medium> = Arc::new(MemMedium::new(8 << 20));
    Engine::format(&*medium, &small_format(1)).unwrap();
    let backend = Arc::new(MemBackend::new());
    let v = vol(1);
    backend.create(v, ByteSize(VOL)).unwrap();
    let e = open(medium, backend.clone(), &[(v, geometry(VOL))]);
    (backend, e, v)
}

fn image(backend: &MemBackend, v: VolumeId) -> Vec<u8> {
    let mut b = vec![0u8; VOL as usize];
    backend.read(v, ByteOffset(0), &mut b).unwrap();
    b
}

/// A byte per sector, so that partial writes show which sectors came from where.
fn sectors(first: u8, n: usize) -> Bytes {
    (0..n)
        .flat_map(|i| std::iter::repeat_n(first.wrapping_add(i as u8), 512))
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn a_rewritten_working_set_is_destaged_once_as_its_newest_version() {
    let (backend, e, v) = engine();
    let p = e.partition_of(v).clone();
    let mut model = vec![0u8; VOL as usize];
    let mut put = |lba: u64, data: Bytes| {
        let at = lba as usize * 512;
        model[at..at + data.len()].copy_from_slice(&data);
        let op = e.write_op(v, Lba(lba), data).unwrap();
        p.commit(&[op], 1).pop().unwrap().unwrap();
    };
    // Eight blocks rewritten ten times, one batch per write.
    for round in 0..10u8 {
        for b in 0..8u64 {
            put(b * 8, sectors(round * 16 + b as u8, 8));
        }
    }
    // Partial rewrites merge with the cached block: sectors 2..4 of block 3, twice.
    put(3 * 8 + 2, sectors(200, 2));
    put(3 * 8 + 2, sectors(210, 2));
    // A zeroing supersedes block 6's versions; a write after it is newest again for block 7.
    put(6 * 8, Bytes::from(vec![0u8; 8192]));
    let z = e.zero_op(v, Lba(6 * 8), BlockCount(16)).unwrap();
    p.commit(&[z], 1).pop().unwrap().unwrap();
    put(7 * 8, sectors(99, 8));
    // Destage a batch at a time: the superseded versions are passed over in every round.
    let mut bytes = 0;
    loop {
        let s = p.destage_round(&*backend, 1).unwrap();
        if s.batches == 0 {
            break;
        }
        bytes += s.bytes;
    }
    assert_eq!(image(&backend, v), model, "the image is the newest data");
    let read = e.read(v, Lba(0), BlockCount(64)).unwrap();
    assert_eq!(&read[..], &model[..read.len()], "reads see the newest data");
    // Backend bytes: the newest version of blocks 0-5 and 7 (block 6 is zero, discarded).
    assert_eq!(bytes, 7 * 4096, "only newest versions are written");
    let st = e.stats();
    // 80 full writes, 2 partial ones, 2 blocks of zeroes written and 1 write of block 7: 85
    // versions, of which 7 are written; the rest were rewritten or zeroed.
    assert_eq!(st.superseded_blocks, 85 - 7);
    assert_eq!(st.destaged_bytes, bytes);
    assert_eq!(st.dirty_bytes, 0);
}

#[test]
fn replicated_writes_are_not_passed_over_across_rounds() {
    // A follower's copy of a newer version may be partial, or missing on a follower a new
    // primary has yet to bring up to date, while it evicts the older version once the primary
    // reports it destaged: so the primary writes every replicated version it reaches.
    let (backend, e, v) = engine();
    e.set_replica_role(v, ReplicaRole::Primary);
    let p = e.partition_of(v).clone();
    let w = |b: u64, x: u8| {
        e.write_op(v, Lba(b * 8), Bytes::from(vec![x; 4096]))
            .unwrap()
    };
    let tagged = |ops: Vec<alcubierre_cache::Op>, seq: u64| {
        let tags = vec![LogPos::new(3, seq); ops.len()];
        for r in p.commit_tagged(&ops, &tags) {
            r.unwrap();
        }
    };
    tagged(vec![w(0, 1), w(1, 1)], 1);
    tagged(vec![w(1, 2)], 2);
    // The first batch alone: both blocks written, although block 1 has a newer version.
    let s = p.destage_round(&*backend, 1).unwrap();
    assert_eq!((s.batches, s.bytes, s.superseded_blocks), (1, 2 * 4096, 0));
    assert_eq!(e.replication_log(v).destaged, SeqNo(1));
    assert_eq!(
        image(&backend, v)[4096],
        1,
        "the image holds seq 1's version"
    );
    e.destage_all().unwrap();
    let img = image(&backend, v);
    let blocks: HashMap<usize, u8> = (0..2).map(|b| (b, img[b * 4096])).collect();
    assert_eq!(blocks, HashMap::from([(0, 1), (1, 2)]));
    assert_eq!(e.stats().superseded_blocks, 0);
}
