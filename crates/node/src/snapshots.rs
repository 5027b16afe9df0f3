//! The node agent's part in volume snapshots (`alcubierre_control::snapshots`): for each
//! requested snapshot of a volume this node serves as primary, destage the volume's cached
//! writes (ignoring the destage rate), snapshot its backend image, and record the outcome,
//! fenced on still being the primary. A backend snapshot that already exists was taken by this
//! or an earlier primary after such a destage and counts as taken.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::BackendError;
use alcubierre_cache::CacheError;
use alcubierre_control::snapshots::{self, Snapshot, SnapshotState, SNAPSHOTS};
use alcubierre_control::volumes;
use alcubierre_store::Store;
use alcubierre_types::VolumeId;

use crate::parts::NodeParts;

/// How long a snapshot's destage may wait for another volume's writes this node holds as a
/// follower (their primary releases them after its own destage).
const DESTAGE_WITHIN: Duration = Duration::from_secs(120);

/// Takes requested snapshots until the task is aborted.
pub(crate) async fn run(store: Arc<dyn Store>, p: Arc<NodeParts>) {
    loop {
        // Watch first, then read: nothing written in between is missed.
        let rev = store.revision().await.unwrap_or(0);
        let (mut snaps, mut vols) = match (
            store.watch(SNAPSHOTS, Some(rev + 1)).await,
            store.watch("volumes/", Some(rev + 1)).await,
        ) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            if let Err(e) = take_requested(&store, &p).await {
                tracing::warn!(node = %p.name, "taking snapshots failed: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let ev = tokio::select! {
                e = snaps.next() => e.map(|r| r.is_ok()),
                e = vols.next() => e.map(|r| r.is_ok()),
                // A volume this node was waiting to serve (a new epoch) may serve now.
                _ = tokio::time::sleep(Duration::from_secs(2)) => Some(true),
            };
            if ev != Some(true) {
                break; // the watch failed: start over
            }
        }
    }
}

/// Whether this node serves volume `id` as its primary right now.
fn serving(p: &NodeParts, id: &str) -> bool {
    p.stats
        .read()
        .get(id)
        .is_some_and(|m| m.role.primary.lock().is_some())
}

async fn take_requested(store: &Arc<dyn Store>, p: &Arc<NodeParts>) -> anyhow::Result<()> {
    for (s, rev) in snapshots::all(&**store).await? {
        if s.state != SnapshotState::Creating || !serving(p, &s.volume) {
            continue;
        }
        match volumes::find(&**store, &s.volume).await {
            Ok((v, _)) if v.primary == p.name => {}
            _ => continue,
        }
        let started = std::time::Instant::now();
        let outcome = take(p, &s).await;
        let took = started.elapsed();
        match &outcome {
            Ok(()) => tracing::info!(node = %p.name, volume = %s.volume_name, snapshot = %s.name,
                ?took, "snapshot taken"),
            Err(e) => tracing::error!(node = %p.name, volume = %s.volume_name,
                snapshot = %s.name, "snapshot failed: {e}"),
        }
        if !snapshots::finish(&**store, &s, rev, &p.name, outcome).await? {
            tracing::warn!(node = %p.name, volume = %s.volume_name, snapshot = %s.name,
                "snapshot outcome not recorded: the record or the primary changed");
        }
    }
    Ok(())
}

/// Destages volume `s.volume`, then snapshots its image. An error is the reason to record.
async fn take(p: &Arc<NodeParts>, s: &Snapshot) -> Result<(), String> {
    let id = VolumeId(
        s.volume
            .parse()
            .map_err(|_| "the volume id is not a UUID")?,
    );
    let engine = p.engine.clone();
    let name = s.name.clone();
    let r = tokio::task::spawn_blocking(move || {
        engine.destage_now(id, Some(DESTAGE_WITHIN))?;
        match engine.backend().snapshot(id, &name) {
            Ok(()) | Err(BackendError::Exists { .. }) => Ok(()),
            Err(e) => Err(CacheError::from(e)),
        }
    })
    .await
    .map_err(|e| format!("the snapshot task failed: {e}"))?;
    r.map_err(|e| match e {
        CacheError::ShuttingDown => {
            format!("the volume's cached writes were not destaged within {DESTAGE_WITHIN:?}")
        }
        e => format!("{e}"),
    })
}
