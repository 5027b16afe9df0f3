//! Volumes, QoS policies and hosts in the metadata store.
//!
//! Keys: `volumes/<uuid>` (the [`Volume`]), `volume-names/<name>` (name -> uuid, so names are
//! unique: created in the same transaction as the volume, compared as missing), `qos/<name>`,
//! `hosts/<name>`, `reservations/<uuid>` (the volume's persistent reservations, written by its
//! primary: [`save_reservations`]), `deletions/<uuid>` (a [`Deletion`]: the explicit request
//! that alone makes nodes drop a volume's data), `failures/<uuid>/<node>` (a
//! [`ReplicaFailure`]: a node that fails to serve its replica, and why), `fences/<uuid>/<host>`
//! (a [`crate::attachments::Fence`]: remove a force-detached host's reservations). A volume's replicas are placed on distinct eligible nodes
//! ([`crate::placement`]) when it is created; the leader's reconcilers (next) make the nodes
//! export it.

use std::collections::BTreeMap;

use alcubierre_store::{put_if, Compare, Store, StoreError, Txn, TxnOp};
use alcubierre_types::{Epoch, NodeId, SeqNo};
use serde::{Deserialize, Serialize};

use crate::activation::Licence;
use crate::model::{Activation, CacheState, Service};
use crate::placement::{place, Candidate, PlacementError};
use crate::registry::{nodes, service_states, RegistryError};

/// The newest format version of the volume records this release reads. It writes each record
/// with the lowest version that holds it ([`Volume::stamp`]): 2 only for a `closed` volume,
/// which a release that reads only version 1 would open to any host, so that such a node
/// leaves the volume as it is instead.
pub const VOLUME_RECORD_VERSION: u32 = 2;

fn first_version() -> u32 {
    1
}

/// Fields of a record that this release does not know: a newer release's additions, kept so
/// that rewriting the record does not drop them.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// A volume.
///
/// Records are read tolerantly: a field this release does not know is kept in `extra` (and
/// written back), so a newer controller adding one during a rolling upgrade changes nothing
/// here. A record of a newer `version`, or one that does not parse, is [`Unreadable`]: nodes
/// leave the volume as it is, and report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The record's format version ([`VOLUME_RECORD_VERSION`] when this release wrote it;
    /// records from before versions are 1).
    #[serde(default = "first_version")]
    pub version: u32,
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// 512 or 4096.
    pub block_size: u64,
    /// Nodes holding its replicas (the replica set); the first is the preferred primary.
    pub replicas: Vec<NodeId>,
    /// The replica that serves I/O: the only node that exports the volume.
    pub primary: NodeId,
    /// Replicas known to hold every acknowledged write; the primary is always one.
    pub in_sync: Vec<NodeId>,
    /// QoS policy name.
    pub qos: Option<String>,
    /// Host names allowed to attach.
    pub hosts: Vec<String>,
    /// Only `hosts` reach the volume even when it names none: set by attaching or detaching a
    /// host, so that detaching the last one leaves nobody rather than everybody. Without it, a
    /// volume that names no hosts is open to any host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// Replica-set epoch (raised by every membership, in-sync or primary change).
    pub epoch: Epoch,
    /// The snapshot it was cloned from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
    /// Fields this release does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a cloned volume came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSource {
    /// The source volume (its name or id in a request; its id once created).
    pub volume: String,
    /// The snapshot's name.
    pub snapshot: String,
    /// Fields this release does not know (refused in a request).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A volume record that cannot be read here: the volume is left as it is (served as before,
/// never taken for deleted) and the record is reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The record's key.
    pub key: String,
    /// Why it cannot be read.
    pub reason: String,
}

impl Unreadable {
    /// The volume id the record's key names.
    pub fn id(&self) -> &str {
        self.key.strip_prefix("volumes/").unwrap_or(&self.key)
    }
}

