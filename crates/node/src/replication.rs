//! The agent's replication glue: a primary's requests to the leader, its progress records in
//! the store, each volume's role on this node for metrics, and the check that every node uses
//! the cluster's one backend.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use alcubierre_backend::{Backend, BackendError};
use alcubierre_block::{BlockError, IoFuture, Keeper, Reservations, ResvStore};
use alcubierre_control::leader;
use alcubierre_control::reconcile::ReplicaRequest;
use alcubierre_control::volumes::{self, FollowerProgress, Progress, Volume, PROGRESS};
use alcubierre_replica::volume::{Ask, Control, PrimaryVolume, ReplicaEvents};
use alcubierre_store::{put_if, Compare, Store};
use alcubierre_types::{ByteOffset, ByteSize, SeqNo, VolumeId};

/// A volume's replication role on this node, for metrics.
#[derive(Default)]
pub struct Role {
    /// The replicated volume, while this node is its primary.
    pub primary: parking_lot::Mutex<Option<Arc<PrimaryVolume>>>,
    /// Times this node started serving the volume as its primary (placement, failover,
    /// handover).
    pub promotions: AtomicU64,
    /// What earlier terms as primary here did to bring followers up to date.
    past: parking_lot::Mutex<ReplicaEvents>,
}

impl Role {
    /// This node no longer serves the volume as its primary: its follower events are kept.
    pub fn retire(&self) {
        if let Some(p) = self.primary.lock().take() {
            *self.past.lock() += p.events();
        }
    }

