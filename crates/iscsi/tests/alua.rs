//! Implicit ALUA (SPC-4 sections 5.16, 6.36): the standard INQUIRY reports TPGS 01b, VPD page
//! 83h names this node's relative target port and target port group, and REPORT TARGET PORT
//! GROUPS reports the group in the state the node's path is in (as the replicated volume's
//! role sets it: optimized on the primary, non-optimized when forwarding, transitioning while
//! the node cannot serve).

use std::sync::Arc;

use alcubierre_block::MemBlockDevice;
use alcubierre_iscsi::scsi::{alua, Lun};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use bytes::Bytes;

fn lun(group: u16) -> Lun {
    let g = VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(1)).unwrap();
    Lun::new(Arc::new(MemBlockDevice::new(g)), [3; 16], group)
}

/// Nexuses A and B, logged in to `l`.
const A: [u8; 16] = [1; 16];
const B: [u8; 16] = [2; 16];
const TUR: [u8; 6] = [0; 6];

fn two_nexuses(group: u16) -> Lun {
    let l = lun(group);
    l.nexus_joined(&A);
    l.nexus_joined(&B);
    l
}

fn exec(l: &Lun, h: &[u8; 16], cdb: &[u8]) -> alcubierre_iscsi::scsi::Outcome {
    futures::executor::block_on(l.execute(h, cdb, Bytes::new()))
}

/// The next command of `h` gets unit attention `(asc, ascq)`, and only once.
fn attention_once(l: &Lun, h: &[u8; 16], (asc, ascq): (u8, u8)) {
    let o = exec(l, h, &TUR);
    let s = o.sense.unwrap();
    assert_eq!((o.status, s.key, s.asc, s.ascq), (2, 0x06, asc, ascq));
    assert_eq!(exec(l, h, &TUR).status, 0, "reported once");
}

fn run(l: &Lun, cdb: &[u8]) -> Bytes {
    let o = futures::executor::block_on(l.execute(&[0; 16], cdb, Bytes::new()));
    assert_eq!(o.status, 0, "{cdb:x?}: {o:?}");
    o.data
}

