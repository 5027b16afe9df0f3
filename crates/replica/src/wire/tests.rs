//! Round trips and bad frames of the wire format.

use super::*;
use alcubierre_types::{ByteOffset, ByteSize};

fn all() -> Vec<Msg> {
    let p = LogPos::new(3, 99);
    vec![
        Msg::Open {
            version: VERSION,
            volume: VolumeId::from_bytes([7; 16]),
            epoch: Epoch(4),
        },
        Msg::Opened {
            epoch: Epoch(4),
            last: p,
        },
        Msg::Refused {
            epoch: Epoch(5),
            version: 1,
        },
        Msg::Reset {
            epoch: Epoch(4),
            base: p,
        },
        Msg::Write {
            epoch: Epoch(4),
            pos: p,
            payload: Payload::Write {
                offset: ByteOffset(4096),
                data: Bytes::from(vec![9u8; 1024]),
            },
        },
        Msg::Write {
            epoch: Epoch(4),
            pos: p,
            payload: Payload::Zero {
                offset: ByteOffset(512),
                len: ByteSize(1 << 20),
            },
        },
        Msg::Ack {
            epoch: Epoch(4),
            seq: SeqNo(98),
        },
        Msg::Release {
            epoch: Epoch(4),
            seq: SeqNo(50),
        },
        Msg::ForwardOpen {
            version: VERSION,
            volume: VolumeId::from_bytes([8; 16]),
        },
        Msg::Request {
            id: 1,
            host: [1; 16],
            req: Request::Io(Op::Read {
                lba: Lba(5),
                count: BlockCount(8),
            }),
        },
        Msg::Request {
            id: 2,
            host: [2; 16],
            req: Request::Io(Op::Write {
                lba: Lba(6),
                data: Bytes::from(vec![3u8; 4096]),
            }),
        },
        Msg::Request {
            id: 3,
            host: [3; 16],
            req: Request::Io(Op::WriteZeroes {
                lba: Lba(7),
                count: BlockCount(2),
            }),
        },
        Msg::Request {
            id: 4,
            host: [4; 16],
            req: Request::Io(Op::Unmap {
                lba: Lba(8),
                count: BlockCount(1),
            }),
        },
        Msg::Request {
            id: 5,
            host: [6; 16],
            req: Request::Io(Op::Flush),
        },
        Msg::Request {
            id: 6,
            host: [7; 16],
            req: Request::Reserve {
                cntlid: 0x1234,
                cmd: ResvCommand::Register {
                    action: 2,
                    ignore_key: true,
                    current: u64::MAX,
                    new: 7,
                },
            },
        },
        Msg::Request {
            id: 7,
            host: [8; 16],
            req: Request::Reserve {
                cntlid: 3,
                cmd: ResvCommand::Acquire {
                    action: 1,
                    current: 1,
                    preempt: 2,
                    rtype: 6,
                },
            },
        },
        Msg::Request {
            id: 8,
            host: [9; 16],
            req: Request::Reserve {
                cntlid: 3,
                cmd: ResvCommand::Release {
                    action: 0,
                    current: 1,
                    rtype: 5,
                },
            },
        },
        Msg::Request {
            id: 9,
            host: [9; 16],
            req: Request::Reserve {
                cntlid: 3,
                cmd: ResvCommand::Report,
            },
        },
        Msg::Request {
            id: 12,
            host: [0; 16],
            req: Request::Attention {
                asc: 0x29,
                ascq: 0x03,
                hosts: vec![],
            },
        },
        Msg::Request {
            id: 13,
            host: [0; 16],
            req: Request::Attention {
                asc: 0x2a,
                ascq: 0x05,
                hosts: vec![[1; 16], [2; 16]],
            },
        },
        Msg::Reply {
            id: 10,
            result: Err(BlockError::ReservationConflict),
        },
        Msg::Reply {
            id: 11,
            result: Err(BlockError::InvalidField("RTYPE".into())),
        },
        Msg::Reply {
            id: 1,
            result: Ok(Bytes::from(vec![4u8; 512])),
        },
        Msg::Reply {
            id: 2,
            result: Ok(Bytes::new()),
        },
        Msg::Reply {
            id: 3,
            result: Err(BlockError::OutOfRange {
                lba: 1,
                count: 2,
                capacity: 3,
            }),
        },
        Msg::Reply {
            id: 4,
            result: Err(BlockError::Misaligned {
                len: 1,
                expected: 2,
                block_size: 3,
            }),
        },
        Msg::Reply {
            id: 5,
            result: Err(BlockError::TooLarge { len: 9, max: 8 }),
        },
        Msg::Reply {
            id: 6,
            result: Err(BlockError::Medium {
                lba: 4,
                reason: "crc".into(),
            }),
        },
        Msg::Reply {
            id: 7,
            result: Err(BlockError::Backend("down".into())),
        },
        Msg::Reply {
            id: 8,
            result: Err(BlockError::DeviceFailed("gone".into())),
        },
        Msg::Reply {
            id: 9,
            result: Err(BlockError::Unavailable("not primary".into())),
        },
    ]
}

#[test]
fn every_message_round_trips_and_needs_its_whole_frame() {
    for m in all() {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        let (d, used) = Msg::decode(&b).unwrap().unwrap();
        assert_eq!(d, m);
        assert_eq!(used, b.len());
        for cut in 0..b.len() {
            assert_eq!(Msg::decode(&b[..cut]).unwrap(), None, "{m:?} cut at {cut}");
        }
    }
}

#[test]
fn shared_decoding_gives_the_same_messages() {
    let mut b = BytesMut::new();
    for m in all() {
        m.encode(&mut b);
    }
    let mut copy = b.clone();
    let mut at = 0;
    for m in all() {
        let (d, used) = Msg::decode(&copy[at..]).unwrap().unwrap();
        at += used;
        assert_eq!(Msg::decode_shared(&mut b).unwrap(), Some(d.clone()));
        assert_eq!(d, m);
    }
    assert!(b.is_empty());
    copy.clear();
    assert_eq!(Msg::decode_shared(&mut copy).unwrap(), None);
}

#[test]
fn bad_frames_are_errors() {
    assert_eq!(
        Msg::decode(&[0xff, 0xff, 0xff, 0x7f]),
        Err(WireError::TooLong(0x7fff_ffff))
    );
    assert_eq!(
        Msg::decode(&[1, 0, 0, 0, 42]),
        Err(WireError::UnknownType(42))
    );
    assert!(matches!(
        Msg::decode(&[0, 0, 0, 0]),
        Err(WireError::BadLength { .. })
    ));
    // An ack with a trailing byte.
    let mut b = BytesMut::new();
    Msg::Ack {
        epoch: Epoch(1),
        seq: SeqNo(2),
    }
    .encode(&mut b);
    b.put_u8(0);
    b[0] += 1;
    assert!(matches!(
        Msg::decode(&b),
        Err(WireError::BadLength { kind: ACK, .. })
    ));
    // A write of 100 bytes.
    let mut b = BytesMut::new();
    b.put_u32_le(33 + 100);
    b.put_u8(WRITE);
    b.put_slice(&[0u8; 32]);
    b.put_slice(&[0u8; 100]);
    assert!(matches!(Msg::decode(&b), Err(WireError::Invalid(_))));
}
