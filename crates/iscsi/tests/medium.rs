//! A read that meets unreadable data (SBC-4 4.18.1): CHECK CONDITION, MEDIUM ERROR /
//! UNRECOVERED READ ERROR, and the INFORMATION field naming the first unreadable LBA.

use std::sync::Arc;

use alcubierre_block::MemBlockDevice;
use alcubierre_iscsi::scsi::Lun;
use alcubierre_types::{BlockSize, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;

fn lun(from: u64) -> Lun {
    let g = VolumeGeometry::new(BlockSize::B512, ByteSize::mib(1)).unwrap();
    let dev = MemBlockDevice::new(g);
    dev.lose_data_from(Lba(from));
    Lun::new(Arc::new(dev), [3; 16], 1)
}

fn read10(l: &Lun, lba: u32, blocks: u16) -> alcubierre_iscsi::scsi::Outcome {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x28;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    futures::executor::block_on(l.execute(&[0; 16], &cdb, Bytes::new()))
}

#[test]
fn an_unreadable_block_is_named_in_the_sense_information_field() {
    let l = lun(24);
    assert_eq!(read10(&l, 0, 8).status, 0);
    let o = read10(&l, 20, 16);
    assert_eq!(o.status, 2, "CHECK CONDITION");
    let s = o.sense.expect("sense data").encode();
    assert_eq!(
        s[0], 0xf0,
        "fixed format, VALID: the INFORMATION field is set"
    );
    assert_eq!((s[2] & 0x0f, s[12], s[13]), (0x03, 0x11, 0x00));
    assert_eq!(u32::from_be_bytes(s[3..7].try_into().unwrap()), 24);
}
