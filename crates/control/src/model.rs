//! The objects the control plane keeps in the metadata store, and their states.
//!
//! Node activation (seed section 4, step 4), a table checked by [`transition`]:
//!
//! ```text
//!  Registered ──activate──> Activating ──succeeded──> Active ──deactivate──> Deactivated
//!                               │                                              │
//!                               └──failed──> Failed ──activate──> Activating <─┘ activate
//! ```
//! Service state (available / unavailable) follows the node's heartbeat lease; cache device state
//! (healthy / degraded / failed) is reported by the node.

use serde::{Deserialize, Serialize};

/// Activation state of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Activation {
    /// Known to the cluster, not serving.
    Registered,
    /// Being activated.
    Activating,
    /// Serving volumes.
    Active,
    /// Activation failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Taken out of service by the operator.
    Deactivated,
}

/// What happens to a node's activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActivationEvent {
    /// The operator activates it.
    Activate,
    /// Activation finished.
    Succeeded,
    /// Activation failed.
    Failed(String),
    /// The operator deactivates it.
    Deactivate,
}

/// A transition the table does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a node that is {from} cannot {event}")]
pub struct TransitionError {
    /// The current state's name.
    pub from: &'static str,
    /// The event's name.
    pub event: &'static str,
}

impl Activation {
    /// The state's name as the CLI and API show it.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Registered => "registered",
            Activation::Activating => "activating",
            Activation::Active => "active",
            Activation::Failed { .. } => "failed",
            Activation::Deactivated => "deactivated",
        }
    }
}

impl ActivationEvent {
    fn name(&self) -> &'static str {
        match self {
            ActivationEvent::Activate => "be activated",
            ActivationEvent::Succeeded => "finish activating",
            ActivationEvent::Failed(_) => "fail activating",
            ActivationEvent::Deactivate => "be deactivated",
        }
    }
}

/// The activation table.
pub fn transition(from: &Activation, ev: ActivationEvent) -> Result<Activation, TransitionError> {
    use Activation as A;
    use ActivationEvent as E;
    match (from, &ev) {
        (A::Registered | A::Failed { .. } | A::Deactivated, E::Activate) => Ok(A::Activating),
        (A::Activating, E::Succeeded) => Ok(A::Active),
        (A::Activating, E::Failed(r)) => Ok(A::Failed { reason: r.clone() }),
        (A::Active, E::Deactivate) => Ok(A::Deactivated),
        _ => Err(TransitionError {
            from: from.name(),
            event: ev.name(),
        }),
    }
}

/// Whether the node's heartbeat is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Heartbeats arrive.
    Available,
    /// The heartbeat lease expired.
    Unavailable,
}

/// Health of a cache device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheState {
    /// Working.
    Healthy,
    /// Working with errors (e.g. media errors on reads).
    Degraded,
    /// Failed; its replicas are lost.
    Failed,
}

/// A cache device of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDevice {
    /// Device path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Health.
    pub state: CacheState,
}

/// A node as registered in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node name (`node-10`): the id in the cluster.
    pub name: String,
    /// Management address (API, metrics).
    pub management: String,
    /// Replica network address.
    pub replica: String,
    /// Cache devices.
    pub cache: Vec<CacheDevice>,
    /// Activation state.
    pub activation: Activation,
    /// Being drained: it takes no new replicas and the leader moves its replicas away.
    #[serde(default)]
    pub draining: bool,
    /// CPU threads, as the node reports them (for `plan --check`).
    #[serde(default)]
    pub cpu_threads: Option<u32>,
    /// NVMe/TCP I/O portals hosts reach the node on (`ip:port`).
    #[serde(default)]
    pub portals: Vec<String>,
    /// iSCSI portals hosts reach the node on, with the node's target portal group tag
    /// (`ip:port,tpgt`, as SendTargets lists them on every node serving a volume here).
    #[serde(default)]
    pub iscsi_portals: Vec<String>,
    /// How hosts tell this node's paths apart (unique per node in the cluster).
    #[serde(default)]
    pub nvme: Option<NvmeIdentity>,
}

/// What must differ between nodes exporting the same volume, for multipath hosts: the ANA
/// group of the node's paths and its range of NVMe controller ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeIdentity {
    /// ANA group id.
    pub ana_group: u32,
    /// First controller id.
    pub cntlid_base: u16,
    /// Number of controller ids.
    pub cntlid_count: u16,
}

impl NvmeIdentity {
    /// Why `self` (node `me`) cannot share a cluster with `other` (node `name`), if it cannot.
    pub fn conflict(&self, other: &NvmeIdentity, name: &str) -> Option<String> {
        if self.ana_group == other.ana_group {
            return Some(format!(
                "node.ana_group {} is already node {name}'s; give every node its own",
                self.ana_group
            ));
        }
        let end = |n: &NvmeIdentity| u32::from(n.cntlid_base) + u32::from(n.cntlid_count);
        if u32::from(self.cntlid_base) < end(other) && u32::from(other.cntlid_base) < end(self) {
            return Some(format!(
                "node.cntlid_base/cntlid_count {}..{} overlap node {name}'s {}..{}; give every node a disjoint range",
                self.cntlid_base,
                end(self),
                other.cntlid_base,
                end(other)
            ));
        }
        None
    }
}

impl Node {
    /// Total cache bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.iter().map(|c| c.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_table() {
        use Activation as A;
        use ActivationEvent as E;
        let s = transition(&A::Registered, E::Activate).unwrap();
        assert_eq!(s, A::Activating);
        assert_eq!(transition(&s, E::Succeeded).unwrap(), A::Active);
        assert_eq!(
            transition(&s, E::Failed("no cache".into())).unwrap(),
            A::Failed {
                reason: "no cache".into()
            }
        );
        assert_eq!(
            transition(&A::Active, E::Deactivate).unwrap(),
            A::Deactivated
        );
        assert_eq!(
            transition(&A::Deactivated, E::Activate).unwrap(),
            A::Activating
        );
        let e = transition(&A::Registered, E::Deactivate).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a node that is registered cannot be deactivated"
        );
        assert!(transition(&A::Active, E::Activate).is_err());
        assert!(transition(&A::Activating, E::Activate).is_err());
    }
}
