//! A node's agent in a cluster: it applies the desired state the store holds. Activation, the
//! lease, cache health and the cluster configuration are its node's own tasks
//! (`crate::node_tasks`); here:
//! * Volumes: whenever a volume, a host, a QoS policy or a node record changes, it converges on
//!   the store's replica sets. Every volume it holds a replica of is exported over NVMe/TCP
//!   (`crate::paths`), with its access list (the volume's hosts' NQNs; an empty list lets any
//!   host in) and QoS policy. A volume whose primary it is runs as a replicated volume
//!   (`alcubierre_replica::volume::PrimaryVolume`) that also serves the other paths' forwarded
//!   I/O; a volume it is a follower of is registered with its replica listener and its path
//!   forwards to the primary. It grows resized volumes (hosts get a
//!   Namespace Attribute Changed event), follows epoch changes, sends the primary's requests to
//!   the leader, switches roles on failover, and stops serving volumes that moved away or were
//!   deleted (a deleted volume's cached data is dropped and its backend image deleted; a
//!   replica that left the set drops its journal entries). After a restart it serves a volume
//!   it was primary of only in a new epoch it asks the leader for.
//! * Snapshots: it takes the snapshots requested of volumes it serves as primary
//!   (`crate::snapshots`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::BackendError;
use alcubierre_block::{BlockDevice, Keeper, Limited, QosLimits, Reserved};
use alcubierre_control::leader;
use alcubierre_control::model::Node;
use alcubierre_control::reconcile::ReplicaRequest;
use alcubierre_control::registry::{self, Heartbeat};
use alcubierre_control::volumes::{self, Deletion, Host, QosPolicy, Volume};
use alcubierre_nvmf::{volume_nqn, HostAcl, SubsystemEvent};
use alcubierre_replica::node::FollowerVolume;
use alcubierre_replica::primary::Config as ReplicaConfig;
use alcubierre_replica::volume::{Control, PrimaryVolume};
use alcubierre_replica::Membership;
use alcubierre_store::{Store, WatchEvent};
use alcubierre_types::{ByteSize, VolumeId};

use crate::node_tasks;
use crate::parts::{geometry, NodeParts};
use crate::paths::{IscsiHosts, Path};
use crate::replication::{load_reservations, AgentControl, ProgressRecord};

/// The running agent; dropping it stops it.
pub struct Agent {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The longest wait between attempts at a volume that fails here.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A volume this node fails to serve: its record in the store, and when to try again.
struct Failing {
    record: volumes::ReplicaFailure,
    next: std::time::Instant,
}

/// Whether volume `id` may be tried now: it is not failing, or its backoff has passed.
fn may_try(failing: &BTreeMap<String, Failing>, id: &str) -> bool {
    failing
        .get(id)
        .is_none_or(|f| std::time::Instant::now() >= f.next)
}

impl Agent {
    /// Starts the agent; it takes over `heartbeat` to apply configuration changes to it.
    pub fn start(store: Arc<dyn Store>, parts: NodeParts, heartbeat: Heartbeat) -> Self {
        let parts = Arc::new(parts);
        let timeout = Arc::new(AtomicU64::new(heartbeat.timing().1.as_millis() as u64));
        let last_ok = heartbeat.last_ok();
        let node = parts.name.clone();
        let tasks = vec![
            supervised(
                "activation",
                &node,
                node_tasks::activation(store.clone(), parts.name.clone()),
            ),
            supervised("volumes", &node, volumes(store.clone(), parts.clone())),
            supervised(
                "lease",
                &node,
                node_tasks::lease(parts.clone(), last_ok, timeout.clone()),
            ),
            supervised(
                "config",
                &node,
                node_tasks::config(store.clone(), parts.clone(), heartbeat, timeout),
            ),
            supervised(
                "cache health",
                &node,
                node_tasks::cache_health(store.clone(), parts.clone()),
            ),
            supervised("snapshots", &node, crate::snapshots::run(store, parts)),
        ];
        Self { tasks }
    }
}

/// Exit status of a node whose task panicked (EX_SOFTWARE).
const PANIC_EXIT: i32 = 70;

/// Spawns node task `name`. A panic in it ends the process: a node that heartbeats but no
/// longer acts would hold its volumes with nobody serving them, while a node that is gone is
/// failed over by the cluster (and restarted by its service manager).
fn supervised(
    name: &'static str,
    node: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use futures::FutureExt;
    let node = node.to_string();
    tokio::spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(node = %node, task = name,
                "node task panicked: {what}; the node exits so that the cluster fails its volumes over");
            std::process::exit(PANIC_EXIT);
        }
    })
}

