//! The backend conformance suite: the contract in the crate documentation, checked against
//! every implementation (the RBD backend runs it on a real Ceph in its own crate).

use alcubierre_backend::conformance::suite;
use alcubierre_backend::{Backend, FileBackend, MemBackend};
use alcubierre_types::{ByteOffset, ByteSize, VolumeId};

#[test]
fn file_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    suite(&FileBackend::new(dir.path()).unwrap());
}

#[test]
fn mem_backend_conforms() {
    suite(&MemBackend::new());
}

#[test]
fn mem_backend_outage_is_transient() {
    let b = MemBackend::new();
    let v = VolumeId::random();
    b.create(v, ByteSize::mib(1)).unwrap();
    b.set_available(false);
    let err = b.write(v, ByteOffset(0), &[1u8; 512]).unwrap_err();
    assert!(err.is_transient(), "{err}");
    b.set_available(true);
    b.write(v, ByteOffset(0), &[1u8; 512]).unwrap();
}
