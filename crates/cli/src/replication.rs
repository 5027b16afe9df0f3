//! The agent's replication glue: a primary's requests to the leader, its progress records in
//! the store, and each volume's role on this node for metrics.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use alcubierre_control::leader;
use alcubierre_control::reconcile::ReplicaRequest;
use alcubierre_control::volumes::{FollowerProgress, Progress, Volume, PROGRESS};
use alcubierre_replica::volume::{Ask, Control, PrimaryVolume};
use alcubierre_store::Store;
use alcubierre_types::VolumeId;

/// A volume's replication role on this node, for metrics.
#[derive(Default)]
pub struct Role {
    /// The replicated volume, while this node is its primary.
    pub primary: parking_lot::Mutex<Option<Arc<PrimaryVolume>>>,
    /// Times this node started serving the volume as its primary (placement, failover,
    /// handover).
    pub promotions: AtomicU64,
}

/// Sends the primary's requests to the leader through the store.
pub struct AgentControl {
    /// The store.
    pub store: Arc<dyn Store>,
    /// This node's name.
    pub me: String,
}

impl Control for AgentControl {
    fn ask(&self, volume: VolumeId, ask: Ask) {
        let (store, me) = (self.store.clone(), self.me.clone());
        tokio::spawn(async move {
            let (node, req) = match ask {
                Ask::Drop { node, epoch } => (
                    node.clone(),
                    ReplicaRequest::Drop {
                        node,
                        epoch,
                        from: me,
                    },
                ),
                Ask::Add { node, epoch } => (
                    node.clone(),
                    ReplicaRequest::Add {
                        node,
                        epoch,
                        from: me,
                    },
                ),
            };
            if let Err(e) = leader::request(&*store, &volume.to_string(), &node, &req).await {
                tracing::warn!(%volume, ?req, "sending a request to the leader failed: {e}");
            }
        });
    }
}

/// A primary's progress record in the store (`progress/<volume>`): published while a replica
/// catches up, removed once every replica is in sync (`alcubierre status`,
/// `GET /api/v1/replication`).
#[derive(Default)]
pub struct ProgressRecord {
    /// What was last published.
    published: Option<Progress>,
    /// No record of the volume is left in the store (checked once after taking over: an
    /// earlier primary may have left one).
    cleared: bool,
}

impl ProgressRecord {
    /// Publishes `v`'s progress as `primary` sees it, or removes the record when every replica
    /// is in sync.
    pub async fn publish(
        &mut self,
        store: &dyn Store,
        v: &Volume,
        primary: &PrimaryVolume,
    ) -> anyhow::Result<()> {
        let all = primary.followers();
        let head = all.first().map_or(0, |f| f.head);
        let followers: Vec<FollowerProgress> = all
            .into_iter()
            .map(|f| FollowerProgress {
                behind_writes: f.head.saturating_sub(f.acked),
                node: f.node,
                in_sync: f.in_sync,
                connected: f.streaming,
            })
            .collect();
        let key = format!("{PROGRESS}{}", v.id);
        if followers.iter().all(|f| f.in_sync) {
            if self.published.take().is_some() || !self.cleared {
                store.delete(&key).await?;
                self.cleared = true;
            }
            return Ok(());
        }
        let prog = Progress {
            volume: v.id.clone(),
            name: v.name.clone(),
            primary: v.primary.clone(),
            epoch: v.epoch,
            head,
            followers,
        };
        if self.published.as_ref() != Some(&prog) {
            store.put(&key, serde_json::to_vec(&prog)?, None).await?;
            self.published = Some(prog);
        }
        Ok(())
    }

    /// The node stops being `id`'s primary: removes the record it published, if any.
    pub async fn withdraw(&mut self, store: &dyn Store, id: &str) -> anyhow::Result<()> {
        if self.published.take().is_some() {
            store.delete(&format!("{PROGRESS}{id}")).await?;
        }
        Ok(())
    }
}
