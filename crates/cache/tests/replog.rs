//! Replication tags in the journal: every entry of a replicated write keeps the write's epoch
//! and sequence number; the engine keeps each volume's replication log (newest write, epoch
//! runs) as writes commit, and recovers it from the journal after a restart.

mod common;

use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::{Engine, LogPos, RepLog};
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, Epoch, Lba, SeqNo, VolumeGeometry, VolumeId};
use alcubierre_types::{ByteOffset, ByteSize};
use bytes::Bytes;
use common::{geometry, open, small_format, vol};

fn tag(epoch: u64, seq: u64) -> LogPos {
    LogPos::new(epoch, seq)
}

/// A one-partition engine on a 4 MiB memory device, with 1 MiB volumes `vols` attached as
/// `g` and their backend images made: the device, the backend and the engine.
fn engine_with(vols: &[VolumeId], g: VolumeGeometry) -> (Arc<dyn Medium>, Arc<MemBackend>, Engine) {
    let medium: Arc<dyn Medium> = Arc::new(MemMedium::new(4 << 20));
    let (backend, e) = engine_on(medium.clone(), vols, g);
    (medium, backend, e)
}

/// [`engine_with`] on `medium` (formatted here): the backend and the engine.
fn engine_on(
    medium: Arc<dyn Medium>,
    vols: &[VolumeId],
    g: VolumeGeometry,
) -> (Arc<MemBackend>, Engine) {
    Engine::format(&*medium, &small_format(1)).unwrap();
    let backend = Arc::new(MemBackend::new());
    for v in vols {
        backend.create(*v, ByteSize(1 << 20)).unwrap();
    }
    let attached: Vec<_> = vols.iter().map(|v| (*v, g)).collect();
    let e = open(medium, backend.clone(), &attached);
    (backend, e)
}

