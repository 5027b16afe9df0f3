//! Request and response bodies of `/api/v1`. They are the API's, not the store's: the control
//! plane converts its records to these and from these, so a record can change without the API
//! changing, and the reverse. Requests refuse fields they do not know; responses may gain
//! fields in a later version of `v1` (clients ignore what they do not know).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error: the message, and the request field it is about when there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Error {
    /// What went wrong and, where it helps, what to do.
    pub error: String,
    /// The request field at fault (`size`, `source.snapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

// ---- cluster configuration ----

/// The backend the cluster destages to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendAddress {
    /// A directory of sparse files, one per volume (one machine, or a shared file system).
    File {
        /// Absolute path of the directory.
        path: String,
    },
    /// A Ceph cluster's RBD pool.
    Rbd {
        /// Monitor addresses, `ip:port` (msgr2 3300 or legacy 6789).
        monitors: Vec<String>,
        /// The pool holding the images.
        pool: String,
        /// The Ceph user, without `client.` (default `admin`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// A keyring file on every node (absolute path); none with cephx off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyring: Option<String>,
    },
}

/// Data and replica transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// RDMA (RoCE).
    Rdma,
}

/// Multipath paths per host, per protocol (seed: iSCSI 4, NVMe/TCP 1, NVMe/RDMA 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Multipath {
    /// iSCSI paths.
    pub iscsi: u32,
    /// NVMe/TCP paths.
    pub nvme_tcp: u32,
    /// NVMe/RDMA paths.
    pub nvme_rdma: u32,
}

/// A group of nodes sharing a data subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// `node-[10-12]`, or a single name.
    pub nodes: String,
    /// Data subnet, `192.168.10.0/24`.
    pub subnet: String,
    /// Address of the lowest-numbered node.
    pub start: String,
}

/// The cluster configuration. A field left out takes its default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The backend; saved only after a connectivity test passes.
    #[serde(default)]
    pub backend: Option<BackendAddress>,
    /// Data (front-end) transport (default `tcp`).
    #[serde(default)]
    pub data_transport: Option<Transport>,
    /// Replica transport (default `tcp`).
    #[serde(default)]
    pub replica_transport: Option<Transport>,
    /// Node groups and their data subnets.
    #[serde(default)]
    pub node_groups: Vec<NodeGroup>,
    /// Journals per cache device (default 1).
    #[serde(default)]
    pub partitions_per_cache_device: Option<u32>,
    /// Move a lost replica to another node automatically (default true).
    #[serde(default)]
    pub dynamic_migration: Option<bool>,
    /// How long a lost replica's node may come back before it is replaced, seconds (default
    /// 600).
    #[serde(default)]
    pub migration_delay_s: Option<u64>,
    /// Destage rate in bytes per second; default: active nodes x 50 MB/s.
    #[serde(default)]
    pub destage_rate: Option<u64>,
    /// Multipath defaults (default iSCSI 4, NVMe/TCP 1, NVMe/RDMA 2).
    #[serde(default)]
    pub multipath: Option<Multipath>,
    /// Heartbeat interval, milliseconds (default 1000).
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    /// A node without heartbeat for this long is unavailable, milliseconds (default 5000).
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
}

// ---- nodes ----

/// A node's activation state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// Whether the node's heartbeat is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Heartbeats arrive.
    Available,
    /// The heartbeat lease expired.
    Unavailable,
}

/// Health of a cache device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CacheDevice {
    /// Device path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Health.
    pub state: CacheState,
}

/// What differs between nodes exporting the same volume, for multipath hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NvmeIdentity {
    /// ANA group id of the node's paths.
    pub ana_group: u32,
    /// First NVMe controller id.
    pub cntlid_base: u16,
    /// Number of controller ids.
    pub cntlid_count: u16,
}

/// A node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Node name (`node-10`): its id in the cluster.
    pub name: String,
    /// Management address (API, metrics); empty when it serves no API.
    pub management: String,
    /// Replica network address.
    pub replica: String,
    /// Cache devices.
    pub cache: Vec<CacheDevice>,
    /// Activation state.
    pub activation: Activation,
    /// Being drained: it takes no new replicas and the leader moves its replicas away.
    pub draining: bool,
    /// CPU threads, as the node reports them.
    pub cpu_threads: Option<u32>,
    /// NVMe/TCP I/O portals hosts reach the node on (`ip:port`).
    pub portals: Vec<String>,
    /// iSCSI portals hosts reach the node on, with its portal group tag (`ip:port,tpgt`).
    pub iscsi_portals: Vec<String>,
    /// How hosts tell this node's paths apart.
    pub nvme: Option<NvmeIdentity>,
    /// Whether its heartbeat is alive.
    pub service: Service,
}

