//! The simulation's model: constants, journals with the power-loss model, nodes, events, the
//! client's record of acknowledged writes.

use std::collections::{BTreeMap, BTreeSet};

use alcubierre_replica::follower::Follower;
use alcubierre_replica::primary::Primary;
use alcubierre_replica::wire::{Msg, Payload};
use alcubierre_replica::{Epoch, LogPos, Membership, NodeId, SeqNo};
use alcubierre_types::ByteOffset;
use bytes::Bytes;

pub const N: usize = 3;
pub const BLOCKS: u64 = 8;
pub const HB_TIMEOUT: u64 = 1000;
pub const LEASE: u64 = 450;
pub const VOL: alcubierre_types::VolumeId =
    alcubierre_types::VolumeId(uuid::Uuid::from_bytes([7; 16]));
pub const RUN: u64 = 20_000;
pub const SETTLE: u64 = 8_000;

pub fn name(i: usize) -> NodeId {
    format!("n{i}").into()
}

pub fn idx(n: &NodeId) -> usize {
    n.as_str()[1..].parse().unwrap()
}

/// A write as the model journals it: one block gets a value.
pub fn payload(block: u64, value: u64) -> Payload {
    let mut d = vec![0u8; 512];
    d[..8].copy_from_slice(&value.to_le_bytes());
    Payload::Write {
        offset: ByteOffset(block * 512),
        data: Bytes::from(d),
    }
}

pub fn unpack(p: &Payload) -> (u64, u64) {
    match p {
        Payload::Write { offset, data } => (
            offset.0 / 512,
            u64::from_le_bytes(data[..8].try_into().unwrap()),
        ),
        Payload::Zero { .. } => unreachable!("the model writes only"),
    }
}

#[derive(Default)]
pub struct Journal {
    pub entries: Vec<(LogPos, Payload)>,
    pub durable: usize,
    /// Everything up to it is in the backend (after a reset, or released).
    pub base: LogPos,
    /// Entries up to this seq are not used for reads (released to the backend).
    pub evicted: SeqNo,
    pub gen: u64,
}

impl Journal {
    pub fn last(&self) -> LogPos {
        self.entries.last().map_or(self.base, |e| e.0)
    }

    pub fn epochs(&self) -> Vec<(SeqNo, Epoch)> {
        let mut out: Vec<(SeqNo, Epoch)> = Vec::new();
        for (p, _) in &self.entries {
            if out.last().map(|x| x.1) != Some(p.epoch) {
                out.push((p.seq, p.epoch));
            }
        }
        out
    }

    pub fn read(&self, block: u64, backend: &[u64]) -> u64 {
        self.entries
            .iter()
            .rev()
            .filter(|(p, _)| p.seq > self.evicted)
            .map(|(_, pl)| unpack(pl))
            .find(|(b, _)| *b == block)
            .map_or(backend[block as usize], |(_, v)| v)
    }

    pub fn pos_of(&self, seq: SeqNo) -> LogPos {
        self.entries.iter().find(|(p, _)| p.seq == seq).map_or(
            LogPos {
                epoch: Epoch(0),
                seq,
            },
            |e| e.0,
        )
    }
}

pub enum Role {
    None,
    P(Box<Primary>),
    F(Follower),
}

pub struct Node {
    pub up: bool,
    pub inc: u64,
    pub journal: Journal,
    pub role: Role,
    pub known: Option<Membership>,
    /// After a restart: act as primary only in a newer epoch than this.
    pub floor: Option<Epoch>,
    pub store_contact: u64,
    /// The connection this node, as a follower, listens on.
    pub primary_conn: Option<u64>,
    /// As primary: connection per follower.
    pub conns: BTreeMap<NodeId, u64>,
    pub destaged: LogPos,
}

#[derive(Debug)]
pub enum Ev {
    Tick,
    Deliver {
        conn: u64,
        to: usize,
        msg: Msg,
    },
    Down {
        conn: u64,
        to: usize,
    },
    Durable {
        node: usize,
        gen: u64,
        upto: usize,
    },
    Learn {
        node: usize,
        m: Membership,
    },
    Ask {
        node: usize,
        req: Req,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Heal,
    Cut {
        a: usize,
        b: Option<usize>,
        store: bool,
        until: u64,
    },
}

#[derive(Debug)]
pub enum Req {
    Drop(NodeId, Epoch),
    Add(NodeId, Epoch),
    Restarted,
}

pub struct Client {
    pub next: u64,
    /// (node, epoch, seq) -> (block, value)
    pub outstanding: BTreeMap<(usize, Epoch, SeqNo), (u64, u64)>,
    /// Per block: the newest acknowledged value.
    pub acked: Vec<u64>,
    pub writes: BTreeSet<(u64, u64)>,
    pub acks: u64,
    pub reads: u64,
    /// Acknowledgements after the faults stopped, and the time of the last one.
    pub settle_acks: u64,
    pub last_ack: u64,
}
