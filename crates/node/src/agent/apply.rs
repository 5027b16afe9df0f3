//! The agent's state for the volumes it holds, and the effects of its actions
//! ([`super::plan::Action`]): exports, roles, failures, deletions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::BackendError;
use alcubierre_block::{BlockDevice, Keeper, Limited, Reserved};
use alcubierre_control::attachments::{fence_done, fences, PendingFence};
use alcubierre_control::leader;
use alcubierre_control::model::Node;
use alcubierre_control::reconcile::ReplicaRequest;
use alcubierre_control::registry;
use alcubierre_control::volumes::{self, Deletion, Host, QosPolicy, Volume};
use alcubierre_iscsi::driver::initiator_key;
use alcubierre_nvmf::{volume_nqn, SubsystemEvent};
use alcubierre_replica::node::FollowerVolume;
use alcubierre_replica::primary::Config as ReplicaConfig;
use alcubierre_replica::volume::{Control, PrimaryVolume};
use alcubierre_replica::Membership;
use alcubierre_store::Store;
use alcubierre_types::{ByteSize, Epoch, NodeId, VolumeId};
use tracing::Instrument;

use super::plan::{self, Action, Desired, Have, Held as HeldRole, Retirement};
use crate::parts::{geometry, NodeParts};
use crate::paths::Path;
use crate::replication::{load_reservations, AgentControl, ProgressRecord};

/// The longest wait between attempts at a volume that fails here.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A volume this node fails to serve: its record in the store, and when to try again.
struct Failing {
    record: volumes::ReplicaFailure,
    next: std::time::Instant,
}

/// A volume this node is primary of.
struct Exported {
    name: String,
    primary: Arc<PrimaryVolume>,
    /// Its persistent reservations.
    reservations: Arc<Keeper>,
    epoch: Epoch,
    /// Its progress record in the store.
    progress: ProgressRecord,
}

/// A volume this node follows.
struct Following {
    follower: Arc<FollowerVolume>,
    epoch: Epoch,
}

/// A volume held here: its exports (every volume whose replica set names this node is
/// exported here) and its role.
struct Held {
    path: Path,
    role: Role,
}

/// A volume's role on this node, with what it takes.
enum Role {
    /// Exported, not serving: starting, waiting for a new epoch, or failed.
    Idle,
    /// Served as its primary.
    Primary(Exported),
    /// Followed.
    Follower(Following),
}

impl Held {
    /// What the decisions see of it.
    fn view(&self) -> Have {
        Have {
            size: self.path.size,
            acl: self.path.acl.clone(),
            iscsi_hosts: self.path.iscsi_hosts.clone(),
            limits: self.path.policy,
            role: match &self.role {
                Role::Idle => HeldRole::Idle,
                Role::Primary(e) => HeldRole::Primary {
                    epoch: e.epoch,
                    fenced: e.primary.fenced(),
                },
                Role::Follower(f) => HeldRole::Follower { epoch: f.epoch },
            },
        }
    }
}

/// The agent's state for volumes.
#[derive(Default)]
pub(super) struct Local {
    /// The volumes held here, by id.
    volumes: BTreeMap<String, Held>,
    /// Volumes this node was primary of when it started, or was fenced off: it serves them
    /// again only in a newer epoch (so no `(epoch, seq)` is assigned twice).
    floors: BTreeMap<String, Epoch>,
    /// The store revision when the agent started: volumes created later have no floor.
    start_rev: i64,
    /// Volumes held here whose record is missing without a deletion request, or cannot be
    /// read, with why: left as they are, reported once per change.
    left_alone: BTreeMap<String, String>,
    /// Volumes this node fails to serve, retried with backoff.
    failing: BTreeMap<String, Failing>,
}

impl Local {
    /// No volumes yet; the store's revision is `start_rev`.
    pub(super) fn new(start_rev: i64) -> Self {
        Self {
            start_rev,
            ..Self::default()
        }
    }

