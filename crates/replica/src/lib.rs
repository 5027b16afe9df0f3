//! Three-way replication of a volume's writes between nodes' caches (issue 6).
//!
//! This crate holds the protocol as pure state machines: [`primary::Primary`] orders writes,
//! sends them to followers and decides when a write may be acknowledged; [`follower::Follower`]
//! appends them in order and reports what is durable. Neither does I/O: inputs (host writes,
//! messages, durable notifications, membership from the store, time) go in; actions (messages to
//! send, writes to persist, acknowledgements, requests to the leader) come out, so the
//! deterministic simulation (`tests/sim/`) drives exactly the code that runs in nodes. The
//! rules they implement are numbered in `docs/design/replication.md`.

#![forbid(unsafe_code)]

pub mod follower;
pub mod forward;
pub mod harness;
pub mod link;
pub mod node;
pub mod primary;
pub mod volume;
pub mod wire;

pub use alcubierre_types::{Epoch, LogPos, NodeId, SeqNo};

/// A replica set as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The epoch.
    pub epoch: Epoch,
    /// The primary.
    pub primary: NodeId,
    /// Every member.
    pub replicas: Vec<NodeId>,
    /// Members holding every acknowledged write (the primary is one).
    pub in_sync: Vec<NodeId>,
}
