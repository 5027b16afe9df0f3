//! A node's agent in a cluster: it applies the desired state the store holds.
//! * Activation: when its record turns `activating`, it checks its cache devices and reports
//!   success or failure (`registry::finish_activation`).
//! * Volumes: whenever a volume, a host or a QoS policy changes, it compares the volumes whose primary it is
//!   with what it exports, and converges: it exports new ones over NVMe/TCP (creating the
//!   backend image and attaching the volume to its cache first), grows resized ones (the hosts
//!   get a Namespace Attribute Changed event), applies access lists (the volume's hosts' NQNs; an
//!   empty list lets any host in) and QoS policies, and stops exporting volumes that moved away or were deleted
//!   (a deleted volume's cached data is dropped and its backend image deleted). Until
//!   replication exists (issue 6), only the primary holds data.
//! * Cache health: it reports its cache device failed (every journal partition stopped after a
//!   device error) or degraded (some did), so the leader moves its replicas.
//! * Configuration: when the cluster configuration changes it applies the heartbeat interval and
//!   timeout (a new lease) and its share of the destage rate, without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::BackendError;
use alcubierre_block::{IoStats, Metered};
use alcubierre_cache::{Engine, RateLimiter, VolumeOpener};
use alcubierre_control::cluster::{self, CONFIG_KEY};
use alcubierre_control::model::{Activation, Node};
use alcubierre_control::registry::{self, Heartbeat};
use alcubierre_control::volumes::{Host, QosPolicy, Volume};
use alcubierre_nvmf::{volume_nqn, HostAcl, Subsystem, SubsystemEvent, Target};
use alcubierre_store::{Store, WatchEvent};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};
use parking_lot::RwLock;

use crate::qos::{Limited, Qos};

/// What a node publishes about a volume it exports.
pub struct VolumeMetrics {
    /// The volume's name.
    pub name: String,
    /// Its I/O statistics.
    pub io: Arc<IoStats>,
    /// Its QoS limits in force.
    pub qos: Arc<Qos>,
}

/// The volumes a node exports, by volume id.
pub type VolumeStats = Arc<RwLock<BTreeMap<String, VolumeMetrics>>>;

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
    /// Its ANA group.
    pub ana_group: u32,
    /// Its destagers' shared rate limit.
    pub destage_limit: Option<Arc<RateLimiter>>,
    /// Where it publishes the I/O statistics of the volumes it exports.
    pub stats: VolumeStats,
}

impl Agent {
    /// Starts the agent; it takes over `heartbeat` to apply configuration changes to it.
    pub fn start(store: Arc<dyn Store>, parts: NodeParts, heartbeat: Heartbeat) -> Self {
        let parts = Arc::new(parts);
        let tasks = vec![
            tokio::spawn(activation(store.clone(), parts.name.clone())),
            tokio::spawn(volumes(store.clone(), parts.clone())),
            tokio::spawn(config(store.clone(), parts.clone(), heartbeat)),
            tokio::spawn(cache_health(store, parts)),
        ];
        Self { tasks }
    }
}

async fn activation(store: Arc<dyn Store>, name: String) {
    let key = format!("{}{name}", registry::NODES);
    let Ok(mut w) = store.watch(&key, Some(1)).await else {
        tracing::error!(node = %name, "cannot watch the node record");
        return;
    };
    while let Some(ev) = w.next().await {
        let Ok(WatchEvent::Put(kv)) = ev else {
            continue;
        };
        if kv.key != key {
            continue;
        }
        let Ok(node) = serde_json::from_slice::<Node>(&kv.value) else {
            continue;
        };
        if node.activation == Activation::Activating {
            match registry::finish_activation(&*store, &node).await {
                Ok(n) => {
                    tracing::info!(node = %name, state = n.activation.name(), "activation finished")
                }
                Err(e) => tracing::warn!(node = %name, "finishing activation failed: {e}"),
            }
        }
    }
}