/// Reads volume record `key`.
pub fn parse(key: &str, value: &[u8]) -> Result<Volume, Unreadable> {
    let unreadable = |reason: String| Unreadable {
        key: key.to_string(),
        reason,
    };
    let v: Volume =
        serde_json::from_slice(value).map_err(|e| unreadable(format!("does not parse: {e}")))?;
    if v.version > VOLUME_RECORD_VERSION {
        return Err(unreadable(format!(
            "written by a newer release (record version {}; this node reads up to {})",
            v.version, VOLUME_RECORD_VERSION
        )));
    }
    if key.strip_prefix("volumes/") != Some(v.id.as_str()) {
        return Err(unreadable(format!("holds volume id {:?}", v.id)));
    }
    Ok(v)
}

/// Every volume record: those that read, by id, and those that do not.
pub async fn scan(
    store: &dyn Store,
) -> Result<(BTreeMap<String, Volume>, Vec<Unreadable>), StoreError> {
    let mut read = BTreeMap::new();
    let mut unreadable = Vec::new();
    for kv in store.list("volumes/").await? {
        match parse(&kv.key, &kv.value) {
            Ok(v) => {
                read.insert(v.id.clone(), v);
            }
            Err(u) => unreadable.push(u),
        }
    }
    Ok((read, unreadable))
}

/// Where fence requests live: `fences/<volume id>/<host>` ([`crate::attachments::Fence`]).
pub const FENCES: &str = "fences/";

/// Where deletion requests live: `deletions/<uuid>`.
pub const DELETIONS: &str = "deletions/";

/// An explicit request to delete a volume, written with the removal of its record: the only
/// thing that makes a node drop a volume's cached data, and its primary delete the backend
/// image. A volume whose record is missing without one, or cannot be read, is left as it is.
/// Each node listed removes itself when it has done its part; the last removes the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// The volume's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Nodes still to drop their replica's data.
    pub nodes: Vec<NodeId>,
    /// The node that deletes the backend image: the volume's primary when it was deleted.
    pub primary: NodeId,
}

/// Every pending deletion request, by volume id (with its revision). A request that does not
/// parse is reported and not acted on.
pub async fn deletions(store: &dyn Store) -> Result<BTreeMap<String, (Deletion, i64)>, StoreError> {
    let mut out = BTreeMap::new();
    for kv in store.list(DELETIONS).await? {
        match serde_json::from_slice::<Deletion>(&kv.value) {
            Ok(d) if kv.key.strip_prefix(DELETIONS) == Some(d.id.as_str()) => {
                out.insert(d.id.clone(), (d, kv.mod_revision));
            }
            Ok(_) => {
                tracing::error!(key = %kv.key, "deletion request names another volume: not acted on")
            }
            Err(e) => {
                tracing::error!(key = %kv.key, "deletion request does not parse: {e}; not acted on")
            }
        }
    }
    Ok(out)
}

/// Node `node` has dropped its part of deleted volume `id`: it leaves the request, and the
/// request goes when no node is left.
pub async fn deletion_done(store: &dyn Store, id: &str, node: &str) -> Result<(), StoreError> {
    let key = format!("{DELETIONS}{id}");
    loop {
        let Some(kv) = store.get(&key).await? else {
            return Ok(());
        };
        let Ok(mut d) = serde_json::from_slice::<Deletion>(&kv.value) else {
            return Ok(());
        };
        d.nodes.retain(|n| n != node);
        let op = if d.nodes.is_empty() {
            TxnOp::Delete { key: key.clone() }
        } else {
            TxnOp::Put {
                key: key.clone(),
                value: serde_json::to_vec(&d).expect("serialises"),
                lease: None,
            }
        };
        let r = store
            .txn(Txn {
                when: vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                then: vec![op],
                otherwise: vec![],
            })
            .await?;
        if r.succeeded {
            return Ok(());
        }
    }
}

/// Where snapshot records are kept: `snapshots/<volume id>/<name>` (a volume's deletion
/// removes its snapshots' records with it).
pub const SNAPSHOTS: &str = "snapshots/";

/// Where nodes report replicas they fail to serve: `failures/<uuid>/<node>`.
pub const FAILURES: &str = "failures/";

/// A replica a node fails to serve (attach, export, follow), and why. The failure stays with
/// that volume on that node: the node serves its other volumes, retries this one with backoff,
/// and removes the record once it succeeds (or the volume leaves it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Every reported replica failure.
pub async fn failures(store: &dyn Store) -> Result<Vec<ReplicaFailure>, StoreError> {
    Ok(store
        .list(FAILURES)
        .await?
        .into_iter()
        .filter_map(|kv| match serde_json::from_slice(&kv.value) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(key = %kv.key, "failure record does not parse: {e}");
                None
            }
        })
        .collect())
}