/// A volume this node is primary of.
struct Exported {
    name: String,
    primary: Arc<PrimaryVolume>,
    epoch: u64,
    /// Its progress record in the store.
    progress: ProgressRecord,
}

/// A volume this node follows.
struct Following {
    follower: Arc<FollowerVolume>,
    epoch: u64,
}

/// The agent's state for volumes.
#[derive(Default)]
struct Local {
    /// Every volume this node holds a replica of is exported (`paths`); it serves as the
    /// primary of `exported` and follows `following`.
    paths: BTreeMap<String, Path>,
    exported: BTreeMap<String, Exported>,
    following: BTreeMap<String, Following>,
    /// Volumes this node was primary of when it started: it serves them again only in a newer
    /// epoch (so no `(epoch, seq)` is assigned twice across its restarts).
    floors: BTreeMap<String, u64>,
    /// The store revision when the agent started: volumes created later have no floor.
    start_rev: i64,
    /// Volumes held here whose record is missing without a deletion request, or cannot be
    /// read, with why: left as they are, reported once per change.
    held: BTreeMap<String, String>,
    /// Volumes this node fails to serve, retried with backoff.
    failing: BTreeMap<String, Failing>,
}

impl Local {
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
    fn report_held(
        &mut self,
        p: &NodeParts,
        all: &BTreeMap<String, Volume>,
        unreadable: &BTreeMap<String, String>,
        deletions: &BTreeMap<String, (Deletion, i64)>,
    ) {
        let mut held = BTreeMap::new();
        let ids = self
            .paths
            .keys()
            .chain(self.exported.keys())
            .chain(self.following.keys());
        for id in ids {
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
            if self.held.get(id) != Some(why) {
                tracing::error!(node = %p.name, volume = %id,
                    "volume left as it is (served as before, nothing dropped): {why}");
            }
        }
        for id in self.held.keys() {
            if !held.contains_key(id) {
                tracing::info!(node = %p.name, volume = %id, "volume record readable again");
            }
        }
        p.health.held.store(held.len() as u64, Ordering::Relaxed);
        self.held = held;
    }
}

/// The limits of QoS policy `p` (`None`: the volume names no policy, or one that is not
/// there).
fn qos_limits(p: Option<&QosPolicy>) -> QosLimits {
    p.map_or_else(QosLimits::default, |p| QosLimits {
        read_iops: p.read_iops,
        write_iops: p.write_iops,
        read_bps: p.read_bps,
        write_bps: p.write_bps,
    })
}

