//! Persistent reservation changes tell the other registrants (SPC-4 5.14.11), whichever node
//! their nexus is on: the LU is one across the cluster. Two nodes' LUs share one reservation
//! state (as the primary keeps it for every path) and pass unit attentions to each other.

use std::sync::Arc;

use alcubierre_block::{MemBlockDevice, Reserved};
use alcubierre_iscsi::scsi::{Lun, Outcome};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use bytes::Bytes;

const A: [u8; 16] = [1; 16];
const B: [u8; 16] = [2; 16];
const TUR: [u8; 6] = [0; 6];
/// PR types (SPC-4 table 169).
const WRITE_EXCLUSIVE: u8 = 1;
const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;

/// Node 1's LU with nexus A, node 2's with nexus B, one reservation state, linked.
fn two_nodes() -> (Arc<Lun>, Arc<Lun>) {
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
    let dev = Arc::new(Reserved::volatile(MemBlockDevice::new(g)));
    let one = Arc::new(Lun::new(dev.clone(), [3; 16], 1));
    let two = Arc::new(Lun::new(dev, [3; 16], 2));
    one.nexus_joined(&A);
    two.nexus_joined(&B);
    for (from, to) in [(&one, &two), (&two, &one)] {
        let to = to.clone();
        from.pass_attentions_on(Arc::new(move |asc, ascq, hosts| {
            let to = to.clone();
            Box::pin(async move { to.attention_from_elsewhere(asc, ascq, &hosts) })
        }));
    }
    (one, two)
}

fn exec(l: &Lun, h: &[u8; 16], cdb: &[u8], data: &[u8]) -> Outcome {
    futures::executor::block_on(l.execute(h, cdb, Bytes::copy_from_slice(data)))
}

/// PERSISTENT RESERVE OUT `sa` of type `rtype` with `key` and `sa_key`.
fn pr_out(l: &Lun, h: &[u8; 16], sa: u8, rtype: u8, key: u64, sa_key: u64) {
    let cdb = [0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    let o = exec(l, h, &cdb, &p);
    assert_eq!(o.status, 0, "PR OUT {sa}: {o:?}");
}

/// The next command of `h` gets unit attention `(0x2a, ascq)`, once; then nothing.
fn told(l: &Lun, h: &[u8; 16], ascq: u8) {
    let o = exec(l, h, &TUR, &[]);
    let s = o.sense.expect("a unit attention");
    assert_eq!((o.status, s.key, s.asc, s.ascq), (2, 0x06, 0x2a, ascq));
    assert_eq!(exec(l, h, &TUR, &[]).status, 0, "once");
}

fn quiet(l: &Lun, h: &[u8; 16]) {
    assert_eq!(exec(l, h, &TUR, &[]).status, 0, "no unit attention");
}

#[test]
fn a_preempt_on_one_node_tells_the_preempted_registrant_on_another() {
    let (one, two) = two_nodes();
    pr_out(&one, &A, 0, 0, 0, 0xa);
    pr_out(&two, &B, 0, 0, 0, 0xb);
    pr_out(&two, &B, 1, WRITE_EXCLUSIVE, 0xb, 0);
    // A preempts B's registration (and so its reservation) through node 1.
    pr_out(&one, &A, 4, WRITE_EXCLUSIVE, 0xa, 0xb);
    told(&two, &B, 0x05); // REGISTRATIONS PREEMPTED
    quiet(&one, &A);
}

#[test]
fn a_clear_tells_every_other_registrant() {
    let (one, two) = two_nodes();
    pr_out(&one, &A, 0, 0, 0, 0xa);
    pr_out(&two, &B, 0, 0, 0, 0xb);
    pr_out(&one, &A, 1, WRITE_EXCLUSIVE, 0xa, 0);
    pr_out(&one, &A, 3, 0, 0xa, 0); // CLEAR
    told(&two, &B, 0x03); // RESERVATIONS PREEMPTED
    quiet(&one, &A);
}

#[test]
fn releasing_an_all_registrants_reservation_tells_the_others() {
    let (one, two) = two_nodes();
    pr_out(&one, &A, 0, 0, 0, 0xa);
    pr_out(&two, &B, 0, 0, 0, 0xb);
    pr_out(&one, &A, 1, WRITE_EXCLUSIVE_ALL_REGISTRANTS, 0xa, 0);
    pr_out(&one, &A, 2, WRITE_EXCLUSIVE_ALL_REGISTRANTS, 0xa, 0);
    told(&two, &B, 0x04); // RESERVATIONS RELEASED
    quiet(&one, &A);
    // Releasing a reservation only its holder had tells no one.
    pr_out(&one, &A, 1, WRITE_EXCLUSIVE, 0xa, 0);
    pr_out(&one, &A, 2, WRITE_EXCLUSIVE, 0xa, 0);
    quiet(&two, &B);
}
