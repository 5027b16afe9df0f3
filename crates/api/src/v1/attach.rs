//! How hosts reach volumes: a volume's connection info (every replica node's portals with
//! their asymmetric access state, for NVMe/TCP and iSCSI) and attachments, one per (volume,
//! host), which put the host on the volume's access list. Cinder's driver, the host agent and
//! the CSI driver build on these.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The asymmetric access state of a path (NVMe ANA, SCSI ALUA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathState {
    /// The primary's path: I/O is served there.
    Optimized,
    /// Another replica's path: I/O is forwarded to the primary.
    NonOptimized,
    /// The node cannot serve the volume now (its heartbeat is lost, or it is not in sync).
    Inaccessible,
}

/// One NVMe/TCP portal of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NvmePortal {
    /// The node serving it.
    pub node: String,
    /// Address hosts connect to (`traddr`).
    pub address: String,
    /// TCP port (`trsvcid`).
    pub port: u16,
    /// Transport: `tcp`.
    pub transport: String,
    /// The node's ANA group id.
    pub ana_group: Option<u32>,
    /// The path's ANA state now.
    pub state: PathState,
}

/// A volume over NVMe/TCP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NvmeConnection {
    /// The subsystem NQN, the same on every node.
    pub subsystem_nqn: String,
    /// The namespace id.
    pub namespace_id: u32,
    /// The namespace's NGUID (32 hex digits).
    pub nguid: String,
    /// The namespace's UUID (the volume id).
    pub uuid: String,
    /// Every replica node's portals, the primary's first.
    pub portals: Vec<NvmePortal>,
    /// Paths per host the cluster recommends (its multipath default for NVMe/TCP).
    pub multipath: u32,
}

/// One iSCSI portal of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IscsiPortal {
    /// The node serving it.
    pub node: String,
    /// Address hosts connect to.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// The target portal group tag (the node's).
    pub portal_group_tag: u16,
    /// The path's ALUA state now.
    pub state: PathState,
}

/// A volume over iSCSI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IscsiConnection {
    /// The target name, the same on every node.
    pub target_iqn: String,
    /// The LUN.
    pub lun: u32,
    /// Every replica node's portals, the primary's first.
    pub portals: Vec<IscsiPortal>,
    /// The CHAP user the host logs in with, when the host has one (the secret is never
    /// returned).
    pub chap_user: Option<String>,
    /// Paths per host the cluster recommends (its multipath default for iSCSI).
    pub multipath: u32,
}

/// Everything an initiator needs to reach a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionInfo {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its logical block size.
    pub block_size: u64,
    /// Over NVMe/TCP.
    pub nvme: NvmeConnection,
    /// Over iSCSI, when its nodes serve iSCSI.
    pub iscsi: Option<IscsiConnection>,
}

/// What attaching a host may tell about it: its initiator names, recorded on the host (a host
/// that does not exist yet is created with them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// The host's NVMe host NQN.
    #[serde(default)]
    pub nqn: Option<String>,
    /// The host's iSCSI initiator IQN.
    #[serde(default)]
    pub iqn: Option<String>,
    /// The host's NVMe Host Identifier (a UUID; Linux's `/etc/nvme/hostid`, os-brick's
    /// `nvme_hostid`): a force detach finds the host's NVMe reservations by it (and by the
    /// UUID of an `nqn.2014-08.org.nvmexpress:uuid:` host NQN).
    #[serde(default)]
    pub nvme_hostid: Option<String>,
}

/// A host's attachment to a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    /// The volume's id.
    pub volume: String,
    /// The volume's name.
    pub volume_name: String,
    /// The host's name.
    pub host: String,
    /// The host's NVMe host NQN, as its access list holds it.
    pub nqn: Option<String>,
    /// The host's iSCSI initiator IQN, as its access list holds it.
    pub iqn: Option<String>,
    /// How to reach the volume.
    pub connection: ConnectionInfo,
}

/// A volume a host is attached to, or a host attached to a volume (the lists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachmentRef {
    /// The volume's id.
    pub volume: String,
    /// The volume's name.
    pub volume_name: String,
    /// The host's name.
    pub host: String,
}

/// How a detach went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Detached {
    /// The volume's id.
    pub volume: String,
    /// The host's name.
    pub host: String,
    /// Whether the host was attached (detaching twice changes nothing).
    pub was_attached: bool,
    /// With `force`: whether the host's persistent reservations were removed (`done`), or the
    /// request waits for the volume's primary (`pending`: applied when a primary serves the
    /// volume). Absent without `force`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceState>,
}

/// Where a force detach's fencing stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FenceState {
    /// The volume's primary removed the host's registrations (saved in the store).
    Done,
    /// Not confirmed within the wait: the request stays in the store, and the volume's primary
    /// applies it before it serves again.
    Pending,
}