#[test]
fn tags_are_journaled_and_recovered() {
    let (a, b) = (vol(1), vol(2));
    let g = geometry(1 << 20);
    let (medium, backend, e) = engine_with(&[a, b], g);
    let p = e.partition_of(a).clone();
    // A partial-block write (three entries), a zero range, an untagged write, a new epoch.
    let ops = vec![
        e.write_op(a, Lba(3), Bytes::from(vec![1u8; 512 * 10]))
            .unwrap(),
        e.zero_op(a, Lba(100), BlockCount(64)).unwrap(),
        e.write_op(b, Lba(0), Bytes::from(vec![2u8; 4096])).unwrap(),
        e.write_op(a, Lba(8), Bytes::from(vec![3u8; 4096])).unwrap(),
    ];
    let tags = [tag(4, 1), tag(4, 2), LogPos::default(), tag(5, 3)];
    for r in p.commit_tagged(&ops, &tags) {
        r.unwrap();
    }
    let want = RepLog {
        last: tag(5, 3),
        runs: vec![(SeqNo(1), Epoch(4)), (SeqNo(3), Epoch(5))],
        released: SeqNo(0),
        destaged: SeqNo(0),
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

#[test]
fn a_reset_keeps_the_primary_destage_point_as_the_volume_position() {
    let a = vol(1);
    let g = geometry(1 << 20);
    let (medium, backend, e) = engine_with(&[a], g);
    let p = e.partition_of(a).clone();
    let op = e.write_op(a, Lba(0), Bytes::from(vec![1u8; 4096])).unwrap();
    p.commit_tagged(&[op], &[tag(2, 7)]).pop().unwrap().unwrap();
    // A rebuild from the primary's destage point (3, 40): the old write is forgotten, the log
    // restarts after the base, which is released.
    e.reset_replica(a, tag(3, 40)).unwrap();
    let want = RepLog {
        last: tag(3, 40),
        runs: vec![(SeqNo(40), Epoch(3))],
        released: SeqNo(40),
        destaged: SeqNo(0),
    };
    assert_eq!(e.replication_log(a), want);
    assert!(
        e.read(a, Lba(0), BlockCount(1))
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "the forgotten write is not served"
    );
    drop(e);
    let e = open(medium, backend, &[(a, g)]);
    assert_eq!(e.replication_log(a), want, "after a restart");
}

fn backend_block(b: &MemBackend, v: alcubierre_types::VolumeId, block: u64) -> u8 {
    let mut buf = vec![0u8; 4096];
    b.read(v, ByteOffset(block * 4096), &mut buf).unwrap();
    buf[0]
}

/// A follower's replicated writes stay in its journal until the primary releases them; released
/// ones are never written to the backend from here and leave the index; a volume made primary
/// destages its own. The release survives a restart; the role does not (a follower again).
#[test]
fn a_follower_holds_replicated_writes_until_released() {
    use alcubierre_cache::ReplicaRole;
    let (a, b) = (vol(1), vol(2));
    let g = VolumeGeometry::new(alcubierre_types::BlockSize::B4096, ByteSize(1 << 20)).unwrap();
    let (medium, backend, e) = engine_with(&[a, b], g);
    let p = e.partition_of(a).clone();
    let write = |v, block: u64, byte: u8, t: LogPos| {
        let op = e
            .write_op(v, Lba(block), Bytes::from(vec![byte; 4096]))
            .unwrap();
        p.commit_tagged(&[op], &[t]).pop().unwrap().unwrap();
    };
    write(b, 0, 0xbb, LogPos::default()); // batch 1: not replicated
    write(a, 0, 0x11, tag(3, 1)); // batch 2
    write(a, 1, 0x22, tag(3, 2)); // batch 3
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, b, 0),
        0xbb,
        "untagged writes destage"
    );
    assert_eq!(
        backend_block(&backend, a, 0),
        0,
        "the follower's writes wait"
    );
    assert_eq!(&e.read(a, Lba(0), BlockCount(1)).unwrap()[..1], &[0x11]);

    e.release(a, SeqNo(1)).unwrap();
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, a, 0),
        0,
        "a released write is the primary's to destage, not written from here"
    );
    assert_eq!(
        &e.read(a, Lba(0), BlockCount(1)).unwrap()[..1],
        &[0],
        "and it left the index: reads go to the backend"
    );
    assert_eq!(backend_block(&backend, a, 1), 0, "seq 2 still waits");
    assert_eq!(e.replication_log(a).released, SeqNo(1));

    drop(e);
    let e = open(medium.clone(), backend.clone(), &[(a, g), (b, g)]);
    assert_eq!(
        e.replication_log(a).released,
        SeqNo(1),
        "the release is journaled"
    );
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, a, 1),
        0,
        "still a follower after a restart"
    );
    e.set_replica_role(a, ReplicaRole::Primary);
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, a, 1),
        0x22,
        "a primary destages its writes"
    );
}

/// A medium that counts reads (the tests below check which destage rounds read the log).
struct CountingReads {
    inner: MemMedium,
    reads: std::sync::atomic::AtomicU64,
}

impl Medium for CountingReads {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn describe(&self) -> String {
        "counting reads".into()
    }
}

