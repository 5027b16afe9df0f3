//! A node's own background tasks in a cluster, beside its volumes (`crate::agent`):
//! * Activation: when its record turns `activating`, it checks its cache devices and reports
//!   success or failure (`registry::finish_activation`).
//! * Lease: the replication lease runs half a heartbeat timeout from the newest successful
//!   heartbeat round trip.
//! * Cache health: it reports its cache device failed (every journal partition stopped after a
//!   device error) or degraded (some did), so the leader moves its replicas.
//! * Configuration: when the cluster configuration changes it applies the heartbeat interval and
//!   timeout (a new lease) and its share of the destage rate, without a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alcubierre_control::cluster::{self, CONFIG_KEY};
use alcubierre_control::model::{Activation, Node};
use alcubierre_control::registry::{self, Heartbeat, LastOk};
use alcubierre_store::{Store, WatchEvent};

use crate::parts::NodeParts;

/// Finishes this node's activation whenever its record asks for it.
pub(crate) async fn activation(store: Arc<dyn Store>, name: String) {
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

/// Keeps the node's replication lease: it runs half a heartbeat timeout from the start of the
/// newest successful heartbeat round trip (docs/design/replication.md rule 6).
pub(crate) async fn lease(p: Arc<NodeParts>, last_ok: LastOk, timeout: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = *last_ok.lock().expect("not poisoned");
        if let Some(t) = t {
            let half = Duration::from_millis(timeout.load(Ordering::Relaxed) / 2);
            p.lease.renew_from(t, half);
        }
    }
}

/// Reports the cache device's health: failed when every journal partition has failed
/// (fail-stop after a device error), degraded when some have.
pub(crate) async fn cache_health(store: Arc<dyn Store>, p: Arc<NodeParts>) {
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
pub(crate) async fn config(
    store: Arc<dyn Store>,
    p: Arc<NodeParts>,
    mut heartbeat: Heartbeat,
    timeout: Arc<AtomicU64>,
) {
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
                Ok(()) => timeout.store(heartbeat.timing().1.as_millis() as u64, Ordering::Relaxed),
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
