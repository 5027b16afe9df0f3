//! Between the store's records and the API's bodies (`alcubierre_api::v1`): a record can change
//! without the API changing, and the reverse.

use alcubierre_api::v1 as api;
use alcubierre_types::NodeId;

use crate::cluster::{BackendAddress, ClusterConfig, Multipath, NodeGroup, Transport};
use crate::model::{Activation, CacheDevice, CacheState, Node, NvmeIdentity, Service};
use crate::snapshots::{Snapshot, SnapshotState};
use crate::volumes::{self, FollowerProgress, Host, Progress, QosPolicy, Volume};

impl From<&Volume> for api::Volume {
    fn from(v: &Volume) -> Self {
        Self {
            id: v.id.clone(),
            name: v.name.clone(),
            size: v.size,
            block_size: v.block_size,
            replicas: v.replicas.iter().map(NodeId::to_string).collect(),
            primary: v.primary.to_string(),
            in_sync: v.in_sync.iter().map(NodeId::to_string).collect(),
            qos: v.qos.clone(),
            hosts: v.hosts.clone(),
            any_host: v.any_host(),
            epoch: v.epoch.0,
            source: v.source.as_ref().map(|s| api::VolumeSource {
                volume: s.volume.clone(),
                snapshot: s.snapshot.clone(),
            }),
        }
    }
}

impl From<Volume> for api::Volume {
    fn from(v: Volume) -> Self {
        (&v).into()
    }
}

impl From<&Activation> for api::Activation {
    fn from(a: &Activation) -> Self {
        match a {
            Activation::Registered => Self::Registered,
            Activation::Activating => Self::Activating,
            Activation::Active => Self::Active,
            Activation::Failed { reason } => Self::Failed {
                reason: reason.clone(),
            },
            Activation::Deactivated => Self::Deactivated,
        }
    }
}

impl From<Service> for api::Service {
    fn from(s: Service) -> Self {
        match s {
            Service::Available => Self::Available,
            Service::Unavailable => Self::Unavailable,
        }
    }
}

impl From<CacheState> for api::CacheState {
    fn from(s: CacheState) -> Self {
        match s {
            CacheState::Healthy => Self::Healthy,
            CacheState::Degraded => Self::Degraded,
            CacheState::Failed => Self::Failed,
        }
    }
}

impl From<&CacheDevice> for api::CacheDevice {
    fn from(c: &CacheDevice) -> Self {
        Self {
            path: c.path.clone(),
            size: c.size,
            state: c.state.into(),
        }
    }
}

impl From<NvmeIdentity> for api::NvmeIdentity {
    fn from(n: NvmeIdentity) -> Self {
        Self {
            ana_group: n.ana_group,
            cntlid_base: n.cntlid_base,
            cntlid_count: n.cntlid_count,
        }
    }
}

/// Node record `n` with its service state.
pub fn node(n: &Node, service: Service) -> api::Node {
    api::Node {
        name: n.name.clone(),
        management: n.management.clone(),
        replica: n.replica.clone(),
        cache: n.cache.iter().map(Into::into).collect(),
        activation: (&n.activation).into(),
        draining: n.draining,
        cpu_threads: n.cpu_threads,
        portals: n.portals.clone(),
        iscsi_portals: n.iscsi_portals.clone(),
        nvme: n.nvme.map(Into::into),
        service: service.into(),
    }
}

impl From<&volumes::Unreadable> for api::UnreadableRecord {
    fn from(u: &volumes::Unreadable) -> Self {
        Self {
            key: u.key.clone(),
            reason: u.reason.clone(),
        }
    }
}

impl From<&volumes::ReplicaFailure> for api::ReplicaFailure {
    fn from(f: &volumes::ReplicaFailure) -> Self {
        Self {
            volume: f.volume.clone(),
            name: f.name.clone(),
            node: f.node.clone(),
            reason: f.reason.clone(),
            since: f.since,
            retries: f.retries,
        }
    }
}

impl From<&FollowerProgress> for api::FollowerProgress {
    fn from(f: &FollowerProgress) -> Self {
        Self {
            node: f.node.to_string(),
            in_sync: f.in_sync,
            connected: f.connected,
            behind_writes: f.behind_writes,
        }
    }
}

impl From<&Progress> for api::Progress {
    fn from(p: &Progress) -> Self {
        Self {
            volume: p.volume.clone(),
            name: p.name.clone(),
            primary: p.primary.to_string(),
            epoch: p.epoch.0,
            head: p.head.0,
            followers: p.followers.iter().map(Into::into).collect(),
        }
    }
}

/// A QoS policy has the same fields in the store and in the API: `$to { field: $q.field, .. }`
/// for each of them.
macro_rules! qos_policy {
    ($to:ident, $q:ident) => {
        $to {
            read_iops: $q.read_iops,
            write_iops: $q.write_iops,
            total_iops: $q.total_iops,
            read_bps: $q.read_bps,
            write_bps: $q.write_bps,
            total_bps: $q.total_bps,
            read_iops_max: $q.read_iops_max,
            write_iops_max: $q.write_iops_max,
            total_iops_max: $q.total_iops_max,
            read_bps_max: $q.read_bps_max,
            write_bps_max: $q.write_bps_max,
            total_bps_max: $q.total_bps_max,
            burst_seconds: $q.burst_seconds,
        }
    };
}

impl From<&QosPolicy> for api::QosPolicy {
    fn from(q: &QosPolicy) -> Self {
        qos_policy!(Self, q)
    }
}