/// Nodes to activate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// Node names (the first activation needs at least 3).
    pub nodes: Vec<String>,
}

/// Nodes being activated: each finishes its own activation (poll `GET /api/v1/nodes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Activating {
    /// The nodes.
    pub activating: Vec<String>,
}

// ---- status ----

/// A volume record that cannot be read: the volume is left as it is (served as before, never
/// taken for deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnreadableRecord {
    /// The record's key.
    pub key: String,
    /// Why it cannot be read.
    pub reason: String,
}

/// A replica its node fails to serve, and why; the node retries it with backoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaFailure {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// The node.
    pub node: String,
    /// Why it fails (the last attempt's error).
    pub reason: String,
    /// When it first failed (Unix seconds).
    pub since: u64,
    /// Attempts that failed.
    pub retries: u32,
}

/// The cluster at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// The leader's node name.
    pub leader: Option<String>,
    /// Registered nodes.
    pub nodes: u64,
    /// Active nodes.
    pub active: u64,
    /// Nodes whose heartbeat is alive.
    pub available: u64,
    /// Nodes being drained.
    pub draining: Vec<String>,
    /// Volumes.
    pub volumes: u64,
    /// Volumes with fewer in-sync replicas than replicas, or a replica failing.
    pub degraded: Vec<String>,
    /// Volumes whose primary is not up or fails (no I/O).
    pub unavailable: Vec<String>,
    /// Cache capacity of the active nodes, bytes.
    pub capacity_bytes: u64,
    /// Provisioned volume capacity, bytes.
    pub provisioned_bytes: u64,
    /// The capacity tier's size (a Ceph pool's stored plus available bytes, a file backend's
    /// file system), when the serving node's backend can tell.
    #[serde(default)]
    pub backend_capacity_bytes: Option<u64>,
    /// What the capacity tier can still store, bytes.
    #[serde(default)]
    pub backend_free_bytes: Option<u64>,
    /// Volume records that cannot be read.
    pub unreadable: Vec<UnreadableRecord>,
    /// Replicas their nodes fail to serve, with why.
    pub failures: Vec<ReplicaFailure>,
}

// ---- volumes ----

/// The block size of a volume created without one: 512-byte logical blocks on 4096-byte
/// physical ones ("512e"), which every host and guest OS takes.
pub const DEFAULT_BLOCK_SIZE: u64 = 512;

/// Where a cloned volume came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSource {
    /// The source volume (its name or id in a request; its id once created).
    pub volume: String,
    /// The snapshot's name.
    pub snapshot: String,
}

/// A volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size: 512 or 4096.
    pub block_size: u64,
    /// Nodes holding its replicas; the first is the preferred primary.
    pub replicas: Vec<String>,
    /// The replica that serves I/O (the others forward to it).
    pub primary: String,
    /// Replicas holding every acknowledged write.
    pub in_sync: Vec<String>,
    /// QoS policy name.
    pub qos: Option<String>,
    /// Hosts allowed to reach it (its attachments).
    pub hosts: Vec<String>,
    /// Whether any host may reach it: it names no hosts and was never attached (detaching the
    /// last host leaves nobody, not everybody).
    pub any_host: bool,
    /// Replica-set epoch, raised by every membership, in-sync or primary change.
    pub epoch: u64,
    /// The snapshot it was cloned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
}

/// What creating a volume needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Unique name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// 512 or 4096 (default: a clone's snapshot's, else 512 with 4096-byte physical blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// QoS policy name.
    #[serde(default)]
    pub qos: Option<String>,
    /// Host names allowed to attach (empty: any host).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Clone it from this snapshot (size at least the snapshot's, the same block size).
    #[serde(default)]
    pub source: Option<VolumeSource>,
}

impl CreateVolume {
    /// The block size asked for, else the default.
    pub fn block_size(&self) -> u64 {
        self.block_size.unwrap_or(DEFAULT_BLOCK_SIZE)
    }
}

/// A new size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// Bytes: a multiple of the block size, not smaller than now.
    pub size: u64,
}

