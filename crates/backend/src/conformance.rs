//! The contract in the crate documentation as a test suite, run against every implementation
//! (`tests/conformance.rs` here for the file and memory backends; the RBD crate's tests on a
//! real Ceph). It panics, naming the broken rule, when a backend does not conform.

use alcubierre_types::{ByteOffset, ByteSize, VolumeId};

use crate::{Backend, BackendError};

/// Runs every rule of the contract on `b`, with fresh images it deletes at the end.
pub fn suite(b: &dyn Backend) {
    let v = VolumeId::random();
    // 1. create, size, bad sizes, duplicates
    assert!(matches!(
        b.create(v, ByteSize(1000)),
        Err(BackendError::InvalidSize { .. })
    ));
    b.create(v, ByteSize::mib(1)).unwrap();
    assert!(matches!(
        b.create(v, ByteSize::mib(1)),
        Err(BackendError::Exists { .. })
    ));
    assert_eq!(b.size(v).unwrap(), ByteSize::mib(1));

    // 3. never-written reads as zeroes
    let mut buf = vec![1u8; 8192];
    b.read(v, ByteOffset(0), &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));

    // write / read back, including 512-byte granularity
    b.write(v, ByteOffset(4096), &[7u8; 4096]).unwrap();
    b.write(v, ByteOffset(512), &[9u8; 512]).unwrap();
    b.write_many(
        v,
        &[
            (ByteOffset(65536), &[3u8; 1024][..]),
            (ByteOffset(0), &[4u8; 512][..]),
        ],
    )
    .unwrap();
    b.flush(v).unwrap();
    let mut buf = vec![0u8; 8192];
    b.read(v, ByteOffset(0), &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&x| x == 4));
    assert!(buf[512..1024].iter().all(|&x| x == 9));
    assert!(buf[1024..4096].iter().all(|&x| x == 0));
    assert!(buf[4096..].iter().all(|&x| x == 7));

    // out of range
    assert!(matches!(
        b.write(v, ByteOffset((1 << 20) - 512), &[0u8; 1024]),
        Err(BackendError::OutOfRange { .. })
    ));
    assert!(matches!(
        b.read(v, ByteOffset(u64::MAX - 10), &mut [0u8; 512]),
        Err(BackendError::OutOfRange { .. })
    ));

    // discard reads zero
    b.discard(v, ByteOffset(4096), ByteSize(4096)).unwrap();
    let mut buf = vec![1u8; 4096];
    b.read(v, ByteOffset(4096), &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));

    // 4. snapshot and clone keep the contents at snapshot time
    b.snapshot(v, "s1").unwrap();
    assert!(matches!(
        b.snapshot(v, "s1"),
        Err(BackendError::Exists { .. })
    ));
    b.write(v, ByteOffset(0), &[5u8; 512]).unwrap();
    let c = VolumeId::random();
    b.clone_snapshot(v, "s1", c).unwrap();
    let mut buf = vec![0u8; 1024];
    b.read(c, ByteOffset(0), &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&x| x == 4));
    assert!(buf[512..].iter().all(|&x| x == 9));
    assert!(matches!(
        b.clone_snapshot(v, "nope", VolumeId::random()),
        Err(BackendError::NotFound { .. })
    ));
    b.snapshot(v, "s0").unwrap();
    assert_eq!(b.list_snapshots(v).unwrap(), ["s0", "s1"]);
    // A clone outlives its snapshot.
    b.delete_snapshot(v, "s1").unwrap();
    assert_eq!(b.list_snapshots(v).unwrap(), ["s0"]);
    assert!(matches!(
        b.delete_snapshot(v, "s1"),
        Err(BackendError::NotFound { .. })
    ));
    let mut buf = vec![0u8; 1024];
    b.read(c, ByteOffset(0), &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&x| x == 4));
    assert!(b.list_snapshots(c).unwrap().is_empty());

    // 1. grow only
    b.resize(v, ByteSize::mib(2)).unwrap();
    assert_eq!(b.size(v).unwrap(), ByteSize::mib(2));
    let mut buf = vec![1u8; 4096];
    b.read(v, ByteOffset((2 << 20) - 4096), &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    assert!(matches!(
        b.resize(v, ByteSize::mib(1)),
        Err(BackendError::InvalidSize { .. })
    ));

    // delete
    b.delete(v).unwrap();
    b.delete(c).unwrap();
    assert!(matches!(b.size(v), Err(BackendError::NotFound { .. })));
    assert!(matches!(b.delete(v), Err(BackendError::NotFound { .. })));
}