    /// Resyncs, rebuilds, journal replays and forced destages of followers by this node as
    /// the volume's primary, in every term (counters, for metrics).
    pub fn events(&self) -> ReplicaEvents {
        let mut e = *self.past.lock();
        if let Some(p) = &*self.primary.lock() {
            e += p.events();
        }
        e
    }
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
                        node: node.clone(),
                        epoch,
                        from: me.into(),
                    },
                ),
                Ask::Add { node, epoch } => (
                    node.clone(),
                    ReplicaRequest::Add {
                        node: node.clone(),
                        epoch,
                        from: me.into(),
                    },
                ),
            };
            if let Err(e) = leader::request(&*store, &volume.to_string(), node.as_str(), &req).await
            {
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
        let head = all.first().map_or(SeqNo(0), |f| f.head);
        let followers: Vec<FollowerProgress> = all
            .into_iter()
            .map(|f| FollowerProgress {
                behind_writes: f.head.since(f.acked),
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

/// Where the cluster records the marker of its backend.
const BACKEND_MARKER_KEY: &str = "cluster/backend-marker";
const MARKER_MAGIC: &[u8] = b"alcubierre cluster backend marker\n";
const MARKER_BYTES: usize = 4096;

/// The marker image (the nil volume id, which no volume has).
fn marker_image() -> VolumeId {
    VolumeId(uuid::Uuid::nil())
}

fn read_marker(backend: &dyn Backend) -> anyhow::Result<Option<String>> {
    let id = marker_image();
    match backend.size(id) {
        Err(BackendError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let mut buf = vec![0u8; MARKER_BYTES];
    backend.read(id, ByteOffset(0), &mut buf)?;
    let Some(rest) = buf.strip_prefix(MARKER_MAGIC) else {
        anyhow::bail!("backend: its marker image holds something else");
    };
    let token = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(token).into_owned()))
}

fn write_marker(backend: &dyn Backend, token: &str) -> anyhow::Result<()> {
    let id = marker_image();
    match backend.create(id, ByteSize(MARKER_BYTES as u64)) {
        Ok(()) | Err(BackendError::Exists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut buf = MARKER_MAGIC.to_vec();
    buf.extend_from_slice(token.as_bytes());
    buf.push(b'\n');
    buf.resize(MARKER_BYTES, 0);
    backend.write(id, ByteOffset(0), &buf)?;
    backend.flush(id)?;
    Ok(())
}

/// Every node of a cluster must use the same backend: followers drop writes the primary has
/// destaged, so a node with a backend of its own would serve stale data after a failover. The
/// first node to join writes a marker into its backend and records it in the store; every
/// node after it must find the same marker in its backend, or refuses to join.
pub async fn check_shared_backend(store: &dyn Store, backend: &dyn Backend) -> anyhow::Result<()> {
    let mut waited = 0;
    loop {
        let ours = read_marker(backend)?;
        match store.get(BACKEND_MARKER_KEY).await? {
            Some(kv) => {
                let want = String::from_utf8_lossy(&kv.value).into_owned();
                match ours {
                    Some(o) if o == want => return Ok(()),
                    Some(o) => anyhow::bail!(
                        "backend: it holds another cluster's marker ({o}, this cluster's is \
                         {want}); every node of a cluster must use the same backend"
                    ),
                    // The node that recorded the marker may still be writing it.
                    None if waited < 50 => {
                        waited += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    None => anyhow::bail!(
                        "backend: it lacks this cluster's marker ({want}); every node must use \
                         the backend the first node used (for `file`, a directory all nodes share)"
                    ),
                }
            }
            None => {
                let token = ours
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let cmp = vec![Compare::Missing(BACKEND_MARKER_KEY.to_string())];
                if put_if(store, cmp, BACKEND_MARKER_KEY, token.clone().into_bytes()).await? {
                    if ours.is_none() {
                        write_marker(backend, &token)?;
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// A primary's reservations in the store (`reservations/<volume>`): each change is written
/// there before it takes effect, fenced so that only the current primary writes, and the next
/// primary starts from the record ([`load_reservations`]).
pub struct StoredReservations {
    store: Arc<dyn Store>,
    volume: String,
    me: String,
    /// The record's revision as this primary last read or wrote it.
    rev: Arc<parking_lot::Mutex<Option<i64>>>,
}

/// How long saving a reservation change may take before the command fails (the host retries).
const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

impl ResvStore for StoredReservations {
    fn save(&self, state: &Reservations) -> IoFuture<()> {
        let (store, volume, me) = (self.store.clone(), self.volume.clone(), self.me.clone());
        // The keeper runs one command at a time, so nothing else moves `rev` meanwhile.
        let slot = self.rev.clone();
        let rev = *slot.lock();
        let value = state.encode();
        Box::pin(async move {
            let save = volumes::save_reservations(&*store, &volume, &me, rev, value);
            let rev = match tokio::time::timeout(SAVE_TIMEOUT, save).await {
                Ok(Ok(rev)) => rev,
                Ok(Err(e)) => {
                    return Err(BlockError::Unavailable(format!(
                        "saving the reservation change: {e}"
                    )))
                }
                Err(_) => {
                    return Err(BlockError::Unavailable(
                        "saving the reservation change timed out".into(),
                    ))
                }
            };
            *slot.lock() = Some(rev);
            Ok(())
        })
    }
}

/// The keeper of volume `id`'s reservations for its new primary `me`, starting from the
/// store's record (read after the store made `me` the primary, so it holds every change an
/// earlier primary acknowledged).
pub async fn load_reservations(
    store: &Arc<dyn Store>,
    id: &str,
    me: &str,
) -> anyhow::Result<Arc<Keeper>> {
    let (value, rev) = volumes::reservations(&**store, id).await?;
    let state = match value {
        Some(v) => Reservations::decode(&v)
            .map_err(|e| anyhow::anyhow!("the reservation record of volume {id}: {e}"))?,
        None => Reservations::default(),
    };
    let saver = StoredReservations {
        store: store.clone(),
        volume: id.to_string(),
        me: me.to_string(),
        rev: Arc::new(parking_lot::Mutex::new(rev)),
    };
    Ok(Keeper::new(state, Some(Arc::new(saver))))
}
