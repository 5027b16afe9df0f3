//! EXTENDED COPY (LID1), RECEIVE COPY RESULTS and GET LBA STATUS on a LUN over a memory
//! device: data copied inside the LU (overlapping ranges too), every refusal with its sense
//! code, and the status held per nexus and list identifier.

use std::sync::Arc;

use alcubierre_block::MemBlockDevice;
use alcubierre_iscsi::scsi::{Lun, Outcome};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use bytes::Bytes;

const BS: usize = 4096;
const BLOCKS: u64 = 1024; // 4 MiB: more than one 1 MiB copy chunk

fn lun() -> Lun {
    let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(4)).unwrap();
    Lun::new(Arc::new(MemBlockDevice::new(g)), [3; 16], 1)
}

fn exec(l: &Lun, host: u8, cdb: &[u8], data: &[u8]) -> Outcome {
    futures::executor::block_on(l.execute(&[host; 16], cdb, Bytes::copy_from_slice(data)))
}

fn good(l: &Lun, cdb: &[u8], data: &[u8]) -> Bytes {
    let o = exec(l, 0, cdb, data);
    assert_eq!(o.status, 0, "{cdb:x?}: {o:?}");
    o.data
}

fn sense(o: &Outcome) -> (u8, u8, u8) {
    assert_eq!(o.status, 2, "{o:?}");
    let s = o.sense.unwrap();
    (s.key, s.asc, s.ascq)
}

fn write16(l: &Lun, lba: u64, data: &[u8]) {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x8a;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&((data.len() / BS) as u32).to_be_bytes());
    good(l, &cdb, data);
}

fn read16(l: &Lun, lba: u64, blocks: u32) -> Bytes {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x88;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    good(l, &cdb, &[])
}

fn xcopy_cdb(len: usize) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    cdb
}

/// The identification CSCD descriptor naming `l` by its VPD 83h NAA designator.
fn target(l: &Lun) -> Vec<u8> {
    let vpd = good(l, &[0x12, 1, 0x83, 0, 255, 0], &[]);
    assert_eq!(vpd[5] & 0x0f, 3, "first designator is NAA");
    let mut t = vec![0u8; 32];
    t[0] = 0xe4;
    t[4..24].copy_from_slice(&vpd[4..24]);
    t[29..32].copy_from_slice(&(BS as u32).to_be_bytes()[1..]);
    t
}

fn segment(src_index: u16, dst_index: u16, blocks: u16, src: u64, dst: u64) -> Vec<u8> {
    let mut s = vec![0u8; 28];
    s[0] = 0x02;
    s[2..4].copy_from_slice(&24u16.to_be_bytes());
    s[4..6].copy_from_slice(&src_index.to_be_bytes());
    s[6..8].copy_from_slice(&dst_index.to_be_bytes());
    s[10..12].copy_from_slice(&blocks.to_be_bytes());
    s[12..20].copy_from_slice(&src.to_be_bytes());
    s[20..28].copy_from_slice(&dst.to_be_bytes());
    s
}

/// A parameter list: header (list id, list id usage) then the descriptors.
fn params(list_id: u8, usage: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
    let t: Vec<u8> = targets.concat();
    let s: Vec<u8> = segments.concat();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[1] = usage << 3;
    p[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    p.extend_from_slice(&t);
    p.extend_from_slice(&s);
    p
}

fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (i / BS) as u8 ^ seed ^ (i as u8))
        .collect()
}

#[test]
fn extended_copy_copies_inside_the_lu() {
    let l = lun();
    let a = pattern(40, 0x5a);
    write16(&l, 0, &a);
    let p = params(
        1,
        2,
        &[target(&l)],
        &[segment(0, 0, 40, 0, 200), segment(0, 0, 8, 4, 100)],
    );
    good(&l, &xcopy_cdb(p.len()), &p);
    assert_eq!(&read16(&l, 200, 40)[..], &a[..]);
    assert_eq!(&read16(&l, 100, 8)[..], &a[4 * BS..12 * BS]);
    // A zero-length parameter list is no copy and no error.
    good(&l, &xcopy_cdb(0), &[]);
}