/// What the agent exported for a volume.
struct Exported {
    name: String,
    size: u64,
    acl: HostAcl,
    qos: Arc<Qos>,
    policy: Option<QosPolicy>,
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

fn geometry(v: &Volume) -> anyhow::Result<VolumeGeometry> {
    Ok(VolumeGeometry::new(
        BlockSize::from_bytes(v.block_size)?,
        ByteSize(v.size),
    )?)
}

fn export(p: &NodeParts, v: &Volume, acl: HostAcl, qos: Arc<Qos>) -> anyhow::Result<()> {
    let id = VolumeId(v.id.parse()?);
    let backend = p.engine.backend();
    match backend.size(id) {
        Err(BackendError::NotFound { .. }) => backend.create(id, ByteSize(v.size))?,
        Err(e) => return Err(e.into()),
        Ok(s) if s.0 < v.size => backend.resize(id, ByteSize(v.size))?,
        Ok(_) => {}
    }
    match p.engine.attach(id, geometry(v)?) {
        Ok(()) | Err(alcubierre_cache::CacheError::AlreadyAttached(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let stats = Arc::new(IoStats::default());
    // Metered outside the QoS wait: latency is what the host sees.
    let dev = Arc::new(Metered::new(
        Limited::new(p.volumes.volume(id)?, qos.clone()),
        stats.clone(),
    ));
    p.target
        .add_subsystem(Arc::new(Subsystem::new(id, dev, acl, p.ana_group)));
    p.stats.write().insert(
        v.id.clone(),
        VolumeMetrics {
            name: v.name.clone(),
            io: stats,
            qos,
        },
    );
    Ok(())
}

fn grow(p: &NodeParts, v: &Volume) -> anyhow::Result<()> {
    let id = VolumeId(v.id.parse()?);
    p.engine.backend().resize(id, ByteSize(v.size))?;
    p.engine.resize(id, geometry(v)?)?;
    if let Some(s) = p.target.subsystem(&volume_nqn(id)) {
        s.notify(SubsystemEvent::NamespaceChanged);
    }
    Ok(())
}

/// Stops exporting `id`; when `deleted`, drops its cached data and deletes its backend image.
fn unexport(p: &NodeParts, id: &str, deleted: bool) -> anyhow::Result<()> {
    let vid = VolumeId(id.parse()?);
    p.target.remove_subsystem(&volume_nqn(vid));
    p.stats.write().remove(id);
    if deleted {
        p.engine.drop_volume(vid)?;
        match p.engine.backend().delete(vid) {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        // Its dirty data stays in the journal and is still destaged.
        let _ = p.engine.detach(vid);
    }
    Ok(())
}

async fn converge(
    store: &dyn Store,
    p: &NodeParts,
    exported: &mut BTreeMap<String, Exported>,
) -> anyhow::Result<()> {
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
    let mut all = BTreeMap::new();
    for kv in store.list("volumes/").await? {
        if let Ok(v) = serde_json::from_slice::<Volume>(&kv.value) {
            all.insert(v.id.clone(), v);
        }
    }
    let gone: Vec<String> = exported
        .keys()
        .filter(|id| all.get(*id).is_none_or(|v| v.primary != p.name))
        .cloned()
        .collect();
    for id in gone {
        let deleted = !all.contains_key(&id);
        let e = exported.remove(&id).expect("listed");
        match unexport(p, &id, deleted) {
            Ok(()) if deleted => tracing::info!(node = %p.name, volume = %e.name, "deleted"),
            Ok(()) => {
                tracing::info!(node = %p.name, volume = %e.name, "no longer primary; unexported")
            }
            Err(err) => {
                tracing::error!(node = %p.name, volume = %e.name, "unexport failed: {err:#}")
            }
        }
    }
    for v in all.values().filter(|v| v.primary == p.name) {
        let want = acl(v, &hosts);
        let policy = v.qos.as_ref().and_then(|q| policies.get(q)).cloned();
        match exported.get_mut(&v.id) {
            None => {
                let qos = Arc::new(Qos::default());
                qos.apply(policy.as_ref());
                match export(p, v, want.clone(), qos.clone()) {
                    Ok(()) => {
                        tracing::info!(node = %p.name, volume = %v.name, epoch = v.epoch, "exported");
                        exported.insert(
                            v.id.clone(),
                            Exported {
                                name: v.name.clone(),
                                size: v.size,
                                acl: want,
                                qos,
                                policy,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!(node = %p.name, volume = %v.name, "export failed: {e:#}")
                    }
                }
            }
            Some(e) => {
                if e.policy != policy {
                    e.qos.apply(policy.as_ref());
                    tracing::info!(node = %p.name, volume = %v.name, ?policy, "QoS applied");
                    e.policy = policy;
                }
                if v.size > e.size {
                    match grow(p, v) {
                        Ok(()) => {
                            tracing::info!(node = %p.name, volume = %v.name, size = v.size, "grown");
                            e.size = v.size;
                        }
                        Err(err) => {
                            tracing::error!(node = %p.name, volume = %v.name, "resize failed: {err:#}")
                        }
                    }
                }
                if e.acl != want {
                    let id = VolumeId(v.id.parse()?);
                    if let Some(s) = p.target.subsystem(&volume_nqn(id)) {
                        s.set_acl(want.clone());
                    }
                    e.acl = want;
                }
            }
        }
    }
    Ok(())
}

async fn volumes(store: Arc<dyn Store>, p: Arc<NodeParts>) {
    let mut exported = BTreeMap::new();
    loop {
        // Watch first, then read: nothing written in between is missed.
        let rev = store.revision().await.unwrap_or(0);
        let (mut w1, mut w2, mut w3) = match (
            store.watch("volumes/", Some(rev + 1)).await,
            store.watch("hosts/", Some(rev + 1)).await,
            store.watch("qos/", Some(rev + 1)).await,
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                tracing::warn!(node = %p.name, "cannot watch volumes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            if let Err(e) = converge(&*store, &p, &mut exported).await {
                tracing::warn!(node = %p.name, "applying volumes failed: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let ev = tokio::select! {
                e = w1.next() => e,
                e = w2.next() => e,
                e = w3.next() => e,
            };
            if !matches!(ev, Some(Ok(_))) {
                break; // the watch failed: start over
            }
        }
    }
}

/// Reports the cache device's health: failed when every journal partition has failed
/// (fail-stop after a device error), degraded when some have.
async fn cache_health(store: Arc<dyn Store>, p: Arc<NodeParts>) {
    use alcubierre_control::model::CacheState;
    let mut reported = CacheState::Healthy;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let parts = p.engine.partitions();
        let failed = parts.iter().filter(|x| x.is_failed()).count();
        let state = if failed == 0 {
            CacheState::Healthy
        } else if failed == parts.len() {
            CacheState::Failed
        } else {
            CacheState::Degraded
        };
        if state == reported {
            continue;
        }
        match registry::set_cache_states(&*store, &p.name, &[state]).await {
            Ok(_) => {
                tracing::warn!(node = %p.name, ?state, failed, "cache device state reported");
                reported = state;
            }
            Err(e) => tracing::warn!(node = %p.name, "reporting the cache state failed: {e}"),
        }
    }
}

/// Applies the cluster configuration: heartbeat timing and this node's destage share.
async fn config(store: Arc<dyn Store>, p: Arc<NodeParts>, mut heartbeat: Heartbeat) {
    loop {
        let rev = store.revision().await.unwrap_or(0);
        let (Ok(mut w1), Ok(mut w2)) = (
            store.watch(CONFIG_KEY, Some(rev + 1)).await,
            store.watch(registry::NODES, Some(rev + 1)).await,
        ) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        loop {
            match apply_config(&*store, &p, &mut heartbeat).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(node = %p.name, "applying the cluster config failed: {e:#}")
                }
            }
            let ev = tokio::select! {
                e = w1.next() => e,
                e = w2.next() => e,
            };
            if !matches!(ev, Some(Ok(_))) {
                break;
            }
        }
    }
}

async fn apply_config(
    store: &dyn Store,
    p: &NodeParts,
    heartbeat: &mut Heartbeat,
) -> anyhow::Result<()> {
    let c = cluster::load(store).await?;
    let timing = (
        Duration::from_millis(c.heartbeat_interval_ms),
        Duration::from_millis(c.heartbeat_timeout_ms),
    );
    if store.get(CONFIG_KEY).await?.is_some() && heartbeat.timing() != timing {
        *heartbeat = heartbeat.restart(timing.0, timing.1).await?;
        tracing::info!(node = %p.name, interval = ?timing.0, timeout = ?timing.1, "heartbeat timing applied");
    }
    if let Some(limit) = &p.destage_limit {
        let active = registry::nodes(store)
            .await?
            .values()
            .filter(|(n, _)| n.activation == Activation::Active)
            .count()
            .max(1) as u32;
        let share = c.destage_rate(active) / active as u64;
        if limit.rate() != share {
            limit.set_rate(share);
            tracing::info!(node = %p.name, rate = share, "destage rate applied");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcubierre_backend::MemBackend;
    use alcubierre_block::BlockDevice;
    use alcubierre_cache::{CacheService, FormatOptions, ServiceConfig};
    use alcubierre_control::model::{CacheDevice, CacheState};
    use alcubierre_io::fault::{CrashMedium, Fault};
    use alcubierre_io::Medium;
    use alcubierre_store::MemStore;

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
            portals: Vec::new(),
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
                ana_group: 1,
                destage_limit: None,
                stats: VolumeStats::default(),
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
