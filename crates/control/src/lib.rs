//! The control plane. Built so far, as pure functions with their rules in the docs:
//! * [`plan`]: the seed's sizing rules (section 3 of `shared/seed/README.md`), `alcubierre plan`;
//! * [`model`]: nodes, cache devices, activation / service / cache states and the activation table;
//! * [`activation`]: the rules an activation must pass (3 nodes first, same cache configuration,
//!   healthy caches, heartbeat, licence);
//! * [`placement`]: replicas on distinct eligible nodes, by free cache then load;
//! * [`cluster`]: the validated cluster configuration, node groups and their data addresses, the
//!   backend connectivity test;
//! * [`registry`]: nodes in the store, heartbeats on leases, activation and draining;
//! * [`volumes`]: volumes, QoS policies and hosts in the store;
//! * [`snapshots`]: volume snapshots in the store, taken by each volume's primary;
//! * [`reconcile`]: the leader's rules for replica sets (failover, out-of-sync, migration);
//! * [`leader`]: the election and the reconcile loop, fenced by the leadership's revision;
//! * [`api`]: the REST API and Prometheus metrics.
//!
//! The control plane reaches the data path only through `types`, `store` and narrow interfaces.

pub mod activation;
pub mod api;
pub mod attachments;
pub mod cluster;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod plan;
pub mod reconcile;
pub mod registry;
pub mod snapshots;
pub mod volumes;

/// The wall clock in seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