/// Refuses a request whose object has fields this release does not know, naming the first.
pub fn no_unknown_fields(extra: &Extra, within: &str) -> Result<(), VolumeError> {
    match extra.keys().next() {
        None => Ok(()),
        Some(k) => Err(VolumeError::Unknown(format!("{within}{k}"))),
    }
}

impl Volume {
    /// Sets the record's version to the lowest that holds it (see [`VOLUME_RECORD_VERSION`]).
    pub fn stamp(&mut self) {
        self.version = if self.closed { 2 } else { 1 };
    }

    /// Whether any host may connect: the volume names no hosts and was never attached.
    pub fn any_host(&self) -> bool {
        self.hosts.is_empty() && !self.closed
    }

    /// Whether the volume has a replica on `node`.
    pub fn has_replica(&self, node: &str) -> bool {
        self.replicas.iter().any(|r| r == node)
    }
}

/// A QoS policy (the seed's example: `write_iops_sec = 5000`, `write_MiB_sec = 100`).
///
/// A stored policy tolerates fields this release does not know; the API refuses them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosPolicy {
    /// Read operations per second.
    pub read_iops: Option<u64>,
    /// Write operations per second (write zeroes and unmaps count as writes).
    pub write_iops: Option<u64>,
    /// Operations per second, reads and writes together.
    pub total_iops: Option<u64>,
    /// Bytes read per second.
    pub read_bps: Option<u64>,
    /// Bytes written per second.
    pub write_bps: Option<u64>,
    /// Bytes per second, read and written together.
    pub total_bps: Option<u64>,
    /// Burst rate of `read_iops`.
    pub read_iops_max: Option<u64>,
    /// Burst rate of `write_iops`.
    pub write_iops_max: Option<u64>,
    /// Burst rate of `total_iops`.
    pub total_iops_max: Option<u64>,
    /// Burst rate of `read_bps`.
    pub read_bps_max: Option<u64>,
    /// Burst rate of `write_bps`.
    pub write_bps_max: Option<u64>,
    /// Burst rate of `total_bps`.
    pub total_bps_max: Option<u64>,
    /// How long a burst lasts, seconds.
    pub burst_seconds: Option<u64>,
}

/// A host (initiator) and its credentials.
///
/// A stored host tolerates fields this release does not know; the API refuses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Name (the API takes it from the path; a body may omit it).
    #[serde(default)]
    pub name: String,
    /// NVMe host NQN.
    pub nqn: Option<String>,
    /// iSCSI initiator IQN.
    pub iqn: Option<String>,
    /// NVMe Host Identifier (a UUID, lowercase): a force detach finds the host's NVMe
    /// reservations by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_hostid: Option<String>,
    /// CHAP user and secret (iSCSI).
    pub chap: Option<(String, String)>,
    /// Mutual CHAP (iSCSI): the user and secret the target proves to this host when the host
    /// asks (with `chap`).
    #[serde(default)]
    pub target_chap: Option<(String, String)>,
}

pub use alcubierre_api::v1::{CreateVolume, DEFAULT_BLOCK_SIZE};

