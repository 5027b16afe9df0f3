//! Journal replay: a volume's replicated writes read back from the journal in sequence order,
//! across batches and after a restart, with their tags and data; a write that a replay cannot
//! rebuild (part of a 4 KiB block merged with older sectors) or that is not in the journal ends
//! the replay there, and a follower's reset (drop) voids what came before it.

mod common;

use std::sync::Arc;

use alcubierre_backend::{Backend, MemBackend};
use alcubierre_cache::{Engine, LogPos, ReplayEnd, Replayed};
use alcubierre_io::{Medium, MemMedium};
use alcubierre_types::{BlockCount, Lba, SeqNo};
use alcubierre_types::{ByteOffset, ByteSize};
use bytes::Bytes;
use common::{geometry, open, small_format, vol};

fn tag(epoch: u64, seq: u64) -> LogPos {
    LogPos::new(epoch, seq)
}

fn block(i: u8) -> Bytes {
    Bytes::from(vec![i; 4096])
}

fn replay(
    e: &Engine,
    v: alcubierre_types::VolumeId,
    after: u64,
    upto: u64,
) -> (Vec<(LogPos, Replayed)>, ReplayEnd) {
    let mut got = Vec::new();
    let end = e
        .replay_replicated(v, SeqNo(after), SeqNo(upto), |t, r| {
            got.push((t, r));
            true
        })
        .unwrap();
    (got, end)
}

/// A fresh engine on a 4 MiB memory journal with one 1 MiB volume of 512-byte blocks.
fn one_volume() -> (Engine, alcubierre_types::VolumeId) {
    one_volume_on(Arc::new(MemMedium::new(4 << 20)), &small_format(1), 1 << 20)
}

/// An engine formatted with `fmt` on `medium`, with one volume of 512-byte blocks and `size`
/// bytes.
fn one_volume_on(
    medium: Arc<dyn Medium>,
    fmt: &alcubierre_cache::FormatOptions,
    size: u64,
) -> (Engine, alcubierre_types::VolumeId) {
    Engine::format(&*medium, fmt).unwrap();
    let backend = Arc::new(MemBackend::new());
    let a = vol(1);
    backend.create(a, ByteSize(size)).unwrap();
    (open(medium, backend, &[(a, geometry(size))]), a)
}

#[test]
fn replicated_writes_come_back_in_order_with_their_data() {
    let medium: Arc<dyn Medium> = Arc::new(MemMedium::new(8 << 20));
    Engine::format(&*medium, &small_format(1)).unwrap();
    let backend = Arc::new(MemBackend::new());
    let (a, b) = (vol(1), vol(2));
    let g = geometry(4 << 20);
    for v in [a, b] {
        backend.create(v, ByteSize(4 << 20)).unwrap();
    }
    let e = open(medium.clone(), backend.clone(), &[(a, g), (b, g)]);
    let p = e.partition_of(a).clone();
    // Forty writes of volume a (4 KiB-aligned, 512-byte blocks: LBA 8 per 4 KiB), in small
    // batches (16 data blocks each), interleaved with untagged writes of volume b; write 10 is
    // a zero range, write 20 spans three blocks, the epoch changes at 30.
    let mut want = Vec::new();
    for s in 1..=40u64 {
        let epoch = if s < 30 { 3 } else { 4 };
        let (op, r) = match s {
            10 => (
                e.zero_op(a, Lba(800), BlockCount(64)).unwrap(),
                Replayed::Zero {
                    offset: ByteOffset(800 * 512),
                    len: ByteSize(64 * 512),
                },
            ),
            20 => {
                let d: Vec<u8> = (0..3 * 4096).map(|i| (i / 4096) as u8 + 100).collect();
                (
                    e.write_op(a, Lba(16), Bytes::from(d.clone())).unwrap(),
                    Replayed::Write {
                        offset: ByteOffset(16 * 512),
                        data: Bytes::from(d),
                    },
                )
            }
            _ => (
                e.write_op(a, Lba(8 * s), block(s as u8)).unwrap(),
                Replayed::Write {
                    offset: ByteOffset(8 * s * 512),
                    data: block(s as u8),
                },
            ),
        };
        let other = e.write_op(b, Lba(8 * s), block(200)).unwrap();
        for r in p.commit_tagged(&[op, other], &[tag(epoch, s), LogPos::default()]) {
            r.unwrap();
        }
        want.push((tag(epoch, s), r));
    }
    let (got, end) = replay(&e, a, 0, 40);
    assert_eq!(end, ReplayEnd::Complete);
    assert_eq!(got, want);
    // A range inside.
    let (got, end) = replay(&e, a, 12, 17);
    assert_eq!(end, ReplayEnd::Complete);
    assert_eq!(got, want[12..17].to_vec());
    // Beyond what the journal holds: the run ends at the first missing write.
    let (got, end) = replay(&e, a, 35, 45);
    assert_eq!(end, ReplayEnd::Missing { seq: SeqNo(41) });
    assert_eq!(got, want[35..].to_vec());
    // The caller may stop early.
    let mut n = 0;
    let end = e
        .replay_replicated(a, SeqNo(0), SeqNo(40), |_, _| {
            n += 1;
            n < 3
        })
        .unwrap();
    assert_eq!((end, n), (ReplayEnd::Complete, 3));
    // Volume b's writes are untagged: nothing to replay.
    assert_eq!(replay(&e, b, 0, 5).1, ReplayEnd::Missing { seq: SeqNo(1) });
    // After a restart, from the journal alone.
    drop(e);
    let e = open(medium, backend, &[(a, g), (b, g)]);
    let (got, end) = replay(&e, a, 0, 40);
    assert_eq!(end, ReplayEnd::Complete);
    assert_eq!(got, want);
}