#[test]
fn overlapping_copies_behave_as_through_a_buffer() {
    let l = lun();
    // 600 blocks: more than two 256-block chunks.
    let a = pattern(600, 0x33);
    write16(&l, 0, &a);
    // Up by 10: the destination overlaps the source from above.
    let p = params(0, 3, &[target(&l)], &[segment(0, 0, 600, 0, 10)]);
    good(&l, &xcopy_cdb(p.len()), &p);
    assert_eq!(&read16(&l, 10, 600)[..], &a[..]);
    // Down by 10: back where it was.
    let p = params(0, 3, &[target(&l)], &[segment(0, 0, 600, 10, 0)]);
    good(&l, &xcopy_cdb(p.len()), &p);
    assert_eq!(&read16(&l, 0, 600)[..], &a[..]);
}

#[test]
fn malformed_copies_get_their_sense_codes_and_copy_nothing() {
    let l = lun();
    let a = pattern(8, 1);
    write16(&l, 0, &a);
    let t = target(&l);
    let seg = segment(0, 0, 8, 0, 64);
    let run = |p: &[u8]| sense(&exec(&l, 0, &xcopy_cdb(p.len()), p));
    // Truncated lists: PARAMETER LIST LENGTH ERROR.
    let whole = params(1, 2, std::slice::from_ref(&t), std::slice::from_ref(&seg));
    assert_eq!(run(&whole[..10]), (0x05, 0x1a, 0x00));
    assert_eq!(run(&whole[..16 + 31]), (0x05, 0x1a, 0x00));
    assert_eq!(run(&whole[..whole.len() - 1]), (0x05, 0x1a, 0x00));
    // Too many target or segment descriptors.
    let p = params(1, 2, &vec![t.clone(); 9], std::slice::from_ref(&seg));
    assert_eq!(run(&p), (0x05, 0x26, 0x06));
    let p = params(1, 2, std::slice::from_ref(&t), &vec![seg.clone(); 129]);
    assert_eq!(run(&p), (0x05, 0x26, 0x08));
    // Descriptor lists over the limit.
    let p = params(1, 2, std::slice::from_ref(&t), &vec![seg.clone(); 300]);
    assert_eq!(run(&p), (0x05, 0x1a, 0x00));
    // Unsupported descriptor types: a Fibre Channel target, a stream-to-stream segment.
    let mut fc = t.clone();
    fc[0] = 0xe0;
    assert_eq!(
        run(&params(1, 2, &[fc], std::slice::from_ref(&seg))),
        (0x05, 0x26, 0x07)
    );
    let mut stream = seg.clone();
    stream[0] = 0x03;
    assert_eq!(
        run(&params(1, 2, std::slice::from_ref(&t), &[stream])),
        (0x05, 0x26, 0x09)
    );
    // A target index beyond the list, another LU, a wrong block length: unreachable.
    let o = exec(
        &l,
        0,
        &xcopy_cdb(whole.len()),
        &params(1, 2, std::slice::from_ref(&t), &[segment(0, 1, 8, 0, 64)]),
    );
    assert_eq!(sense(&o), (0x0a, 0x08, 0x04));
    let mut other = t.clone();
    other[10] ^= 0xff;
    assert_eq!(
        run(&params(1, 2, &[other], std::slice::from_ref(&seg))),
        (0x0a, 0x08, 0x04)
    );
    let mut small = t.clone();
    small[29..32].copy_from_slice(&[0, 2, 0]);
    assert_eq!(
        run(&params(1, 2, &[small], std::slice::from_ref(&seg))),
        (0x0a, 0x08, 0x04)
    );
    // Beyond the end of the LU: COPY ABORTED naming segment 1 in the command-specific field.
    let p = params(
        1,
        2,
        std::slice::from_ref(&t),
        &[seg.clone(), segment(0, 0, 8, 0, BLOCKS - 1)],
    );
    let o = exec(&l, 0, &xcopy_cdb(p.len()), &p);
    assert_eq!(sense(&o), (0x0a, 0x00, 0x00));
    assert_eq!(o.sense.unwrap().encode()[8..12], [0, 0, 0, 1]);
    // A reserved list identifier usage.
    assert_eq!(
        run(&params(
            1,
            1,
            std::slice::from_ref(&t),
            std::slice::from_ref(&seg)
        )),
        (0x05, 0x26, 0x00)
    );
    // Nothing of the refused copies was written (validation precedes any copying).
    assert_eq!(&read16(&l, 64, 8)[..], &vec![0u8; 8 * BS][..]);
}

fn copy_status(l: &Lun, host: u8, list_id: u8) -> Outcome {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x84;
    cdb[2] = list_id;
    cdb[10..14].copy_from_slice(&1024u32.to_be_bytes());
    exec(l, host, &cdb, &[])
}