/// The hosts allowed to attach a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeHosts {
    /// Host names (empty: any host).
    pub hosts: Vec<String>,
}

/// A volume's QoS policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeQos {
    /// The policy's name; null clears it.
    pub qos: Option<String>,
}

/// One follower in a [`Progress`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FollowerProgress {
    /// Its node.
    pub node: String,
    /// In the in-sync set.
    pub in_sync: bool,
    /// Connected and receiving writes.
    pub connected: bool,
    /// Writes it has yet to make durable.
    pub behind_writes: u64,
}

/// A volume's replication progress while a replica catches up (resync or rebuild).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// The primary publishing it.
    pub primary: String,
    /// The replica set's epoch.
    pub epoch: u64,
    /// The primary's newest write (sequence number).
    pub head: u64,
    /// Every follower.
    pub followers: Vec<FollowerProgress>,
}

// ---- QoS policies and hosts ----

/// A QoS policy: limits enforced at the target on every path of the volumes that name it. A
/// limit without `*_max` may let 100 ms of its allowance go at once; with one, an idle volume
/// saves credit for a burst at up to that rate for `burst_seconds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QosPolicy {
    /// Read operations per second.
    #[serde(default)]
    pub read_iops: Option<u64>,
    /// Write operations per second (write zeroes and unmaps count as writes).
    #[serde(default)]
    pub write_iops: Option<u64>,
    /// Operations per second, reads and writes together.
    #[serde(default)]
    pub total_iops: Option<u64>,
    /// Bytes read per second.
    #[serde(default)]
    pub read_bps: Option<u64>,
    /// Bytes written per second.
    #[serde(default)]
    pub write_bps: Option<u64>,
    /// Bytes per second, read and written together.
    #[serde(default)]
    pub total_bps: Option<u64>,
    /// The rate a burst of `read_iops` may reach (at least `read_iops`, which it needs).
    #[serde(default)]
    pub read_iops_max: Option<u64>,
    /// The rate a burst of `write_iops` may reach (at least `write_iops`, which it needs).
    #[serde(default)]
    pub write_iops_max: Option<u64>,
    /// The rate a burst of `total_iops` may reach (at least `total_iops`, which it needs).
    #[serde(default)]
    pub total_iops_max: Option<u64>,
    /// The rate a burst of `read_bps` may reach (at least `read_bps`, which it needs).
    #[serde(default)]
    pub read_bps_max: Option<u64>,
    /// The rate a burst of `write_bps` may reach (at least `write_bps`, which it needs).
    #[serde(default)]
    pub write_bps_max: Option<u64>,
    /// The rate a burst of `total_bps` may reach (at least `total_bps`, which it needs).
    #[serde(default)]
    pub total_bps_max: Option<u64>,
    /// How long a burst at a `*_max` rate lasts, from credit saved while the volume ran below
    /// its limits, in seconds (1-3600; default 1).
    #[serde(default)]
    pub burst_seconds: Option<u64>,
}

/// QoS policies by name.
pub type QosPolicies = BTreeMap<String, QosPolicy>;

/// A host (initiator) and its credentials, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Optional; the path names the host.
    #[serde(default)]
    pub name: String,
    /// NVMe host NQN.
    #[serde(default)]
    pub nqn: Option<String>,
    /// iSCSI initiator IQN.
    #[serde(default)]
    pub iqn: Option<String>,
    /// NVMe Host Identifier (a UUID): a force detach finds the host's NVMe reservations by it.
    #[serde(default)]
    pub nvme_hostid: Option<String>,
    /// `[user, secret]`: the CHAP credentials the host logs in with (iSCSI; secret 12-16
    /// characters).
    #[serde(default)]
    pub chap: Option<(String, String)>,
    /// `[user, secret]`: mutual CHAP, what the target proves to the host (needs `chap`; a
    /// different secret).
    #[serde(default)]
    pub target_chap: Option<(String, String)>,
}

/// A host as read back: its CHAP secrets are never returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    /// Name.
    pub name: String,
    /// NVMe host NQN.
    pub nqn: Option<String>,
    /// iSCSI initiator IQN.
    pub iqn: Option<String>,
    /// NVMe Host Identifier.
    #[serde(default)]
    pub nvme_hostid: Option<String>,
    /// The CHAP user it logs in with.
    pub chap_user: Option<String>,
    /// The mutual CHAP user the target proves itself with.
    pub target_chap_user: Option<String>,
    /// What its host agent last reported, when one runs there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<HostLiveness>,
}