#[test]
fn partial_blocks_and_resets_end_or_void_the_replay() {
    let (e, a) = one_volume();
    let p = e.partition_of(a).clone();
    let commit = |lba: u64, d: Bytes, t: LogPos| {
        let op = e.write_op(a, Lba(lba), d).unwrap();
        p.commit_tagged(&[op], &[t]).pop().unwrap().unwrap();
    };
    commit(0, block(1), tag(1, 1));
    // 512 bytes into the middle of a 4 KiB block: journaled merged with the block's other
    // sectors, which a replay cannot tell from the write.
    commit(9, Bytes::from(vec![2u8; 512]), tag(1, 2));
    commit(16, block(3), tag(1, 3));
    let (got, end) = replay(&e, a, 0, 3);
    assert_eq!(end, ReplayEnd::Missing { seq: SeqNo(2) });
    assert_eq!(got.len(), 1);
    // A follower's reset voids the log before it: its writes start again from the base.
    e.reset_replica(a, tag(2, 10)).unwrap();
    commit(0, block(4), tag(2, 11));
    commit(8, block(5), tag(2, 12));
    let (got, end) = replay(&e, a, 10, 12);
    assert_eq!(end, ReplayEnd::Complete);
    assert_eq!(
        got.iter().map(|(t, _)| t.seq.0).collect::<Vec<_>>(),
        [11, 12]
    );
    assert_eq!(replay(&e, a, 0, 12).1, ReplayEnd::Missing { seq: SeqNo(1) });
}

/// Writes the destager passed (in the backend, still cached between the tail and the destage
/// cursor) still replay: a primary whose idea of its destage point lags its destager's.
#[test]
fn destaged_writes_still_cached_replay_from_the_tail() {
    let (e, a) = one_volume();
    let p = e.partition_of(a).clone();
    for s in 1..=20u64 {
        let op = e.write_op(a, Lba(8 * s), block(s as u8)).unwrap();
        p.commit_tagged(&[op], &[tag(1, s)]).pop().unwrap().unwrap();
    }
    e.set_replica_role(a, alcubierre_cache::ReplicaRole::Primary);
    e.destage_now(a, None).unwrap();
    assert_eq!(
        e.replication_log(a).destaged,
        SeqNo(20),
        "the destager passed them all"
    );
    let (got, end) = replay(&e, a, 4, 20);
    assert_eq!(end, ReplayEnd::Complete);
    assert_eq!(
        got.iter().map(|(t, _)| t.seq.0).collect::<Vec<_>>(),
        (5..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        got[0].1,
        Replayed::Write {
            offset: ByteOffset(8 * 5 * 512),
            data: block(5)
        }
    );
}

/// A memory medium that counts the bytes read from it.
struct CountingReads {
    inner: MemMedium,
    read: std::sync::atomic::AtomicU64,
}

impl Medium for CountingReads {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "counting memory".into()
    }
}

#[test]
fn a_long_replay_reads_each_batch_about_once() {
    // 48 MiB of 64 KiB writes in 1 MiB batches: several 8 MiB replay chunks, each read with
    // windows that must not run far past the chunk (what a window holds beyond it is read
    // again by the next chunk).
    let medium = Arc::new(CountingReads {
        inner: MemMedium::new(128 << 20),
        read: Default::default(),
    });
    let (e, a) = one_volume_on(
        medium.clone(),
        &alcubierre_cache::FormatOptions::default(),
        64 << 20,
    );
    let p = e.partition_of(a).clone();
    let writes = 48 * 16u64;
    for group in 0..writes / 3 {
        let ops: Vec<_> = (0..3)
            .map(|k| {
                let s = group * 3 + k;
                e.write_op(a, Lba(s * 128), Bytes::from(vec![s as u8; 64 << 10]))
                    .unwrap()
            })
            .collect();
        let tags: Vec<_> = (1..=3).map(|k| tag(1, group * 3 + k)).collect();
        for r in p.commit_tagged(&ops, &tags) {
            r.unwrap();
        }
    }
    let before = medium.read.load(std::sync::atomic::Ordering::Relaxed);
    let mut n = 0u64;
    let end = e
        .replay_replicated(a, SeqNo(0), SeqNo(writes), |t, r| {
            n += 1;
            assert_eq!(t, tag(1, n));
            let Replayed::Write { offset, data } = r else {
                panic!("write {n} came back as {r:?}");
            };
            assert_eq!(offset, ByteOffset((n - 1) * (64 << 10)));
            assert!(data.iter().all(|&b| b == (n - 1) as u8));
            true
        })
        .unwrap();
    assert_eq!((end, n), (ReplayEnd::Complete, writes));
    let read = medium.read.load(std::sync::atomic::Ordering::Relaxed) - before;
    let data = writes * (64 << 10);
    println!("replayed {data} bytes of writes, read {read} bytes");
    assert!(
        read < data + data / 3,
        "the replay read {read} bytes for {data} bytes of writes"
    );
}
