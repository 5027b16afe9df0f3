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

mod apply;
mod plan;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_control::attachments::FENCES;
use alcubierre_control::registry::{self, Heartbeat};
use alcubierre_store::{Store, WatchEvent};

use crate::node_tasks;
use crate::parts::NodeParts;

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
    use tracing::Instrument;
    let node = node.to_string();
    let span = tracing::info_span!("node_task", node = %node, task = name);
    tokio::spawn(async move {
        let task = std::panic::AssertUnwindSafe(task.instrument(span));
        if let Err(panic) = task.catch_unwind().await {
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
    let mut local = apply::Local::new(revision(&*store, &p.name).await);
    loop {
        // Watch first, then read: nothing written in between is missed.
        let rev = revision(&*store, &p.name).await;
        let (mut w1, mut w2, mut w3, mut w4, mut w5) = match (
            store.watch("volumes/", Some(rev + 1)).await,
            store.watch("hosts/", Some(rev + 1)).await,
            store.watch("qos/", Some(rev + 1)).await,
            store.watch(registry::NODES, Some(rev + 1)).await,
            store.watch(FENCES, Some(rev + 1)).await,
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
            _ => {
                tracing::warn!(node = %p.name, "cannot watch volumes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            if let Err(e) = apply::converge(&store, &p, &mut local).await {
                tracing::warn!(node = %p.name, "applying volumes failed: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let ev = tokio::select! {
                e = w1.next() => e,
                e = w2.next() => e,
                e = w3.next() => e,
                e = w4.next() => e,
                e = w5.next() => e,
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
    use alcubierre_control::model::Node;
    use alcubierre_control::model::{Activation, CacheDevice, CacheState};
    use alcubierre_io::fault::{CrashMedium, Fault};
    use alcubierre_io::Medium;
    use alcubierre_nvmf::Target;
    use alcubierre_store::MemStore;
    use alcubierre_types::{BlockSize, VolumeGeometry};
    use alcubierre_types::{ByteSize, VolumeId};

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