/// Why a volume operation failed; each names the field or object.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading nodes failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The name is taken.
    #[error("name: a volume named {0:?} exists")]
    NameTaken(String),
    /// No such volume.
    #[error("volume {0} not found")]
    NotFound(String),
    /// Not enough eligible nodes.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The licence's capacity would be exceeded.
    #[error("size: the licence allows {max} bytes of volumes; this would make {would}")]
    LicenceCapacity {
        /// The limit.
        max: u64,
        /// The total after the operation.
        would: u64,
    },
    /// A stored record cannot be read: its key and why.
    #[error("record {0}")]
    Corrupt(String),
    /// A request has a field this release does not know.
    #[error("{0}: unknown field")]
    Unknown(String),
    /// An object of that name exists, or the object is in use.
    #[error("{field}: {reason}")]
    Taken {
        /// The field.
        field: &'static str,
        /// What holds it.
        reason: String,
    },
    /// Records changed concurrently; retry.
    #[error("volumes changed concurrently; retry")]
    Conflict,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> VolumeError {
    VolumeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Replicas per volume.
pub const REPLICAS: usize = 3;

/// Where primaries publish replication progress while a replica catches up (one key per
/// volume, removed once every replica is in sync).
pub const PROGRESS: &str = "progress/";

/// A volume's replication progress, as its primary publishes it while a replica catches up
/// (a resync after a short absence, or a rebuild of a new or diverged replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// The primary publishing it.
    pub primary: NodeId,
    /// The replica set's epoch.
    pub epoch: Epoch,
    /// The primary's newest write (sequence number).
    pub head: SeqNo,
    /// Every follower.
    pub followers: Vec<FollowerProgress>,
}

/// One follower in a [`Progress`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerProgress {
    /// Its node.
    pub node: NodeId,
    /// In the in-sync set.
    pub in_sync: bool,
    /// Connected and receiving writes.
    pub connected: bool,
    /// Writes it has yet to make durable.
    pub behind_writes: u64,
}

/// Where a volume's persistent reservations are kept (one key per volume, an opaque encoding
/// of the replica crate's state), so that they survive a failover.
pub const RESERVATIONS: &str = "reservations/";

/// A volume's reservation record and the revision it was last written at (`None`, `None`:
/// there is none).
pub async fn reservations(
    store: &dyn Store,
    id: &str,
) -> Result<(Option<Vec<u8>>, Option<i64>), StoreError> {
    Ok(match store.get(&format!("{RESERVATIONS}{id}")).await? {
        Some(kv) => (Some(kv.value), Some(kv.mod_revision)),
        None => (None, None),
    })
}

/// Why [`save_reservations`] did not save.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record is not this node's to write any more.
    #[error("{0}")]
    Fenced(&'static str),
}

/// Writes volume `id`'s reservation record as its primary `me`, if `me` is still the
/// primary and the record is still at `rev` (what `me` last read or wrote; `None`: there was
/// none): an isolated old primary, or one whose view is out of date, cannot overwrite what
/// another wrote. The record's new revision.
pub async fn save_reservations(
    store: &dyn Store,
    id: &str,
    me: &str,
    rev: Option<i64>,
    value: Vec<u8>,
) -> Result<i64, SaveError> {
    let (vkey, rkey) = (format!("volumes/{id}"), format!("{RESERVATIONS}{id}"));
    // The volume record changes for other reasons too (an epoch raised by a membership
    // change); a few retries ride those out.
    for _ in 0..5 {
        let Some(kv) = store.get(&vkey).await? else {
            return Err(SaveError::Fenced("the volume was deleted"));
        };
        let v: Volume = serde_json::from_slice(&kv.value)
            .map_err(|_| SaveError::Fenced("the volume record is unreadable"))?;
        if v.primary != me {
            return Err(SaveError::Fenced(
                "this node is no longer the volume's primary",
            ));
        }
        let record = match rev {
            Some(r) => Compare::ModRevision(rkey.clone(), r),
            None => Compare::Missing(rkey.clone()),
        };
        let r = store
            .txn(Txn {
                when: vec![Compare::ModRevision(vkey.clone(), kv.mod_revision), record],
                then: vec![TxnOp::Put {
                    key: rkey.clone(),
                    value: value.clone(),
                    lease: None,
                }],
                otherwise: vec![],
            })
            .await?;
        if r.succeeded {
            return Ok(r.revision);
        }
        if reservations(store, id).await?.1 != rev {
            return Err(SaveError::Fenced(
                "the reservations were changed by another node",
            ));
        }
    }
    Err(SaveError::Fenced("the volume record kept changing"))
}

