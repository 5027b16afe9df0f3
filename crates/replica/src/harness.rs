//! Drives the decoder and both state machines from raw bytes; used by the fuzz target
//! (`fuzz/fuzz_targets/decode_replica.rs`) and the corpus replay test, so hostile input reaches
//! the same code in both.

use alcubierre_block::{Op, Reservations};
use alcubierre_types::{BlockCount, Lba, VolumeId};

use crate::follower::Follower;
use crate::primary::{Config, Primary};
use crate::wire::{Msg, Request};
use crate::{Epoch, LogPos, Membership, SeqNo};

/// Decodes frames from `data` until it runs out or a frame is bad; every message goes to a
/// follower and to a primary (as if from one of its followers).
pub fn run(data: &[u8]) {
    let m = Membership {
        epoch: Epoch(3),
        primary: "p".into(),
        replicas: vec!["p".into(), "f".into()],
        in_sync: vec!["p".into(), "f".into()],
    };
    let mut f = Follower::new(VolumeId::from_bytes([1; 16]), Epoch(3), LogPos::new(2, 5));
    let (mut p, _) = Primary::new(
        VolumeId::from_bytes([1; 16]),
        &"p".into(),
        m,
        LogPos::new(3, 9),
        &[(SeqNo(1), Epoch(2)), (SeqNo(7), Epoch(3))],
        LogPos::new(2, 2),
        Config::default(),
        0,
    );
    let f_node: crate::NodeId = "f".into();
    let _ = p.connected(&f_node);
    let mut resv = Reservations::default();
    let mut at = 0;
    while at < data.len() {
        match Msg::decode(&data[at..]) {
            Ok(Some((msg, used))) => {
                at += used;
                reservations(&mut resv, &msg);
                let _ = f.on_msg(msg.clone());
                let _ = f.local_durable(SeqNo(at as u64));
                let _ = p.on_msg(&f_node, msg);
                let _ = p.tick(at as u64, at as u64 + 100);
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Forwarded reservation commands run on one state, as on a primary; a reply's data is parsed
/// as a state, as on a forwarding path. The state must survive its own encoding.
fn reservations(state: &mut Reservations, msg: &Msg) {
    match msg {
        Msg::Request {
            host,
            req: Request::Reserve { cntlid, cmd },
            ..
        } => {
            let _ = state.apply(*host, *cntlid, *cmd);
            let read = Op::Read {
                lba: Lba(0),
                count: BlockCount(1),
            };
            let _ = state.check_io(host, read.writes());
            assert_eq!(
                Reservations::decode(&state.encode()).as_ref(),
                Ok(&*state),
                "the reservation state round-trips"
            );
        }
        Msg::Reply {
            result: Ok(data), ..
        } => {
            let _ = Reservations::decode(data);
        }
        _ => {}
    }
}
