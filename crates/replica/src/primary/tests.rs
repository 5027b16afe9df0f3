//! The primary's core, step by step.

use bytes::Bytes;

use super::{Action, Config, Primary};
use crate::wire::{Msg, Payload};
use crate::{Epoch, LogPos, Membership, NodeId, SeqNo};
use alcubierre_types::VolumeId;
use alcubierre_types::{ByteOffset, ByteSize};

fn n(s: &str) -> NodeId {
    s.into()
}

fn members(epoch: u64, primary: &str) -> Membership {
    Membership {
        epoch: Epoch(epoch),
        primary: primary.into(),
        replicas: vec!["a".into(), "b".into(), "c".into()],
        in_sync: vec!["a".into(), "b".into(), "c".into()],
    }
}

const LEASE: u64 = 1_000_000;

/// Primary `a` in `epoch` with followers `b` and `c` streaming.
fn streaming(epoch: u64) -> Primary {
    let (mut p, _) = Primary::new(
        VolumeId::from_bytes([7; 16]),
        &n("a"),
        members(epoch, "a"),
        LogPos::default(),
        &[],
        LogPos::default(),
        Config::default(),
        0,
    );
    p.tick(1, LEASE);
    for f in ["b", "c"] {
        p.connected(&n(f));
        p.on_msg(
            &n(f),
            Msg::Opened {
                epoch: Epoch(epoch),
                last: LogPos::default(),
            },
        );
    }
    assert!(p.serving(), "{}", p.describe());
    p
}

fn write(p: &mut Primary) -> SeqNo {
    let (seq, _) = p
        .write(Payload::Write {
            offset: ByteOffset(0),
            data: Bytes::from_static(&[1; 512]),
        })
        .unwrap();
    p.local_durable(seq);
    seq
}

fn acked(acts: &[Action]) -> Option<SeqNo> {
    acts.iter().find_map(|a| match a {
        Action::Acked { upto } => Some(*upto),
        _ => None,
    })
}

#[test]
fn a_follower_ahead_by_an_epoch_holds_writes_until_the_store_says_who_leads() {
    let mut p = streaming(2);
    let seq = write(&mut p);
    assert_eq!(
        acked(&p.on_msg(
            &n("b"),
            Msg::Ack {
                epoch: Epoch(2),
                seq
            }
        )),
        None
    );
    // `c` learned epoch 3 from the store before this node did.
    let acts = p.on_msg(
        &n("c"),
        Msg::Refused {
            epoch: Epoch(3),
            version: crate::wire::VERSION,
        },
    );
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Demoted { .. })),
        "{acts:?}"
    );
    assert!(acts.contains(&Action::Close { to: n("c") }), "{acts:?}");
    assert!(
        !p.serving(),
        "nothing is read while the newer epoch is unknown"
    );
    assert_eq!(p.stale(), Some(Epoch(3)));
    // Even once every member acknowledged, nothing is acknowledged to the host.
    assert_eq!(
        acked(&p.on_msg(
            &n("c"),
            Msg::Ack {
                epoch: Epoch(2),
                seq
            }
        )),
        None
    );
    assert_eq!(p.acked(), SeqNo(0));

    // The store's epoch 3 keeps this node the primary: it reopens its followers and goes on.
    let acts = p.membership(members(3, "a"));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Demoted { .. })),
        "{acts:?}"
    );
    assert_eq!(p.stale(), None);
    assert!(p.serving());
    for f in ["b", "c"] {
        p.connected(&n(f));
        p.on_msg(
            &n(f),
            Msg::Opened {
                epoch: Epoch(3),
                last: LogPos {
                    epoch: Epoch(2),
                    seq,
                },
            },
        );
    }
    // The write held through the change is acknowledged once every in-sync member has it.
    assert_eq!(
        acked(&p.on_msg(
            &n("c"),
            Msg::Ack {
                epoch: Epoch(3),
                seq
            }
        )),
        Some(seq)
    );
    let next = write(&mut p);
    p.on_msg(
        &n("b"),
        Msg::Ack {
            epoch: Epoch(3),
            seq: next,
        },
    );
    assert_eq!(
        acked(&p.on_msg(
            &n("c"),
            Msg::Ack {
                epoch: Epoch(3),
                seq: next
            }
        )),
        Some(next)
    );
}

#[test]
fn a_newer_epoch_naming_another_primary_demotes_and_acknowledges_nothing() {
    let mut p = streaming(2);
    let seq = write(&mut p);
    p.on_msg(
        &n("b"),
        Msg::Refused {
            epoch: Epoch(3),
            version: crate::wire::VERSION,
        },
    );
    let acts = p.membership(members(3, "b"));
    assert!(
        acts.contains(&Action::Demoted { epoch: Epoch(3) }),
        "{acts:?}"
    );
    assert_eq!(
        acked(&p.on_msg(
            &n("c"),
            Msg::Ack {
                epoch: Epoch(2),
                seq
            }
        )),
        None
    );
    assert!(!p.serving());
    assert!(p
        .write(Payload::Zero {
            offset: ByteOffset(0),
            len: ByteSize(512)
        })
        .is_err());
}

#[test]
fn an_epoch_between_the_current_and_the_one_heard_leaves_it_waiting() {
    let mut p = streaming(2);
    p.on_msg(
        &n("b"),
        Msg::Ack {
            epoch: Epoch(4),
            seq: SeqNo(0),
        },
    );
    p.membership(members(3, "a"));
    assert_eq!(p.stale(), Some(Epoch(4)));
    assert!(!p.serving());
    p.membership(members(4, "a"));
    assert!(p.serving());
}
