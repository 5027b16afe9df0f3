//! The Alcubierre storage node.
//!
//! [`Node::start`] assembles a node from a [`NodeSpec`]: its cache engine on its device, the
//! backend, the NVMe/TCP and iSCSI targets and, in a cluster, the registration, heartbeat,
//! leader election, REST API and the agent that applies the store's desired state. `alcubierre
//! serve` starts one from a config file, `alcubierre demo` three on an embedded store.
//!
//! Modules, leaves first (no two import each other):
//! * [`config`]: the node's configuration file.
//! * `parts`: what the node's tasks share (engine, targets, lease, published statistics).
//! * `replication`: the glue between a replicated volume and the store (its control requests,
//!   progress records, reservations, the shared-backend check).
//! * `paths`: a volume's exports on this node (NVMe/TCP subsystem, iSCSI LU) and their routes.
//! * `node_tasks`, `snapshots`: the node's own tasks (activation, lease, cache health,
//!   configuration) and its part in snapshots.
//! * `agent`: converges the volumes held here on the store's replica sets.
//! * [`metrics`]: the node's Prometheus families.
//! * [`tls`]: the API's TLS listener (and a client connection, for the CLI).
#![forbid(unsafe_code)]

mod agent;
pub mod config;
mod failpoints;
pub mod metrics;
mod node;
mod node_tasks;
mod parts;
mod paths;
mod replication;
mod snapshots;
pub mod tls;

pub use node::{Api, ExportedVolume, Node, NodeSpec};