/// A follower evicts the writes the primary released from the batch headers it kept when it
/// journaled them: the device is not read. Batches with data still to destage (a volume not
/// replicated, or one this node became primary of) are read as before, and a restart, which
/// keeps no headers, evicts from the device.
#[test]
fn a_follower_evicts_released_writes_without_reading_them_back() {
    use alcubierre_cache::ReplicaRole;
    use std::sync::atomic::Ordering::SeqCst;
    let (a, b) = (vol(1), vol(2));
    let g = VolumeGeometry::new(alcubierre_types::BlockSize::B4096, ByteSize(1 << 20)).unwrap();
    let medium = Arc::new(CountingReads {
        inner: MemMedium::new(4 << 20),
        reads: Default::default(),
    });
    let (backend, e) = engine_on(medium.clone(), &[a, b], g);
    let p = e.partition_of(a).clone();
    let write = |v, block: u64, byte: u8, t: LogPos| {
        let op = e
            .write_op(v, Lba(block), Bytes::from(vec![byte; 4096]))
            .unwrap();
        p.commit_tagged(&[op], &[t]).pop().unwrap().unwrap();
    };
    for s in 1..=20 {
        write(a, s, 0x10 + s as u8, tag(2, s));
    }
    e.release(a, SeqNo(20)).unwrap();
    let before = medium.reads.load(SeqCst);
    e.destage_all().unwrap();
    assert_eq!(medium.reads.load(SeqCst), before, "no log read to evict");
    for s in 1..=20 {
        assert_eq!(
            &e.read(a, Lba(s), BlockCount(1)).unwrap()[..1],
            &[0],
            "block {s} left the index (reads go to the backend)"
        );
        assert_eq!(
            backend_block(&backend, a, s),
            0,
            "and was not destaged here"
        );
    }
    assert_eq!(e.stats().dirty_bytes, 0);

    // A write of another volume in between is read and destaged; released writes around it
    // are still evicted.
    write(a, 21, 0x21, tag(2, 21));
    write(b, 0, 0xbb, LogPos::default());
    write(a, 22, 0x22, tag(2, 22));
    e.release(a, SeqNo(22)).unwrap();
    let before = medium.reads.load(SeqCst);
    e.destage_all().unwrap();
    assert!(
        medium.reads.load(SeqCst) > before,
        "the other volume's batch is read"
    );
    assert_eq!(backend_block(&backend, b, 0), 0xbb);
    assert_eq!(&e.read(a, Lba(22), BlockCount(1)).unwrap()[..1], &[0]);
    assert_eq!(backend_block(&backend, a, 22), 0);

    // Kept headers of writes this node becomes primary of: their data is read and destaged.
    write(a, 23, 0x23, tag(2, 23));
    e.set_replica_role(a, ReplicaRole::Primary);
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, a, 23),
        0x23,
        "a primary destages its writes"
    );

    // After a restart nothing is kept: released writes are evicted from the device.
    e.set_replica_role(a, ReplicaRole::Follower);
    write(a, 24, 0x24, tag(3, 24));
    drop(e);
    let e = open(medium.clone(), backend.clone(), &[(a, g), (b, g)]);
    e.release(a, SeqNo(24)).unwrap();
    let before = medium.reads.load(SeqCst);
    e.destage_all().unwrap();
    assert!(medium.reads.load(SeqCst) > before);
    assert_eq!(&e.read(a, Lba(24), BlockCount(1)).unwrap()[..1], &[0]);
    assert_eq!(backend_block(&backend, a, 24), 0);
}

/// Backend fencing (docs/design/replication.md): a primary destages its volume's replicated
/// writes only while its fence allows (its node's lease holds) and not before the fence's
/// start (an old primary's last backend writes are done by then). While it is closed, the
/// round stops before the fenced writes, as before a follower's.
#[test]
fn a_primary_destages_only_while_its_fence_allows() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let (a, b) = (vol(1), vol(2));
    let (_medium, backend, e) = engine_with(&[a, b], geometry(1 << 20));
    let p = e.partition_of(a).clone();
    let lease = Arc::new(AtomicBool::new(false));
    let held = lease.clone();
    e.set_primary_fenced(
        a,
        alcubierre_cache::DestageFence::new(
            Arc::new(move || held.load(Ordering::SeqCst)),
            Instant::now(),
        ),
    );
    let ops = vec![
        e.write_op(b, Lba(0), Bytes::from(vec![0x0b; 4096]))
            .unwrap(),
        e.write_op(a, Lba(0), Bytes::from(vec![0x11; 4096]))
            .unwrap(),
    ];
    for r in p.commit_tagged(&ops, &[LogPos::default(), tag(1, 1)]) {
        r.unwrap();
    }
    e.destage_round(1 << 20).unwrap();
    assert_eq!(
        backend_block(&backend, a, 0),
        0,
        "no lease: nothing of a destaged"
    );
    assert_eq!(&e.read(a, Lba(0), BlockCount(1)).unwrap()[..1], &[0x11]);

    lease.store(true, Ordering::SeqCst);
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, a, 0),
        0x11,
        "under the lease it goes"
    );
    assert_eq!(backend_block(&backend, b, 0), 0x0b);

    // A new primary's fence that opens later: nothing before then, then everything.
    e.set_primary_fenced(
        a,
        alcubierre_cache::DestageFence::new(
            Arc::new(|| true),
            Instant::now() + Duration::from_millis(300),
        ),
    );
    let op = e
        .write_op(a, Lba(1), Bytes::from(vec![0x22; 4096]))
        .unwrap();
    p.commit_tagged(&[op], &[tag(2, 2)]).pop().unwrap().unwrap();
    e.destage_all().unwrap();
    assert_eq!(
        backend_block(&backend, a, 1),
        0,
        "not before the fence opens"
    );
    std::thread::sleep(Duration::from_millis(350));
    e.destage_all().unwrap();
    assert_eq!(backend_block(&backend, a, 1), 0x22);
}