/// A host agent's report that its host is alive (`alcubierre-node`'s daemon sends one each
/// round, to the API on the storage nodes' addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent and its version.
    pub agent: String,
}

/// Whether a host's agent is reporting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostLiveness {
    /// The host's name.
    pub host: String,
    /// The agent and its version, as last reported.
    pub agent: String,
    /// When it last reported (Unix milliseconds, the receiving node's clock).
    pub last_seen_ms: u64,
    /// Whether that was within the liveness timeout (`timeout_ms`): a host that stopped
    /// reporting may be fenced (`POST /api/v1/hosts/{name}/fence`).
    pub alive: bool,
    /// The liveness timeout.
    pub timeout_ms: u64,
}

/// What fencing a host did: each of its attachments force-detached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Fenced {
    /// The host's name.
    pub host: String,
    /// Its liveness when it was fenced.
    pub liveness: Option<HostLiveness>,
    /// Each volume it was attached to, detached and fenced.
    pub detached: Vec<super::Detached>,
}

// ---- snapshots ----

/// A snapshot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Requested; the volume's primary has not taken it yet.
    Creating,
    /// In the backend, holding every write acknowledged before the request.
    Ready,
    /// The primary could not take it (see `error`); delete it and try again.
    Failed,
}

/// A snapshot of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Its name, unique per volume.
    pub name: String,
    /// The volume's id.
    pub volume: String,
    /// The volume's name.
    pub volume_name: String,
    /// The volume's size when the snapshot was requested, in bytes.
    pub size: u64,
    /// The volume's block size.
    pub block_size: u64,
    /// Where it stands.
    pub state: SnapshotState,
    /// When it was requested (Unix seconds).
    pub created: u64,
    /// The node that took it.
    pub node: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A snapshot to take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// 1-64 of `A-Z a-z 0-9 - _ .`, not starting with `.`; unique per volume.
    pub name: String,
}

// ---- plan ----

/// What the planning rules recommend for a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    /// Raw capacity, TB.
    pub raw_tb: f64,
    /// Raw capacity per node, TB.
    pub raw_tb_per_node: f64,
    /// Whether the node is in the "above 80 TB per node" class.
    pub large_nodes: bool,
    /// Minimum cache capacity per disk, TB, exactly as the rule gives it.
    pub cache_tb_per_disk: f64,
    /// The same rounded down to one decimal, as the seed states its example.
    pub cache_tb_per_disk_seed: f64,
    /// What to buy per disk: the rule, but at least the 1.5 TB minimum.
    pub cache_tb_per_disk_min: f64,
    /// Minimum Ceph OSDs in total (nodes x 8).
    pub min_osds: u32,
    /// OSDs for the 1,200-IOPS headroom rule.
    pub headroom_osds: u32,
    /// OSDs used for the thread count (the input, or the larger minimum).
    pub osds: u32,
    /// OSDs per node (rounded up).
    pub osds_per_node: u32,
    /// CPU threads per node.
    pub threads_per_node: u32,
    /// Destage rate limit, MB/s.
    pub destage_mb_per_s: u32,
    /// IOPS Ceph delivers with `osds` OSDs.
    pub ceph_iops: u64,
    /// IOPS the tier peaks at (nodes x 100k).
    pub tier_peak_iops: u64,
    /// The seed's recommended node configuration for this size class.
    pub recommended_node: String,
    /// Multipath paths per host: iSCSI, NVMe/TCP, NVMe/RDMA.
    pub multipath_paths: (u32, u32, u32),
    /// Baseline test before production: VMs and the volume size each, GB.
    pub baseline_vms: u32,
    /// Warnings for inputs below minimums or recommendations.
    pub warnings: Vec<String>,
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Meets the rule.
    Ok,
    /// Below a recommendation.
    Warn,
    /// Breaks a rule the seed states as a requirement.
    Fail,
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    /// How serious.
    pub level: Level,
    /// Which rule.
    pub rule: String,
    /// What was found, with the numbers.
    pub detail: String,
}

/// The live cluster checked against the plan for its size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// The plan for the cluster's active node count and cache disks.
    pub plan: Plan,
    /// Each rule's result.
    pub findings: Vec<Finding>,
}