impl From<&api::QosPolicy> for QosPolicy {
    fn from(q: &api::QosPolicy) -> Self {
        qos_policy!(Self, q)
    }
}

impl From<&Host> for api::HostView {
    fn from(h: &Host) -> Self {
        Self {
            name: h.name.clone(),
            nqn: h.nqn.clone(),
            iqn: h.iqn.clone(),
            nvme_hostid: h.nvme_hostid.clone(),
            chap_user: h.chap.as_ref().map(|c| c.0.clone()),
            target_chap_user: h.target_chap.as_ref().map(|c| c.0.clone()),
            liveness: None,
        }
    }
}

impl From<api::Host> for Host {
    fn from(h: api::Host) -> Self {
        Self {
            name: h.name,
            nqn: h.nqn,
            iqn: h.iqn,
            nvme_hostid: h.nvme_hostid.map(|id| id.to_ascii_lowercase()),
            chap: h.chap,
            target_chap: h.target_chap,
        }
    }
}

impl From<SnapshotState> for api::SnapshotState {
    fn from(s: SnapshotState) -> Self {
        match s {
            SnapshotState::Creating => Self::Creating,
            SnapshotState::Ready => Self::Ready,
            SnapshotState::Failed => Self::Failed,
        }
    }
}

impl From<&Snapshot> for api::Snapshot {
    fn from(s: &Snapshot) -> Self {
        Self {
            name: s.name.clone(),
            volume: s.volume.clone(),
            volume_name: s.volume_name.clone(),
            size: s.size,
            block_size: s.block_size,
            state: s.state.into(),
            created: s.created,
            node: s.node.clone(),
            error: s.error.clone(),
        }
    }
}

impl From<&BackendAddress> for api::BackendAddress {
    fn from(b: &BackendAddress) -> Self {
        match b.clone() {
            BackendAddress::File { path } => Self::File { path },
            BackendAddress::Rbd {
                monitors,
                pool,
                user,
                keyring,
            } => Self::Rbd {
                monitors,
                pool,
                user,
                keyring,
            },
        }
    }
}

impl From<api::BackendAddress> for BackendAddress {
    fn from(b: api::BackendAddress) -> Self {
        match b {
            api::BackendAddress::File { path } => Self::File { path },
            api::BackendAddress::Rbd {
                monitors,
                pool,
                user,
                keyring,
            } => Self::Rbd {
                monitors,
                pool,
                user,
                keyring,
            },
        }
    }
}

fn transport(t: Transport) -> api::Transport {
    match t {
        Transport::Tcp => api::Transport::Tcp,
        Transport::Rdma => api::Transport::Rdma,
    }
}

fn transport_back(t: api::Transport) -> Transport {
    match t {
        api::Transport::Tcp => Transport::Tcp,
        api::Transport::Rdma => Transport::Rdma,
    }
}

impl From<&ClusterConfig> for api::ClusterConfig {
    fn from(c: &ClusterConfig) -> Self {
        Self {
            backend: c.backend.as_ref().map(Into::into),
            data_transport: Some(transport(c.data_transport)),
            replica_transport: Some(transport(c.replica_transport)),
            node_groups: c
                .node_groups
                .iter()
                .map(|g| api::NodeGroup {
                    nodes: g.nodes.clone(),
                    subnet: g.subnet.clone(),
                    start: g.start.clone(),
                })
                .collect(),
            partitions_per_cache_device: Some(c.partitions_per_cache_device),
            dynamic_migration: Some(c.dynamic_migration),
            migration_delay_s: Some(c.migration_delay_s),
            destage_rate: c.destage_rate,
            multipath: Some(api::Multipath {
                iscsi: c.multipath.iscsi,
                nvme_tcp: c.multipath.nvme_tcp,
                nvme_rdma: c.multipath.nvme_rdma,
            }),
            heartbeat_interval_ms: Some(c.heartbeat_interval_ms),
            heartbeat_timeout_ms: Some(c.heartbeat_timeout_ms),
        }
    }
}

impl From<api::ClusterConfig> for ClusterConfig {
    /// A field the document leaves out takes its default.
    fn from(c: api::ClusterConfig) -> Self {
        let d = ClusterConfig::default();
        Self {
            backend: c.backend.map(Into::into),
            data_transport: c.data_transport.map_or(d.data_transport, transport_back),
            replica_transport: c
                .replica_transport
                .map_or(d.replica_transport, transport_back),
            node_groups: c
                .node_groups
                .into_iter()
                .map(|g| NodeGroup {
                    nodes: g.nodes,
                    subnet: g.subnet,
                    start: g.start,
                })
                .collect(),
            partitions_per_cache_device: c
                .partitions_per_cache_device
                .unwrap_or(d.partitions_per_cache_device),
            dynamic_migration: c.dynamic_migration.unwrap_or(d.dynamic_migration),
            migration_delay_s: c.migration_delay_s.unwrap_or(d.migration_delay_s),
            destage_rate: c.destage_rate,
            multipath: c.multipath.map_or(d.multipath, |m| Multipath {
                iscsi: m.iscsi,
                nvme_tcp: m.nvme_tcp,
                nvme_rdma: m.nvme_rdma,
            }),
            heartbeat_interval_ms: c.heartbeat_interval_ms.unwrap_or(d.heartbeat_interval_ms),
            heartbeat_timeout_ms: c.heartbeat_timeout_ms.unwrap_or(d.heartbeat_timeout_ms),
        }
    }
}
