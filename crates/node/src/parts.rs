//! What a node's tasks share: its parts (engine, targets, replica listener, lease) and what it
//! publishes (per-volume statistics, health). A leaf module: the agent, the paths, the node's
//! own tasks and snapshots import it, and it imports none of them.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use alcubierre_block::{IoStats, Qos, RateLimiter};
use alcubierre_cache::{Engine, VolumeOpener};
use alcubierre_control::volumes::Volume;
use alcubierre_nvmf::Target;
use alcubierre_replica::node::ReplicaServer;
use alcubierre_replica::volume::Lease;
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use parking_lot::RwLock;

use crate::replication::Role;

/// What a node publishes about a volume it exports.
pub struct VolumeMetrics {
    /// The volume's name.
    pub name: String,
    /// Its I/O statistics.
    pub io: Arc<IoStats>,
    /// Its QoS limits in force.
    pub qos: Arc<Qos>,
    /// Its replication role here.
    pub role: Arc<Role>,
}

/// The volumes a node exports, by volume id.
pub type VolumeStats = Arc<RwLock<BTreeMap<String, VolumeMetrics>>>;

/// What a node's agent leaves as it is or fails to serve (`alcubierre_volumes_held`,
/// `alcubierre_volume_failed`).
#[derive(Default)]
pub struct AgentHealth {
    /// Volumes left as they are: their record is missing without a deletion request, or
    /// cannot be read.
    pub held: AtomicU64,
    /// Volumes it fails to serve, by id, with their names.
    pub failing: RwLock<BTreeMap<String, String>>,
}

/// What the agent acts on.
pub struct NodeParts {
    /// This node's name.
    pub name: String,
    /// Its cache engine.
    pub engine: Arc<Engine>,
    /// Opens volumes of its cache service.
    pub volumes: VolumeOpener,
    /// Its NVMe/TCP target.
    pub target: Arc<Target>,
    /// Its iSCSI target, when it serves iSCSI.
    pub iscsi: Option<Arc<alcubierre_iscsi::Target>>,
    /// Its ANA group.
    pub ana_group: u32,
    /// Its destagers' shared rate limit.
    pub destage_limit: Option<Arc<RateLimiter>>,
    /// Where it publishes the I/O statistics of the volumes it exports.
    pub stats: VolumeStats,
    /// Its replica listener (followers); `None`: it does not replicate (single node).
    pub replica: Option<Arc<ReplicaServer>>,
    /// Its replication lease, kept by the heartbeat.
    pub lease: Lease,
    /// What its agent leaves as it is or fails to serve, for metrics.
    pub health: Arc<AgentHealth>,
}

/// The geometry of volume record `v`.
pub fn geometry(v: &Volume) -> anyhow::Result<VolumeGeometry> {
    Ok(VolumeGeometry::new(
        BlockSize::from_bytes(v.block_size)?,
        ByteSize(v.size),
    )?)
}