/// The access list of `v`: its hosts' NQNs, or any host when it names none.
fn acl(v: &Volume, hosts: &BTreeMap<String, Host>) -> HostAcl {
    if v.hosts.is_empty() {
        return HostAcl::Any;
    }
    HostAcl::Only(
        v.hosts
            .iter()
            .filter_map(|h| hosts.get(h).and_then(|h| h.nqn.clone()))
            .collect(),
    )
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
fn peers(v: &Volume, nodes: &BTreeMap<String, Node>) -> HashMap<String, SocketAddr> {
    v.replicas
        .iter()
        .filter_map(|r| {
            let a = nodes.get(r)?.replica.parse().ok()?;
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
        &p.name,
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

/// Stops serving `id` as its primary here: its role retires, its progress record goes, and it
/// is unexported. What it was, and whether the unexport worked (a failure is logged).
async fn retire_export(
    store: &Arc<dyn Store>,
    p: &NodeParts,
    local: &mut Local,
    id: &str,
) -> anyhow::Result<(Exported, bool)> {
    let mut e = local.exported.remove(id).expect("exported");
    if let Some(path) = local.paths.get(id) {
        path.role.retire();
    }
    e.progress.withdraw(&**store, id).await?;
    let unexported = unexport(p, id)
        .inspect_err(
            |err| tracing::error!(node = %p.name, volume = %e.name, "unexport failed: {err:#}"),
        )
        .is_ok();
    Ok((e, unexported))
}

async fn converge(store: &Arc<dyn Store>, p: &NodeParts, local: &mut Local) -> anyhow::Result<()> {
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
    // Only an explicit deletion request removes a volume; a record that is missing without one,
    // or cannot be read, leaves the volume here as it is (served as before), reported.
    let deletions = volumes::deletions(&**store).await?;
    let deleted = |id: &str| !all.contains_key(id) && deletions.contains_key(id);
    local.report_held(p, &all, &unreadable, &deletions);
    let control: Arc<dyn Control> = Arc::new(AgentControl {
        store: store.clone(),
        me: p.name.clone(),
    });
    // Paths that end: deleted, or no longer a replica here.
    let closed: Vec<String> = local
        .paths
        .keys()
        .filter(|id| deleted(id) || all.get(*id).is_some_and(|v| !v.has_replica(&p.name)))
        .cloned()
        .collect();
    for id in closed {
        local.paths.remove(&id).expect("listed").close(p, &id);
    }
    // Primaries fenced off their backend image (another node claimed it): they stopped
    // serving, and serve again only in a newer epoch, which they ask the leader for (the store
    // then says who serves; docs/design/replication.md, "Backend fencing").
    let fenced: Vec<String> = local
        .exported
        .iter()
        .filter(|(_, e)| e.primary.fenced())
        .map(|(id, _)| id.clone())
        .collect();
    for id in fenced {
        if let Some(path) = local.paths.get(&id) {
            path.down("another node claimed the volume's backend image");
        }
        let (e, _) = retire_export(store, p, local, &id).await?;
        local.floors.insert(id, e.epoch);
        tracing::error!(node = %p.name, volume = %e.name, epoch = e.epoch,
            "fenced off the backend image by another node: stopped serving; asking for a new epoch");
    }
    // Exports that end: deleted, or no longer primary here. A deleted volume's data goes
    // below, with its deletion request.
    let gone: Vec<String> = local
        .exported
        .keys()
        .filter(|id| deleted(id) || all.get(*id).is_some_and(|v| v.primary != p.name))
        .cloned()
        .collect();
    for id in gone {
        match retire_export(store, p, local, &id).await? {
            (e, true) if deleted(&id) => {
                tracing::info!(node = %p.name, volume = %e.name, "stopped serving: deleted")
            }
            (e, true) => tracing::info!(node = %p.name, volume = %e.name, "no longer primary"),
            (_, false) => {}
        }
    }
    // Followings that end: deleted, promoted here, or no longer a member.
    let done: Vec<String> = local
        .following
        .keys()
        .filter(|id| {
            deleted(id)
                || all
                    .get(*id)
                    .is_some_and(|v| v.primary == p.name || !v.has_replica(&p.name))
        })
        .cloned()
        .collect();
    for id in done {
        // A deleted volume's data goes below, with its deletion request.
        let keep = deleted(&id) || all.get(&id).is_some_and(|v| v.has_replica(&p.name));
        local.following.remove(&id);
        if let Err(e) = unfollow(p, &id, keep) {
            tracing::error!(node = %p.name, volume = %id, "unfollow failed: {e:#}");
        }
    }
    for v in all.values() {
        if !v.has_replica(&p.name) {
            continue;
        }
        let want = acl(v, &hosts);
        // A volume that names hosts admits only those whose records were read: a host record
        // that cannot be read locks its host out; it never opens the volume to everyone.
        let want_iscsi = if v.hosts.is_empty() {
            IscsiHosts::Any
        } else {
            IscsiHosts::Only(
                v.hosts
                    .iter()
                    .filter_map(|h| hosts.get(h).cloned())
                    .collect(),
            )
        };
        let policy = qos_limits(v.qos.as_ref().and_then(|q| policies.get(q)));
        // A volume that fails here stays with that volume: the others converge, and it is
        // tried again after its backoff.
        if !local.paths.contains_key(&v.id) {
            if !may_try(&local.failing, &v.id) {
                continue;
            }
            let opened = attach(p, v)
                .and_then(|id| Path::open(p, v, id, want.clone(), want_iscsi.clone(), policy));
            match opened {
                Ok(path) => {
                    local.paths.insert(v.id.clone(), path);
                }
                Err(err) => {
                    local.failed(store, p, v, format!("{err:#}")).await;
                    continue;
                }
            }
        }
        let path = local.paths.get_mut(&v.id).expect("opened");
        if path.policy != policy {
            path.qos.apply(&policy);
            tracing::info!(node = %p.name, volume = %v.name, ?policy, "QoS applied");
            path.policy = policy;
        }
        if path.acl != want || path.iscsi_hosts != want_iscsi {
            path.set_acl(p, want, want_iscsi);
        }
        path.set_replica_nodes(p, v, &nodes);
        if v.size > path.size {
            match grow(p, v, v.primary == p.name) {
                Ok(()) => {
                    tracing::info!(node = %p.name, volume = %v.name, size = v.size, "grown");
                    path.size = v.size;
                }
                Err(err) => {
                    tracing::error!(node = %p.name, volume = %v.name, "resize failed: {err:#}")
                }
            }
        }
        if v.primary == p.name {
            match local.exported.get_mut(&v.id) {
                None => {
                    // After a restart (or once fenced): serve only in a newer epoch than the
                    // one found.
                    if created.get(&v.id).copied().unwrap_or(0) <= local.start_rev
                        || local.floors.contains_key(&v.id)
                    {
                        let floor = *local.floors.entry(v.id.clone()).or_insert(v.epoch);
                        if v.epoch <= floor {
                            path.down("the node restarted and waits for a new epoch");
                            let req = ReplicaRequest::Restarted {
                                epoch: v.epoch,
                                from: p.name.clone(),
                            };
                            leader::request(&**store, &v.id, &p.name, &req).await?;
                            tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch,
                                "restarted primary: waiting for a new epoch");
                            continue;
                        }
                    }
                    if !may_try(&local.failing, &v.id) {
                        continue;
                    }
                    let exported = match load_reservations(store, &v.id, &p.name).await {
                        Ok(keeper) => export(p, v, path, &nodes, control.clone(), keeper),
                        Err(e) => Err(e),
                    };
                    match exported {
                        Ok(primary) => {
                            tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch, "serving as primary");
                            *path.role.primary.lock() = Some(primary.clone());
                            path.role.promotions.fetch_add(1, Ordering::Relaxed);
                            local.exported.insert(
                                v.id.clone(),
                                Exported {
                                    name: v.name.clone(),
                                    primary,
                                    epoch: v.epoch,
                                    progress: ProgressRecord::default(),
                                },
                            );
                            local.recovered(store, p, &v.id).await;
                        }
                        Err(e) => {
                            path.down("the node failed to serve the volume");
                            local
                                .failed(store, p, v, format!("serving as primary: {e:#}"))
                                .await;
                            continue;
                        }
                    }
                }
                Some(e) => {
                    if v.epoch != e.epoch {
                        e.primary.membership(membership(v), peers(v, &nodes));
                        e.epoch = v.epoch;
                    } else {
                        // A member may have restarted on another replica address.
                        e.primary.set_peers(peers(v, &nodes));
                    }
                    e.progress.publish(&**store, v, &e.primary).await?;
                }
            }
        } else {
            let Some(server) = &p.replica else { continue };
            path.forward(
                nodes
                    .get(&v.primary)
                    .and_then(|n| n.replica.parse::<SocketAddr>().ok()),
            );
            match local.following.get_mut(&v.id) {
                None => {
                    if !may_try(&local.failing, &v.id) {
                        continue;
                    }
                    let f =
                        match FollowerVolume::new(p.engine.clone(), &p.volumes, path.id, v.epoch) {
                            Ok(f) => f,
                            Err(e) => {
                                local.failed(store, p, v, format!("following: {e:#}")).await;
                                continue;
                            }
                        };
                    server.add(f.clone());
                    tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch, last = ?f.last(), "following");
                    local.following.insert(
                        v.id.clone(),
                        Following {
                            follower: f,
                            epoch: v.epoch,
                        },
                    );
                    local.recovered(store, p, &v.id).await;
                }
                Some(f) => {
                    if v.epoch != f.epoch {
                        f.follower.store_epoch(v.epoch);
                        f.epoch = v.epoch;
                    }
                }
            }
        }
    }
    // Failures of volumes that left this node (deleted, moved) are no longer this node's.
    let left: Vec<String> = local
        .failing
        .keys()
        .filter(|id| !all.get(*id).is_some_and(|v| v.has_replica(&p.name)))
        .filter(|id| !unreadable.contains_key(*id))
        .cloned()
        .collect();
    for id in left {
        local.recovered(store, p, &id).await;
    }
    // Deletion requests naming this node: its part, then it leaves the request. A volume
    // that still has a record is never deleted here.
    for (id, (d, _)) in &deletions {
        if !d.nodes.contains(&p.name) || all.contains_key(id) || unreadable.contains_key(id) {
            continue;
        }
        match delete_here(p, d) {
            Ok(()) => {
                volumes::deletion_done(&**store, id, &p.name).await?;
                tracing::info!(node = %p.name, volume = %d.name, "deleted");
            }
            Err(e) => {
                tracing::error!(node = %p.name, volume = %d.name, "deleting failed: {e:#}; retrying")
            }
        }
    }
    Ok(())
}

/// The store's revision, retried until the store answers: the revision guards safety (a
/// restarted primary waits for a new epoch), so a failed read is never taken for 0.
async fn revision(store: &dyn Store, node: &str) -> i64 {
    let mut wait = Duration::from_millis(100);
    loop {
        match store.revision().await {
            Ok(r) => return r,
            Err(e) => {
                tracing::warn!(node, "cannot read the store's revision: {e}; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn volumes(store: Arc<dyn Store>, p: Arc<NodeParts>) {
    let mut local = Local {
        start_rev: revision(&*store, &p.name).await,
        ..Local::default()
    };
    loop {
        // Watch first, then read: nothing written in between is missed.
        let rev = revision(&*store, &p.name).await;
        let (mut w1, mut w2, mut w3, mut w4) = match (
            store.watch("volumes/", Some(rev + 1)).await,
            store.watch("hosts/", Some(rev + 1)).await,
            store.watch("qos/", Some(rev + 1)).await,
            store.watch(registry::NODES, Some(rev + 1)).await,
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            _ => {
                tracing::warn!(node = %p.name, "cannot watch volumes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            if let Err(e) = converge(&store, &p, &mut local).await {
                tracing::warn!(node = %p.name, "applying volumes failed: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let ev = tokio::select! {
                e = w1.next() => e,
                e = w2.next() => e,
                e = w3.next() => e,
                e = w4.next() => e,
                // Retry pending work (e.g. a restarted primary waiting for its new epoch).
                _ = tokio::time::sleep(Duration::from_secs(2)) => Some(Ok(WatchEvent::Delete { key: String::new(), revision: 0 })),
            };
            if !matches!(ev, Some(Ok(_))) {
                break; // the watch failed: start over
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::VolumeStats;
    use alcubierre_backend::MemBackend;
    use alcubierre_block::BlockDevice;
    use alcubierre_cache::Engine;
    use alcubierre_cache::{CacheService, FormatOptions, ServiceConfig};
    use alcubierre_control::model::{Activation, CacheDevice, CacheState};
    use alcubierre_io::fault::{CrashMedium, Fault};
    use alcubierre_io::Medium;
    use alcubierre_nvmf::Target;
    use alcubierre_store::MemStore;
    use alcubierre_types::{BlockSize, VolumeGeometry};

    /// The revision that guards a restarted primary is never a failed read taken for 0: the
    /// agent waits until the store answers.
    #[tokio::test]
    async fn a_failing_store_read_of_the_revision_is_retried_not_taken_for_zero() {
        let mem = Arc::new(MemStore::new());
        for i in 0..5 {
            mem.put(&format!("k{i}"), vec![], None).await.unwrap();
        }
        let want = mem.revision().await.unwrap();
        assert!(want > 0);
        let faulty = alcubierre_store::testing::FaultyStore::new(mem);
        faulty.fail_next(3);
        assert_eq!(revision(&faulty, "n1").await, want);
        assert_eq!(
            faulty.failures_left(),
            0,
            "it asked again after each failure"
        );
    }

    /// A cache device that starts failing writes: the journal stops (fail-stop) and the agent
    /// reports the device failed in the node record, where the leader acts on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_cache_device_is_reported() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let medium = Arc::new(CrashMedium::new(64 << 20, 1));
        Engine::format(&*medium, &FormatOptions::default()).unwrap();
        let engine = Arc::new(
            Engine::open(
                medium.clone() as Arc<dyn Medium>,
                Arc::new(MemBackend::new()),
            )
            .unwrap(),
        );
        let svc = CacheService::start(engine.clone(), ServiceConfig::default());
        let node = Node {
            name: "n1".into(),
            management: String::new(),
            replica: String::new(),
            cache: vec![CacheDevice {
                path: "mem".into(),
                size: 64 << 20,
                state: CacheState::Healthy,
            }],
            activation: Activation::Registered,
            draining: false,
            cpu_threads: None,
            nvme: None,
            portals: Vec::new(),
            iscsi_portals: Vec::new(),
        };
        registry::register(&*store, &node).await.unwrap();
        let hb = Heartbeat::start(
            store.clone(),
            "n1",
            Duration::from_millis(200),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let target = Arc::new(Target::new(Default::default()));
        let _agent = Agent::start(
            store.clone(),
            NodeParts {
                name: "n1".into(),
                engine: engine.clone(),
                volumes: svc.volumes(),
                target,
                iscsi: None,
                ana_group: 1,
                destage_limit: None,
                stats: VolumeStats::default(),
                replica: None,
                lease: Default::default(),
                health: Default::default(),
            },
            hb,
        );
        let id = VolumeId(uuid::Uuid::new_v4());
        engine.backend().create(id, ByteSize::mib(1)).unwrap();
        engine
            .attach(
                id,
                VolumeGeometry::new(BlockSize::B4096, ByteSize::mib(1)).unwrap(),
            )
            .unwrap();
        medium.schedule(1, Fault::FailWrites);
        let r = svc
            .volume(id)
            .unwrap()
            .write(
                alcubierre_types::Lba(0),
                bytes::Bytes::from(vec![1u8; 4096]),
            )
            .await;
        assert!(
            r.is_err(),
            "a write on a failing device is not acknowledged"
        );
        let t0 = std::time::Instant::now();
        loop {
            let (n, _) = registry::nodes(&*store)
                .await
                .unwrap()
                .remove("n1")
                .unwrap();
            if n.cache[0].state == CacheState::Failed {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "not reported: {n:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(_agent);
        svc.shutdown();
    }
}