/// Every published progress record.
pub async fn progress(store: &dyn Store) -> Result<Vec<Progress>, StoreError> {
    Ok(store
        .list(PROGRESS)
        .await?
        .into_iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// Every volume whose record reads, by id (the others: [`scan`]).
pub async fn list(store: &dyn Store) -> Result<BTreeMap<String, Volume>, VolumeError> {
    Ok(scan(store).await?.0)
}

/// A volume by id or name.
pub async fn find(store: &dyn Store, id_or_name: &str) -> Result<(Volume, i64), VolumeError> {
    let id = match store.get(&format!("volume-names/{id_or_name}")).await? {
        Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
        None => id_or_name.to_string(),
    };
    let kv = store
        .get(&format!("volumes/{id}"))
        .await?
        .ok_or_else(|| VolumeError::NotFound(id_or_name.to_string()))?;
    let v = parse(&kv.key, &kv.value)
        .map_err(|u| VolumeError::Corrupt(format!("{} {}", u.key, u.reason)))?;
    Ok((v, kv.mod_revision))
}

fn valid_name(n: &str) -> bool {
    // `.` and `..` would read as path steps in the API's URLs.
    !n.is_empty()
        && n != "."
        && n != ".."
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The checks of a create request that need no placement: name, fields, block size, size,
/// QoS policy, hosts, the licence's capacity.
pub async fn check(
    store: &dyn Store,
    req: &CreateVolume,
    licence: &Licence,
) -> Result<(), VolumeError> {
    if !valid_name(&req.name) {
        return Err(invalid("name", "1-64 characters from A-Z a-z 0-9 - _ ."));
    }
    let block_size = req.block_size();
    if block_size != 512 && block_size != 4096 {
        return Err(invalid(
            "block_size",
            format!("{block_size} is not 512 or 4096"),
        ));
    }
    if req.size == 0 || !req.size.is_multiple_of(block_size) {
        return Err(invalid(
            "size",
            format!("{} is not a positive multiple of the block size", req.size),
        ));
    }
    if let Some(q) = &req.qos {
        if store.get(&format!("qos/{q}")).await?.is_none() {
            return Err(invalid("qos", format!("no QoS policy named {q:?}")));
        }
    }
    for h in &req.hosts {
        if store.get(&format!("hosts/{h}")).await?.is_none() {
            return Err(invalid("hosts", format!("no host named {h:?}")));
        }
    }
    if let Some(max) = licence.max_capacity {
        let existing = list(store).await?;
        let would = existing.values().map(|v| v.size).sum::<u64>() + req.size;
        if would > max {
            return Err(VolumeError::LicenceCapacity { max, would });
        }
    }
    Ok(())
}

/// Creates a volume: validates the request, places 3 replicas, writes it with a unique name.
pub async fn create(
    store: &dyn Store,
    req: &CreateVolume,
    id: String,
    licence: &Licence,
) -> Result<Volume, VolumeError> {
    check(store, req, licence).await?;
    place_and_write(store, req, id).await
}

/// [`create`] after [`check`] passed: places 3 replicas and writes the volume with a unique
/// name (for callers that do more between the two, such as making the backend image).
pub async fn place_and_write(
    store: &dyn Store,
    req: &CreateVolume,
    id: String,
) -> Result<Volume, VolumeError> {
    let existing = list(store).await?;
    let all = nodes(store).await?;
    let services = service_states(store).await?;
    let mut load: BTreeMap<&str, u32> = BTreeMap::new();
    let mut primaries: BTreeMap<&str, u32> = BTreeMap::new();
    for v in existing.values() {
        for r in &v.replicas {
            *load.entry(r.as_str()).or_default() += 1;
        }
        *primaries.entry(v.primary.as_str()).or_default() += 1;
    }
    let candidates: Vec<Candidate> = all
        .values()
        .map(|(n, _)| Candidate {
            name: n.name.clone(),
            eligible: n.activation == Activation::Active
                && services.get(&n.name) == Some(&Service::Available)
                && n.cache.iter().all(|c| c.state == CacheState::Healthy),
            free_cache: n.cache_bytes(),
            replicas: load.get(n.name.as_str()).copied().unwrap_or(0),
            primaries: primaries.get(n.name.as_str()).copied().unwrap_or(0),
        })
        .collect();
    let replicas = place(&candidates, REPLICAS, &[])?;
    let v = Volume {
        version: 1,
        id: id.clone(),
        name: req.name.clone(),
        size: req.size,
        block_size: req.block_size(),
        primary: NodeId::from(&replicas[0]),
        // A new volume holds no write yet: every replica has all of them.
        in_sync: replicas.iter().map(NodeId::from).collect(),
        replicas: replicas.iter().map(NodeId::from).collect(),
        qos: req.qos.clone(),
        hosts: req.hosts.clone(),
        closed: false,
        epoch: Epoch(1),
        source: req.source.as_ref().map(|s| VolumeSource {
            volume: s.volume.clone(),
            snapshot: s.snapshot.clone(),
            extra: Default::default(),
        }),
        extra: Extra::new(),
    };
    let name_key = format!("volume-names/{}", req.name);
    let r = store
        .txn(Txn {
            when: vec![
                Compare::Missing(name_key.clone()),
                Compare::Missing(format!("volumes/{id}")),
            ],
            then: vec![
                TxnOp::Put {
                    key: name_key,
                    value: id.clone().into_bytes(),
                    lease: None,
                },
                TxnOp::Put {
                    key: format!("volumes/{id}"),
                    value: serde_json::to_vec(&v).expect("serialises"),
                    lease: None,
                },
            ],
            otherwise: vec![],
        })
        .await?;
    if !r.succeeded {
        return Err(VolumeError::NameTaken(req.name.clone()));
    }
    Ok(v)
}

/// Applies `f` to a volume and writes it if it was not changed meanwhile.
async fn update(
    store: &dyn Store,
    id_or_name: &str,
    f: impl FnOnce(&mut Volume) -> Result<(), VolumeError>,
) -> Result<Volume, VolumeError> {
    let (mut v, rev) = find(store, id_or_name).await?;
    f(&mut v)?;
    v.stamp();
    let key = format!("volumes/{}", v.id);
    let cmp = vec![Compare::ModRevision(key.clone(), rev)];
    if !put_if(
        store,
        cmp,
        &key,
        serde_json::to_vec(&v).expect("serialises"),
    )
    .await?
    {
        return Err(VolumeError::Conflict);
    }
    Ok(v)
}

/// Grows a volume (online: nodes apply the new size and tell hosts).
pub async fn resize(
    store: &dyn Store,
    id_or_name: &str,
    size: u64,
    licence: &Licence,
) -> Result<Volume, VolumeError> {
    let total: u64 = list(store).await?.values().map(|x| x.size).sum();
    update(store, id_or_name, |v| {
        if size < v.size {
            return Err(invalid(
                "size",
                format!("{size} is smaller than {}; volumes only grow", v.size),
            ));
        }
        if !size.is_multiple_of(v.block_size) {
            return Err(invalid(
                "size",
                format!(
                    "{size} is not a multiple of the block size {}",
                    v.block_size
                ),
            ));
        }
        if let Some(max) = licence.max_capacity {
            let would = total - v.size + size;
            if would > max {
                return Err(VolumeError::LicenceCapacity { max, would });
            }
        }
        v.size = size;
        Ok(())
    })
    .await
}

/// Sets (or clears) a volume's QoS policy; exporting nodes apply it at once.
pub async fn set_qos(
    store: &dyn Store,
    id_or_name: &str,
    qos: Option<&str>,
) -> Result<Volume, VolumeError> {
    if let Some(q) = qos {
        if store.get(&format!("qos/{q}")).await?.is_none() {
            return Err(invalid("qos", format!("no QoS policy named {q:?}")));
        }
    }
    update(store, id_or_name, |v| {
        v.qos = qos.map(str::to_string);
        Ok(())
    })
    .await
}

/// Sets the hosts allowed to attach a volume (an empty list lets any host in); exporting
/// nodes apply it to live subsystems.
pub async fn set_hosts(
    store: &dyn Store,
    id_or_name: &str,
    hosts: &[String],
) -> Result<Volume, VolumeError> {
    for h in hosts {
        if store.get(&format!("hosts/{h}")).await?.is_none() {
            return Err(invalid("hosts", format!("no host named {h:?}")));
        }
    }
    let mut hosts = hosts.to_vec();
    hosts.sort();
    hosts.dedup();
    update(store, id_or_name, |v| {
        // An explicit list: empty opens the volume to any host, as at creation.
        v.closed = false;
        v.hosts = hosts;
        Ok(())
    })
    .await
}

/// A host record, if there is one.
pub async fn host(store: &dyn Store, name: &str) -> Result<Option<Host>, VolumeError> {
    match store.get(&format!("hosts/{name}")).await? {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| VolumeError::Corrupt(format!("host record {name}: {e}"))),
    }
}

/// Deletes a volume, its name and its snapshots' records (its primary deletes the backend
/// image with its snapshots).
pub async fn delete(store: &dyn Store, id_or_name: &str) -> Result<Volume, VolumeError> {
    let (v, rev) = find(store, id_or_name).await?;
    let key = format!("volumes/{}", v.id);
    let deletion = Deletion {
        id: v.id.clone(),
        name: v.name.clone(),
        nodes: v.replicas.clone(),
        primary: v.primary.clone(),
    };
    let mut then = vec![
        TxnOp::Delete { key: key.clone() },
        TxnOp::Put {
            key: format!("{DELETIONS}{}", v.id),
            value: serde_json::to_vec(&deletion).expect("serialises"),
            lease: None,
        },
        TxnOp::Delete {
            key: format!("volume-names/{}", v.name),
        },
        TxnOp::Delete {
            key: format!("{RESERVATIONS}{}", v.id),
        },
    ];
    // A snapshot requested between this listing and the transaction stays behind as a record
    // that no call shows (its volume is gone) and no node acts on.
    for kv in store.list(&format!("{}{}/", SNAPSHOTS, v.id)).await? {
        then.push(TxnOp::Delete { key: kv.key });
    }
    // Its reservations are gone, so are requests to fence hosts off them.
    for kv in store.list(&format!("{FENCES}{}/", v.id)).await? {
        then.push(TxnOp::Delete { key: kv.key });
    }
    let r = store
        .txn(Txn {
            when: vec![Compare::ModRevision(key, rev)],
            then,
            otherwise: vec![],
        })
        .await?;
    if !r.succeeded {
        return Err(VolumeError::Conflict);
    }
    Ok(v)
}

/// A QoS limit's fields: its name, its burst's name, its rate and its burst rate.
pub type QosLimitFields = (&'static str, &'static str, Option<u64>, Option<u64>);

impl QosPolicy {
    /// Each limit: its name, its burst's name, the rate and the burst rate.
    pub fn limits(&self) -> [QosLimitFields; 6] {
        [
            (
                "read_iops",
                "read_iops_max",
                self.read_iops,
                self.read_iops_max,
            ),
            (
                "write_iops",
                "write_iops_max",
                self.write_iops,
                self.write_iops_max,
            ),
            (
                "total_iops",
                "total_iops_max",
                self.total_iops,
                self.total_iops_max,
            ),
            ("read_bps", "read_bps_max", self.read_bps, self.read_bps_max),
            (
                "write_bps",
                "write_bps_max",
                self.write_bps,
                self.write_bps_max,
            ),
            (
                "total_bps",
                "total_bps_max",
                self.total_bps,
                self.total_bps_max,
            ),
        ]
    }

    /// Refuses limits that would stop I/O or bursts that cannot apply, naming the field.
    pub fn check(&self) -> Result<(), VolumeError> {
        for (name, max_name, rate, max) in self.limits() {
            if rate == Some(0) {
                return Err(invalid(
                    name,
                    "a limit of 0 would stop I/O; omit it for no limit",
                ));
            }
            match (rate, max) {
                (None, Some(_)) => {
                    return Err(invalid(
                        max_name,
                        format!("a burst rate needs the sustained limit {name}"),
                    ))
                }
                (Some(r), Some(m)) if m < r => {
                    return Err(invalid(
                        max_name,
                        format!("a burst rate must be at least {name} ({r})"),
                    ))
                }
                _ => {}
            }
        }
        if let Some(b) = self.burst_seconds {
            if !(1..=3600).contains(&b) {
                return Err(invalid("burst_seconds", "from 1 to 3600"));
            }
        }
        Ok(())
    }
}

/// Creates or replaces a QoS policy.
pub async fn put_qos(store: &dyn Store, name: &str, q: &QosPolicy) -> Result<(), VolumeError> {
    if !valid_name(name) {
        return Err(invalid("name", "1-64 characters from A-Z a-z 0-9 - _ ."));
    }
    q.check()?;
    store
        .put(
            &format!("qos/{name}"),
            serde_json::to_vec(q).expect("serialises"),
            None,
        )
        .await?;
    Ok(())
}

/// Deletes QoS policy `name`, unless a volume uses it; whether it existed.
pub async fn delete_qos(store: &dyn Store, name: &str) -> Result<bool, VolumeError> {
    in_use(store, "qos", |v| v.qos.as_deref() == Some(name)).await?;
    Ok(store.delete(&format!("qos/{name}")).await?)
}

/// Deletes host `name`, unless a volume's access list names it; whether it existed.
pub async fn delete_host(store: &dyn Store, name: &str) -> Result<bool, VolumeError> {
    in_use(store, "hosts", |v| v.hosts.iter().any(|h| h == name)).await?;
    Ok(store.delete(&format!("hosts/{name}")).await?)
}

/// Refuses (409 naming `field`) when a volume matches `uses`.
async fn in_use(
    store: &dyn Store,
    field: &'static str,
    uses: impl Fn(&Volume) -> bool,
) -> Result<(), VolumeError> {
    let users: Vec<String> = list(store)
        .await?
        .values()
        .filter(|v| uses(v))
        .map(|v| v.name.clone())
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(VolumeError::Taken {
        field,
        reason: format!("in use by volume(s) {}", users.join(", ")),
    })
}

/// `s` as a UUID in its lowercase hyphenated form, if it is one.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hyphens = [8, 13, 18, 23];
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if hyphens.contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    ok.then(|| s.to_ascii_lowercase())
}

/// Creates or replaces a host.
pub async fn put_host(store: &dyn Store, h: &Host) -> Result<(), VolumeError> {
    if !valid_name(&h.name) {
        return Err(invalid("name", "1-64 characters from A-Z a-z 0-9 - _ ."));
    }
    if h.nqn.is_none() && h.iqn.is_none() {
        return Err(invalid("nqn", "a host needs an NVMe NQN or an iSCSI IQN"));
    }
    if let Some(n) = &h.nqn {
        if !n.starts_with("nqn.") || n.len() > 223 {
            return Err(invalid(
                "nqn",
                format!("{n:?} is not an NQN (nqn.yyyy-mm.domain:...)"),
            ));
        }
    }
    if let Some(id) = &h.nvme_hostid {
        if canonical_uuid(id).as_deref() != Some(id.as_str()) {
            return Err(invalid(
                "nvme_hostid",
                format!("{id:?} is not a UUID in lowercase (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
            ));
        }
    }
    if let Some(i) = &h.iqn {
        if !(i.starts_with("iqn.") || i.starts_with("eui.")) || i.len() > 223 {
            return Err(invalid(
                "iqn",
                format!("{i:?} is not an iSCSI name (iqn. or eui.)"),
            ));
        }
    }
    for (field, c) in [("chap", &h.chap), ("target_chap", &h.target_chap)] {
        if let Some((user, secret)) = c {
            // RFC 7143 section 12.1.3: CHAP secrets of at least 12 bytes.
            if secret.len() < 12 || secret.len() > 16 {
                return Err(invalid(
                    field,
                    "the CHAP secret must be 12 to 16 characters",
                ));
            }
            if user.is_empty() || user.len() > 255 {
                return Err(invalid(field, "the CHAP user must be 1 to 255 characters"));
            }
        }
    }
    match (&h.chap, &h.target_chap) {
        (None, Some(_)) => {
            return Err(invalid(
                "target_chap",
                "mutual CHAP needs the host's own CHAP credentials (chap) too",
            ))
        }
        // RFC 7143 section 12.1.3: the two directions use different secrets.
        (Some((_, a)), Some((_, b))) if a == b => {
            return Err(invalid(
                "target_chap",
                "the target's CHAP secret must differ from the host's",
            ))
        }
        _ => {}
    }
    store
        .put(
            &format!("hosts/{}", h.name),
            serde_json::to_vec(h).expect("serialises"),
            None,
        )
        .await?;
    Ok(())
}