#[test]
fn inquiry_and_vpd_name_the_port_group() {
    let l = lun(7);
    let std = run(&l, &[0x12, 0, 0, 0, 96, 0]);
    assert_eq!(std[5] & 0x30, 0x10, "TPGS: implicit ALUA");
    let vpd = run(&l, &[0x12, 1, 0x83, 0, 255, 0]);
    let mut at = 4;
    let mut found = Vec::new();
    while at + 4 <= vpd.len() {
        let (kind, len) = (vpd[at + 1], vpd[at + 3] as usize);
        found.push((kind & 0x3f, vpd[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    // Type 4 (relative target port) and 5 (target port group), target port association.
    assert!(found.contains(&(0x14, vec![0, 0, 0, 7])), "{found:x?}");
    assert!(found.contains(&(0x15, vec![0, 0, 0, 7])), "{found:x?}");
}

#[test]
fn report_target_port_groups_follows_the_path_state() {
    let l = lun(7);
    for (state, want) in [
        (alua::OPTIMIZED, 0u8),
        (alua::NON_OPTIMIZED, 1),
        (alua::TRANSITIONING, 0xf),
    ] {
        l.set_alua(state);
        // Extended header format (what Linux's scsi_dh_alua asks for).
        let d = run(&l, &[0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), 12);
        assert_eq!(d[4], 0x10, "extended header");
        let desc = &d[8..];
        assert_eq!(desc[0] & 0x0f, want);
        assert_eq!(u16::from_be_bytes([desc[2], desc[3]]), 7, "group id");
        assert_eq!(desc[7], 1, "one target port");
        assert_eq!(
            u16::from_be_bytes([desc[10], desc[11]]),
            7,
            "its relative port id"
        );
        // Length-only header.
        let d = run(&l, &[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(d[4] & 0x0f, want);
    }
}

/// SAM-5 section 5.14: after the LU grows, each logged-in nexus gets one CHECK CONDITION,
/// UNIT ATTENTION, CAPACITY DATA HAS CHANGED (not on INQUIRY), then its commands run again.
#[test]
fn a_grown_lu_raises_one_unit_attention_per_nexus() {
    let l = two_nexuses(1);
    assert_eq!(exec(&l, &A, &TUR).status, 0);
    assert_eq!(exec(&l, &B, &TUR).status, 0);
    l.capacity_changed();
    assert_eq!(
        exec(&l, &A, &[0x12, 0, 0, 0, 36, 0]).status,
        0,
        "INQUIRY is not held"
    );
    for h in [&A, &B] {
        attention_once(&l, h, (0x2a, 0x09));
    }
}

/// SPC-4 section 5.16.2.5: a change of the path's asymmetric access state gives each nexus one
/// ASYMMETRIC ACCESS STATE CHANGED; setting the state it already has gives none.
#[test]
fn an_access_state_change_raises_one_unit_attention_per_nexus() {
    let l = two_nexuses(2);
    l.set_alua(alua::OPTIMIZED);
    assert_eq!(exec(&l, &A, &TUR).status, 0, "no change, no attention");
    l.set_alua(alua::NON_OPTIMIZED);
    l.set_alua(alua::TRANSITIONING);
    // Two changes, one attention.
    for h in [&A, &B] {
        attention_once(&l, h, (0x2a, 0x06));
    }
}

/// SAM-5 section 6.3: after a LUN reset every nexus, the one that asked included, gets BUS
/// DEVICE RESET FUNCTION OCCURRED once; a nexus that logged out gets nothing later.
#[test]
fn a_reset_raises_a_unit_attention_on_every_nexus() {
    let l = two_nexuses(2);
    l.nexus_lost(&B);
    futures::executor::block_on(l.reset());
    attention_once(&l, &A, (0x29, 0x03));
    assert_eq!(exec(&l, &B, &TUR).status, 0, "not logged in at the reset");
}

/// The LU is one across the cluster: a reset through one node's LU reaches the nexuses of the
/// LU on the others (through what the node passes it on with) before it returns.
#[test]
fn a_reset_is_passed_on_to_the_other_nodes_before_it_returns() {
    let here = Arc::new(two_nexuses(1));
    let there = Arc::new(two_nexuses(2));
    let t = there.clone();
    here.pass_attentions_on(Arc::new(move |asc, ascq, hosts| {
        let t = t.clone();
        Box::pin(async move { t.attention_from_elsewhere(asc, ascq, &hosts) })
    }));
    futures::executor::block_on(here.reset());
    for l in [&here, &there] {
        for h in [&A, &B] {
            attention_once(l, h, (0x29, 0x03));
        }
    }
    // Passed on, not back: a reset there does not reach here (nothing passes it on).
    futures::executor::block_on(there.reset());
    assert_eq!(exec(&here, &A, &TUR).status, 0);
}

/// Every node's target port group in REPORT TARGET PORT GROUPS: this node's first, then the
/// others as the cluster last told it; a change of theirs is announced too.
#[test]
fn report_target_port_groups_lists_every_node() {
    let l = two_nexuses(2);
    l.set_alua(alua::NON_OPTIMIZED);
    let _ = exec(&l, &A, &TUR); // the change's attention
    let _ = exec(&l, &B, &TUR);
    // Its own group in the list is ignored; the rest sorted.
    l.set_peer_groups(vec![
        (3, alua::NON_OPTIMIZED),
        (1, alua::OPTIMIZED),
        (2, alua::OPTIMIZED),
    ]);
    let d = run(&l, &[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), 36);
    let groups: Vec<(u8, u16, u16)> = d[4..]
        .chunks(12)
        .map(|g| {
            (
                g[0] & 0x0f,
                u16::from_be_bytes([g[2], g[3]]),
                u16::from_be_bytes([g[10], g[11]]),
            )
        })
        .collect();
    assert_eq!(groups, [(1, 2, 2), (0, 1, 1), (1, 3, 3)]);
    attention_once(&l, &A, (0x2a, 0x06));
    // The same again: no attention.
    l.set_peer_groups(vec![(1, alua::OPTIMIZED), (3, alua::NON_OPTIMIZED)]);
    assert_eq!(
        exec(&l, &B, &TUR).sense.map(|s| s.asc),
        Some(0x2a),
        "B's first"
    );
    assert_eq!(exec(&l, &B, &TUR).status, 0);
    l.set_peer_groups(vec![(1, alua::OPTIMIZED), (3, alua::NON_OPTIMIZED)]);
    assert_eq!(exec(&l, &A, &TUR).status, 0, "no change, no attention");
}