#[test]
fn copy_status_is_held_per_nexus_and_list_id() {
    let l = lun();
    assert_eq!(
        sense(&copy_status(&l, 0, 7)),
        (0x05, 0x24, 0x00),
        "none yet"
    );
    // Held (usage 00b).
    let p = params(7, 0, &[target(&l)], &[segment(0, 0, 16, 0, 100)]);
    good(&l, &xcopy_cdb(p.len()), &p);
    let o = copy_status(&l, 0, 7);
    assert_eq!(o.status, 0);
    let d = &o.data;
    assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), 8);
    assert_eq!(d[4], 0, "completed without error");
    assert_eq!(u16::from_be_bytes([d[5], d[6]]), 1, "segments processed");
    assert_eq!(d[7], 0, "bytes");
    assert_eq!(u32::from_be_bytes(d[8..12].try_into().unwrap()), 16 * 4096);
    // Another nexus does not see it; a copy that is not held leaves nothing.
    assert_eq!(sense(&copy_status(&l, 1, 7)), (0x05, 0x24, 0x00));
    let p = params(8, 2, &[target(&l)], &[segment(0, 0, 16, 0, 100)]);
    good(&l, &xcopy_cdb(p.len()), &p);
    assert_eq!(sense(&copy_status(&l, 0, 8)), (0x05, 0x24, 0x00));
    // Logout forgets it.
    l.nexus_lost(&[0; 16]);
    assert_eq!(sense(&copy_status(&l, 0, 7)), (0x05, 0x24, 0x00));
}

#[test]
fn operating_parameters_and_vpd_agree_on_the_limits() {
    let l = lun();
    let mut cdb = [0u8; 16];
    cdb[0] = 0x84;
    cdb[1] = 0x03;
    cdb[10..14].copy_from_slice(&1024u32.to_be_bytes());
    let d = good(&l, &cdb, &[]);
    let op_targets = u16::from_be_bytes([d[8], d[9]]);
    let op_segments = u16::from_be_bytes([d[10], d[11]]);
    let op_list = u32::from_be_bytes(d[12..16].try_into().unwrap());
    assert_eq!((op_targets, op_segments, op_list), (8, 128, 8192));
    assert_eq!(&d[44..44 + d[43] as usize], &[0x02, 0xe4]);
    // VPD 00h lists 8Fh; 8Fh's parameter data descriptor repeats the limits.
    let pages = good(&l, &[0x12, 1, 0, 0, 255, 0], &[]);
    assert!(pages[4..].contains(&0x8f));
    let p = good(&l, &[0x12, 1, 0x8f, 0, 255, 0], &[]);
    let mut at = 4;
    let mut seen = Vec::new();
    while at + 4 <= p.len() {
        let kind = u16::from_be_bytes([p[at], p[at + 1]]);
        let len = u16::from_be_bytes([p[at + 2], p[at + 3]]) as usize;
        let body = &p[at + 4..at + 4 + len];
        if kind == 0x0004 {
            assert_eq!(u16::from_be_bytes([body[4], body[5]]), op_targets);
            assert_eq!(u16::from_be_bytes([body[6], body[7]]), op_segments);
        }
        if kind == 0x0001 {
            // EXTENDED COPY with service action 00h.
            assert_eq!(&body[1..4], &[0x83, 1, 0x00]);
        }
        seen.push(kind);
        at += 4 + len;
    }
    assert_eq!(seen, [0x0001, 0x0004, 0x0008]);
}

#[test]
fn get_lba_status_reports_to_the_end_and_refuses_beyond_it() {
    let l = lun();
    let status = |lba: u64| {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9e;
        cdb[1] = 0x12;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&24u32.to_be_bytes());
        exec(&l, 0, &cdb, &[])
    };
    for lba in [0, 17, BLOCKS - 1] {
        let o = status(lba);
        assert_eq!(o.status, 0);
        let d = &o.data;
        assert_eq!(d.len(), 24);
        assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), lba);
        assert_eq!(
            u64::from(u32::from_be_bytes(d[16..20].try_into().unwrap())),
            BLOCKS - lba
        );
        assert_eq!(d[20] & 0x0f, 0, "mapped or unknown");
    }
    for lba in [BLOCKS, BLOCKS + 1, 1 << 63, u64::MAX] {
        assert_eq!(sense(&status(lba)), (0x05, 0x21, 0x00));
    }
}
