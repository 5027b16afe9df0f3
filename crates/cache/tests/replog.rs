//! Replication tags in the journal: every entry of a replicated write keeps the write's epoch
//! and sequence number; the engine keeps each volume's replication log (newest write, epoch
//! runs) as writes commit, and recovers it from the journal after a restart.

mod common;

use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::{Engine, RepLog, Tag};
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, Lba};
use bytes::Bytes;
use common::{geometry, open, small_format, vol};

fn tag(epoch: u64, seq: u64) -> Tag {
    Tag { epoch, seq }
}

#[test]
fn tags_are_journaled_and_recovered() {
    let medium: Arc<dyn Medium> = Arc::new(MemMedium::new(4 << 20));
    Engine::format(&*medium, &small_format(1)).unwrap();
    let backend = Arc::new(MemBackend::new());
    let (a, b) = (vol(1), vol(2));
    let g = geometry(1 << 20);
    backend
        .create(a, alcubierre_types::ByteSize(1 << 20))
        .unwrap();
    backend
        .create(b, alcubierre_types::ByteSize(1 << 20))
        .unwrap();
    let e = open(medium.clone(), backend.clone(), &[(a, g), (b, g)]);
    let p = e.partition_of(a).clone();
    // A partial-block write (three entries), a zero range, an untagged write, a new epoch.
    let ops = vec![
        e.write_op(a, Lba(3), Bytes::from(vec![1u8; 512 * 10]))
            .unwrap(),
        e.zero_op(a, Lba(100), BlockCount(64)).unwrap(),
        e.write_op(b, Lba(0), Bytes::from(vec![2u8; 4096])).unwrap(),
        e.write_op(a, Lba(8), Bytes::from(vec![3u8; 4096])).unwrap(),
    ];
    let tags = [tag(4, 1), tag(4, 2), Tag::default(), tag(5, 3)];
    for r in p.commit_tagged(&ops, &tags) {
        r.unwrap();
    }
    let want = RepLog {
        last: tag(5, 3),
        runs: vec![(1, 4), (3, 5)],
    };
    assert_eq!(e.replication_log(a), want);
    assert_eq!(e.replication_log(b), RepLog::default(), "untagged");
    drop(e);
    // After a restart the journal gives the same log.
    let e = open(medium.clone(), backend.clone(), &[(a, g), (b, g)]);
    assert_eq!(e.replication_log(a), want);
    // Dropping the volume (a follower's reset) forgets its log, durably.
    e.drop_volume(a).unwrap();
    assert_eq!(e.replication_log(a), RepLog::default());
    drop(e);
    let e = open(medium, backend, &[(b, g)]);
    assert_eq!(e.replication_log(a), RepLog::default());
}