/// A primary claims its volume's backend image before the first destage round; while the
/// claim fails the volume is held. When another node claims the image (the backend answers
/// Fenced), the fence's claim is lost for good: nothing more of the volume is destaged under
/// it. A primary that becomes a follower gives its claim up.
#[test]
fn a_primary_claims_the_image_before_destaging_and_stops_when_fenced_off() {
    use alcubierre_cache::{ClaimState, DestageFence, ReplicaRole};
    use std::time::Instant;

    let a = vol(1);
    let (_medium, backend, e) = engine_with(&[a], geometry(1 << 20));
    let p = e.partition_of(a).clone();
    let write = |block: u64, byte: u8, seq: u64| {
        let op = e
            .write_op(a, Lba(block * 8), Bytes::from(vec![byte; 4096]))
            .unwrap();
        p.commit_tagged(&[op], &[tag(1, seq)])
            .pop()
            .unwrap()
            .unwrap();
    };
    let fence = DestageFence::new(Arc::new(|| true), Instant::now());
    e.set_primary_fenced(a, fence.clone());
    write(0, 0x11, 1);

    // The claim fails: nothing destaged, the volume waits.
    backend.refuse_claims(true);
    e.destage_round(1 << 20).unwrap();
    assert_eq!(fence.claim_state(), ClaimState::Unclaimed);
    assert_eq!(backend_block(&backend, a, 0), 0);
    // It works: claimed once, then destaged.
    backend.refuse_claims(false);
    e.destage_all().unwrap();
    assert_eq!(fence.claim_state(), ClaimState::Claimed);
    assert_eq!(backend_block(&backend, a, 0), 0x11);
    write(1, 0x22, 2);
    e.destage_all().unwrap();
    assert_eq!(backend_block(&backend, a, 1), 0x22);
    assert_eq!(backend.claim_log(), vec![(a, true)], "claimed once");
    assert_eq!((e.stats().claims, e.stats().claims_lost), (1, 0));

    // Another node claims the image: the round fails as fenced, and the claim is lost.
    backend.fence_off(a);
    write(2, 0x33, 3);
    let err = e.destage_round(1 << 20).unwrap_err();
    assert!(err.to_string().contains("claimed by another node"), "{err}");
    assert_eq!(fence.claim_state(), ClaimState::Lost);
    assert_eq!(e.stats().claims_lost, 1);
    // From then on the volume is held: rounds succeed without touching it, and it is not
    // claimed again under this fence.
    let writes = backend.counts().0;
    assert_eq!(e.destage_round(1 << 20).unwrap().batches, 0);
    assert_eq!(backend.counts().0, writes);
    assert_eq!(backend_block(&backend, a, 2), 0);
    assert_eq!(backend.claim_log(), vec![(a, true)]);
    // The data is still served from the cache.
    assert_eq!(&e.read(a, Lba(16), BlockCount(1)).unwrap()[..1], &[0x33]);

    // A new primary term (a new fence) claims again and destages.
    let again = DestageFence::new(Arc::new(|| true), Instant::now());
    e.set_primary_fenced(a, again.clone());
    e.destage_all().unwrap();
    assert_eq!(again.claim_state(), ClaimState::Claimed);
    assert_eq!(backend_block(&backend, a, 2), 0x33);

    // Becoming a follower gives the claim up before the next round.
    e.set_replica_role(a, ReplicaRole::Follower);
    e.destage_round(1 << 20).unwrap();
    assert_eq!(backend.claim_log(), vec![(a, true), (a, true), (a, false)]);
}