    /// Volume `v` failed here, `why`: reported in the store (the API shows it), the log and a
    /// metric; tried again after a backoff that doubles up to a minute.
    async fn failed(&mut self, store: &Arc<dyn Store>, p: &NodeParts, v: &Volume, why: String) {
        let now = alcubierre_control::unix_now();
        let f = self.failing.entry(v.id.clone()).or_insert_with(|| Failing {
            record: volumes::ReplicaFailure {
                volume: v.id.clone(),
                name: v.name.clone(),
                node: p.name.clone(),
                reason: String::new(),
                since: now,
                retries: 0,
            },
            next: std::time::Instant::now(),
        });
        f.record.reason = why;
        f.record.retries += 1;
        let wait = Duration::from_secs(1 << f.record.retries.min(6)).min(MAX_BACKOFF);
        f.next = std::time::Instant::now() + wait;
        tracing::error!(node = %p.name, volume = %v.name, retries = f.record.retries,
            "cannot serve the volume here: {}; retrying in {wait:?}", f.record.reason);
        p.health
            .failing
            .write()
            .insert(v.id.clone(), v.name.clone());
        let key = format!("{}{}/{}", volumes::FAILURES, v.id, p.name);
        let value = serde_json::to_vec(&f.record).expect("serialises");
        if let Err(e) = store.put(&key, value, None).await {
            tracing::warn!(node = %p.name, volume = %v.name, "cannot report the failure: {e}");
        }
    }

    /// Volume `id` is served here again (or left this node): its failure record goes.
    async fn recovered(&mut self, store: &Arc<dyn Store>, p: &NodeParts, id: &str) {
        let Some(f) = self.failing.remove(id) else {
            return;
        };
        p.health.failing.write().remove(id);
        tracing::info!(node = %p.name, volume = %f.record.name, retries = f.record.retries,
            "serving the volume again after failures");
        let key = format!("{}{}/{}", volumes::FAILURES, id, p.name);
        if let Err(e) = store.delete(&key).await {
            tracing::warn!(node = %p.name, volume = %f.record.name, "cannot clear the failure: {e}");
        }
    }

    /// Which of the volumes held here are left as they are (their record is missing without a
    /// deletion request, or cannot be read); logs each change and sets the metric.
    fn report_left_alone(
        &mut self,
        p: &NodeParts,
        all: &BTreeMap<String, Volume>,
        unreadable: &BTreeMap<String, String>,
        deletions: &BTreeMap<String, Deletion>,
    ) {
        let mut held = BTreeMap::new();
        for id in self.volumes.keys() {
            if all.contains_key(id) || held.contains_key(id) {
                continue;
            }
            let why = match unreadable.get(id) {
                Some(reason) => format!("its record cannot be read ({reason})"),
                None if deletions.contains_key(id) => continue,
                None => "its record is missing and no deletion was requested".to_string(),
            };
            held.insert(id.clone(), why);
        }
        for (id, why) in &held {
            if self.left_alone.get(id) != Some(why) {
                tracing::error!(node = %p.name, volume = %id,
                    "volume left as it is (served as before, nothing dropped): {why}");
            }
        }
        for id in self.left_alone.keys() {
            if !held.contains_key(id) {
                tracing::info!(node = %p.name, volume = %id, "volume record readable again");
            }
        }
        p.health.held.store(held.len() as u64, Ordering::Relaxed);
        self.left_alone = held;
    }
}

fn membership(v: &Volume) -> Membership {
    Membership {
        epoch: v.epoch,
        primary: v.primary.clone(),
        replicas: v.replicas.clone(),
        in_sync: v.in_sync.clone(),
    }
}

/// Makes sure the backend image exists at the volume's size and the cache has it attached.
fn attach(p: &NodeParts, v: &Volume) -> anyhow::Result<VolumeId> {
    let id = VolumeId(v.id.parse()?);
    let backend = p.engine.backend();
    match backend.size(id) {
        Err(BackendError::NotFound { .. }) => match backend.create(id, ByteSize(v.size)) {
            Ok(()) | Err(BackendError::Exists { .. }) => {}
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
        Ok(s) if s.0 < v.size => backend.resize(id, ByteSize(v.size))?,
        Ok(_) => {}
    }
    match p.engine.attach(id, geometry(v)?) {
        Ok(()) | Err(alcubierre_cache::CacheError::AlreadyAttached(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(id)
}

/// The replica addresses of `v`'s members, from their node records.
fn peers(v: &Volume, nodes: &BTreeMap<String, Node>) -> HashMap<NodeId, SocketAddr> {
    v.replicas
        .iter()
        .filter_map(|r| {
            let a = nodes.get(r.as_str())?.replica.parse().ok()?;
            Some((r.clone(), a))
        })
        .collect()
}

/// Starts serving `v` as its primary on `path`; forwarded I/O from the other paths is served
/// on the same device (behind the same QoS limits).
fn export(
    p: &NodeParts,
    v: &Volume,
    path: &Path,
    nodes: &BTreeMap<String, Node>,
    control: Arc<dyn Control>,
    reservations: Arc<Keeper>,
) -> anyhow::Result<Arc<PrimaryVolume>> {
    let id = path.id;
    let primary = PrimaryVolume::start(
        p.engine.clone(),
        p.volumes.volume(id)?,
        &NodeId::from(&p.name),
        membership(v),
        peers(v, nodes),
        control,
        p.lease.clone(),
        ReplicaConfig::default(),
    )?;
    let limited = Limited::new(primary.clone(), path.qos.clone());
    let dev: Arc<dyn BlockDevice> = Arc::new(Reserved::new(limited, reservations));
    if let Some(server) = &p.replica {
        server.serve_forwarded(id, dev.clone());
    }
    path.serve(dev);
    Ok(primary)
}

/// Grows `v` in the cache (and, on the primary, its backend image); hosts get an event.
fn grow(p: &NodeParts, v: &Volume, resize_backend: bool) -> anyhow::Result<()> {
    let id = VolumeId(v.id.parse()?);
    if resize_backend {
        p.engine.backend().resize(id, ByteSize(v.size))?;
    }
    p.engine.resize(id, geometry(v)?)?;
    if let Some(s) = p.target.subsystem(&volume_nqn(id)) {
        s.notify(SubsystemEvent::NamespaceChanged);
    }
    if let Some(e) = p
        .iscsi
        .as_ref()
        .and_then(|t| t.get(&alcubierre_iscsi::volume_iqn(id)))
    {
        e.lun.capacity_changed();
    }
    Ok(())
}

/// Stops serving `id` as its primary (its data stays: only a deletion request drops it).
fn unexport(p: &NodeParts, id: &str) -> anyhow::Result<()> {
    let vid = VolumeId(id.parse()?);
    if let Some(server) = &p.replica {
        server.stop_forwarded(vid);
    }
    Ok(())
}

/// This node's part of deletion request `d`: drops what its cache holds of the volume (nothing,
/// when it never held it) and, on the volume's last primary, deletes the backend image.
fn delete_here(p: &NodeParts, d: &Deletion) -> anyhow::Result<()> {
    let vid = VolumeId(d.id.parse()?);
    p.engine.drop_volume(vid)?;
    if d.primary == p.name {
        match p.engine.backend().delete(vid) {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Stops following `id`; its journal entries are dropped unless `keep` (it is still a member,
/// or its deletion request drops them).
fn unfollow(p: &NodeParts, id: &str, keep: bool) -> anyhow::Result<()> {
    let vid = VolumeId(id.parse()?);
    if let Some(server) = &p.replica {
        server.remove(vid);
    }
    if !keep {
        p.engine.drop_volume(vid)?;
    }
    Ok(())
}

/// Removes the registrations of the host `f` names from `e`'s reservations (saved in the store
/// first), then drops the request. Hosts' NVMe registrations are found by Host Identifier,
/// iSCSI ones by the initiator part of their nexus identity.
async fn fence(
    store: &Arc<dyn Store>,
    p: &NodeParts,
    e: &Exported,
    f: &PendingFence,
) -> anyhow::Result<()> {
    let ids = f.fence.host_ids();
    let initiator = f.fence.iqn.as_deref().map(initiator_key);
    let removed = e
        .reservations
        .fence(move |h| ids.contains(h) || initiator.is_some_and(|k| h[..8] == k))
        .await
        .map_err(|err| anyhow::anyhow!("fencing host {}: {err}", f.fence.host))?;
    tracing::info!(node = %p.name, volume = %e.name, host = %f.fence.host, removed,
        "fenced the host off the volume's reservations");
    fence_done(&**store, f).await?;
    Ok(())
}

/// What one round read from the store, beyond what the decisions take.
struct Round<'a> {
    volumes: &'a BTreeMap<String, Volume>,
    deletions: &'a BTreeMap<String, Deletion>,
    fences: &'a BTreeMap<String, Vec<PendingFence>>,
    nodes: &'a BTreeMap<String, Node>,
    control: Arc<dyn Control>,
}

/// One round: reads the desired state, decides, and acts.
pub(super) async fn converge(
    store: &Arc<dyn Store>,
    p: &NodeParts,
    local: &mut Local,
) -> anyhow::Result<()> {
    if crate::failpoints::on(&format!("converge-panic@{}", p.name)) {
        panic!("failpoint converge-panic");
    }
    let mut hosts = BTreeMap::new();
    for kv in store.list("hosts/").await? {
        if let Ok(h) = serde_json::from_slice::<Host>(&kv.value) {
            hosts.insert(h.name.clone(), h);
        }
    }
    let mut policies = BTreeMap::new();
    for kv in store.list("qos/").await? {
        if let (Some(name), Ok(q)) = (
            kv.key.strip_prefix("qos/"),
            serde_json::from_slice::<QosPolicy>(&kv.value),
        ) {
            policies.insert(name.to_string(), q);
        }
    }
    let nodes: BTreeMap<String, Node> = registry::nodes(&**store)
        .await?
        .into_iter()
        .map(|(k, (n, _))| (k, n))
        .collect();
    let mut all = BTreeMap::new();
    let mut created = BTreeMap::new();
    let mut unreadable = BTreeMap::new();
    for kv in store.list("volumes/").await? {
        match volumes::parse(&kv.key, &kv.value) {
            Ok(v) => {
                created.insert(v.id.clone(), kv.create_revision);
                all.insert(v.id.clone(), v);
            }
            Err(u) => {
                unreadable.insert(u.id().to_string(), u.reason);
            }
        }
    }
    let deletions: BTreeMap<String, Deletion> = volumes::deletions(&**store)
        .await?
        .into_iter()
        .map(|(id, (d, _))| (id, d))
        .collect();
    let fences = fences(&**store).await?;
    let fenced: BTreeSet<String> = fences.keys().cloned().collect();
    local.report_left_alone(p, &all, &unreadable, &deletions);
    let held: BTreeMap<String, Have> = local
        .volumes
        .iter()
        .map(|(id, h)| (id.clone(), h.view()))
        .collect();
    let now = std::time::Instant::now();
    let failing: BTreeSet<String> = local.failing.keys().cloned().collect();
    let backing_off: BTreeSet<String> = local
        .failing
        .iter()
        .filter(|(_, f)| now < f.next)
        .map(|(id, _)| id.clone())
        .collect();
    let actions = plan::plan(
        &Desired {
            me: &p.name,
            volumes: &all,
            created: &created,
            unreadable: &unreadable,
            deletions: &deletions,
            hosts: &hosts,
            policies: &policies,
            fences: &fenced,
        },
        &plan::Node {
            held: &held,
            floors: &local.floors,
            start_rev: local.start_rev,
            failing: &failing,
            backing_off: &backing_off,
            replicates: p.replica.is_some(),
        },
    );
    let round = Round {
        volumes: &all,
        deletions: &deletions,
        fences: &fences,
        nodes: &nodes,
        control: Arc::new(AgentControl {
            store: store.clone(),
            me: p.name.clone(),
        }),
    };
    // A volume whose action failed is left for this round; the others go on.
    let mut stopped: BTreeSet<String> = BTreeSet::new();
    for a in &actions {
        if stopped.contains(a.volume()) {
            continue;
        }
        let id = a.volume();
        let record = all.get(id);
        let span = tracing::info_span!(
            "volume",
            volume = record.map_or(id, |v| v.name.as_str()),
            id,
            node = %p.name,
            epoch = record.map_or(0, |v| v.epoch.0),
        );
        if !local.apply(store, p, &round, a).instrument(span).await? {
            stopped.insert(id.to_string());
        }
    }
    Ok(())
}

impl Local {
    /// Carries out `a`. `Ok(false)`: it failed for its volume (reported), whose further
    /// actions wait for the next round; an error: the store failed, and the round ends.
    async fn apply(
        &mut self,
        store: &Arc<dyn Store>,
        p: &NodeParts,
        r: &Round<'_>,
        a: &Action,
    ) -> anyhow::Result<bool> {
        let id = a.volume();
        let v = r.volumes.get(id);
        let record = || v.expect("the plan acts on volumes with a record");
        match a {
            Action::Retire { why, .. } => {
                let held = self.volumes.get_mut(id).expect("held");
                let Role::Primary(mut e) = std::mem::replace(&mut held.role, Role::Idle) else {
                    unreachable!("the plan retires primaries")
                };
                // Host I/O stops here before anything waits: the path goes down (a demoted
                // primary's forwards to the new one right after) and forwarded I/O stops.
                let why_down = match why {
                    Retirement::Fenced { epoch } => {
                        self.floors.insert(id.to_string(), *epoch);
                        "another node claimed the volume's backend image"
                    }
                    Retirement::NotPrimary => "another node is the volume's primary now",
                    Retirement::Deleted | Retirement::Left => "the volume left this node",
                };
                held.path.down(why_down);
                held.path.role.retire();
                let unexported = unexport(p, id)
                    .inspect_err(|err| {
                        tracing::error!(node = %p.name, volume = %e.name, "unexport failed: {err:#}")
                    })
                    .is_ok();
                e.progress.withdraw(&**store, id).await?;
                match why {
                    Retirement::Fenced { epoch } => tracing::error!(node = %p.name,
                        volume = %e.name, epoch = epoch.0,
                        "fenced off the backend image by another node: stopped serving; asking \
                         for a new epoch"),
                    Retirement::Deleted if unexported => {
                        tracing::info!(node = %p.name, volume = %e.name, "stopped serving: deleted")
                    }
                    _ if unexported => {
                        tracing::info!(node = %p.name, volume = %e.name, "no longer primary")
                    }
                    _ => {}
                }
            }
            Action::Unfollow { keep, .. } => {
                self.volumes.get_mut(id).expect("held").role = Role::Idle;
                if let Err(e) = unfollow(p, id, *keep) {
                    tracing::error!(node = %p.name, volume = %id, "unfollow failed: {e:#}");
                }
            }
            Action::Close { .. } => {
                self.volumes.remove(id).expect("held").path.close(p, id);
            }
            Action::Open {
                acl,
                iscsi_hosts,
                limits,
                ..
            } => {
                let v = record();
                let opened = attach(p, v).and_then(|vid| {
                    Path::open(p, v, vid, acl.clone(), iscsi_hosts.clone(), *limits)
                });
                match opened {
                    Ok(path) => {
                        let role = Role::Idle;
                        self.volumes.insert(id.to_string(), Held { path, role });
                    }
                    Err(err) => {
                        self.failed(store, p, v, format!("{err:#}")).await;
                        return Ok(false);
                    }
                }
            }
            Action::Limit { limits, .. } => {
                let path = &mut self.volumes.get_mut(id).expect("held").path;
                path.qos.apply(limits);
                tracing::info!(node = %p.name, volume = %record().name, ?limits, "QoS applied");
                path.policy = *limits;
            }
            Action::Admit {
                acl, iscsi_hosts, ..
            } => {
                let path = &mut self.volumes.get_mut(id).expect("held").path;
                path.set_acl(p, acl.clone(), iscsi_hosts.clone());
            }
            Action::Portals { .. } => {
                let path = &mut self.volumes.get_mut(id).expect("held").path;
                path.set_replica_nodes(p, record(), r.nodes);
            }
            Action::Grow { backend, .. } => {
                let v = record();
                let path = &mut self.volumes.get_mut(id).expect("held").path;
                match grow(p, v, *backend) {
                    Ok(()) => {
                        tracing::info!(node = %p.name, volume = %v.name, size = v.size, "grown");
                        path.size = v.size;
                    }
                    Err(err) => {
                        tracing::error!(node = %p.name, volume = %v.name, "resize failed: {err:#}")
                    }
                }
            }
            Action::AwaitEpoch { floor, .. } => {
                let v = record();
                self.floors.insert(id.to_string(), *floor);
                let path = &self.volumes.get(id).expect("held").path;
                path.down("the node restarted and waits for a new epoch");
                let req = ReplicaRequest::Restarted {
                    epoch: v.epoch,
                    from: NodeId::from(&p.name),
                };
                leader::request(&**store, id, &p.name, &req).await?;
                tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch.0,
                    "restarted primary: waiting for a new epoch");
            }
            Action::Serve { .. } => {
                let v = record();
                let held = self.volumes.get_mut(id).expect("held");
                let exported = match load_reservations(store, id, &p.name).await {
                    Ok(keeper) => {
                        export(p, v, &held.path, r.nodes, r.control.clone(), keeper.clone())
                            .map(|primary| (primary, keeper))
                    }
                    Err(e) => Err(e),
                };
                match exported {
                    Ok((primary, reservations)) => {
                        tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch.0,
                            "serving as primary");
                        *held.path.role.primary.lock() = Some(primary.clone());
                        held.path.role.promotions.fetch_add(1, Ordering::Relaxed);
                        held.role = Role::Primary(Exported {
                            name: v.name.clone(),
                            primary,
                            reservations,
                            epoch: v.epoch,
                            progress: ProgressRecord::default(),
                        });
                        self.recovered(store, p, id).await;
                    }
                    Err(e) => {
                        held.path.down("the node failed to serve the volume");
                        self.failed(store, p, v, format!("serving as primary: {e:#}"))
                            .await;
                        return Ok(false);
                    }
                }
            }
            Action::Refresh { epoch, .. } => {
                let v = record();
                let Role::Primary(e) = &mut self.volumes.get_mut(id).expect("held").role else {
                    unreachable!("the plan refreshes primaries")
                };
                match epoch {
                    Some(epoch) => {
                        e.primary.membership(membership(v), peers(v, r.nodes));
                        e.epoch = *epoch;
                    }
                    // A member may have restarted on another replica address.
                    None => e.primary.set_peers(peers(v, r.nodes)),
                }
                e.progress.publish(&**store, v, &e.primary).await?;
            }
            Action::Fence { .. } => {
                let Role::Primary(e) = &self.volumes.get(id).expect("held").role else {
                    unreachable!("the plan fences on primaries")
                };
                for f in r.fences.get(id).into_iter().flatten() {
                    fence(store, p, e, f).await?;
                }
            }
            Action::Forward { .. } => {
                let v = record();
                let primary = r
                    .nodes
                    .get(v.primary.as_str())
                    .and_then(|n| n.replica.parse::<SocketAddr>().ok());
                self.volumes.get(id).expect("held").path.forward(primary);
            }
            Action::Follow { .. } => {
                let v = record();
                let server = p
                    .replica
                    .as_ref()
                    .expect("the plan follows with a listener");
                let held = self.volumes.get_mut(id).expect("held");
                let f = match FollowerVolume::new(
                    p.engine.clone(),
                    &p.volumes,
                    held.path.id,
                    v.epoch,
                ) {
                    Ok(f) => f,
                    Err(e) => {
                        self.failed(store, p, v, format!("following: {e:#}")).await;
                        return Ok(false);
                    }
                };
                server.add(f.clone());
                tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch.0,
                    last = ?f.last(), "following");
                held.role = Role::Follower(Following {
                    follower: f,
                    epoch: v.epoch,
                });
                self.recovered(store, p, id).await;
            }
            Action::FollowEpoch { epoch, .. } => {
                let Role::Follower(f) = &mut self.volumes.get_mut(id).expect("held").role else {
                    unreachable!("the plan moves followers to new epochs")
                };
                f.follower.store_epoch(*epoch);
                f.epoch = *epoch;
            }
            Action::Forget { .. } => self.recovered(store, p, id).await,
            Action::Delete { .. } => {
                let d = &r.deletions[id];
                match delete_here(p, d) {
                    Ok(()) => {
                        volumes::deletion_done(&**store, id, &p.name).await?;
                        tracing::info!(node = %p.name, volume = %d.name, "deleted");
                    }
                    Err(e) => tracing::error!(node = %p.name, volume = %d.name,
                        "deleting failed: {e:#}; retrying"),
                }
            }
        }
        Ok(true)
    }
}
