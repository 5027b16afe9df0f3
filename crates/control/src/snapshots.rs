//! Volume snapshots in the metadata store (SPEC §2: flush the volume's dirty data, then an RBD
//! snapshot or a file copy; clone a new volume from it).
//!
//! Keys: `snapshots/<volume uuid>/<name>` (a [`Snapshot`]). States:
//!
//! ```text
//!   request (API) --> creating --(primary: destage, backend snapshot)--> ready
//!                        |                                                 |
//!                        +--(the backend refused)--> failed                 +--> deleted (API:
//!                                                                               backend, then key)
//! ```
//!
//! The volume's primary takes the snapshot, because only it holds every acknowledged write:
//! it destages the volume's cached writes, then snapshots the backend image, so a snapshot holds
//! every write acknowledged before it was requested. A primary that dies meanwhile leaves the
//! record `creating`; the next primary takes it over (a backend snapshot that already exists
//! was taken after such a destage, so it counts). Deleting a volume deletes its snapshots.

use alcubierre_store::{Compare, Store, StoreError, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::volumes::{find, Volume, VolumeError};

pub use crate::volumes::SNAPSHOTS;

/// A snapshot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Requested; the volume's primary has not taken it yet.
    Creating,
    /// In the backend, holding every write acknowledged before the request.
    Ready,
    /// The primary could not take it (see `error`); delete it and try again.
    Failed,
}

/// A snapshot of a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its name, unique per volume.
    pub name: String,
    /// The volume's id.
    pub volume: String,
    /// The volume's name.
    pub volume_name: String,
    /// The volume's size when the snapshot was requested, in bytes.
    pub size: u64,
    /// The volume's block size.
    pub block_size: u64,
    /// Where it stands.
    pub state: SnapshotState,
    /// When it was requested (Unix seconds).
    pub created: u64,
    /// The node that took it.
    #[serde(default)]
    pub node: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// The key of snapshot `name` of volume `id`.
pub fn key(id: &str, name: &str) -> String {
    format!("{SNAPSHOTS}{id}/{name}")
}

/// Checks a snapshot name: 1-64 of `A-Z a-z 0-9 - _ .`, not starting with `.` (RBD snapshot
/// names and file names take these).
pub fn check_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid {
            field: "name",
            reason: "1-64 characters from A-Z a-z 0-9 - _ . (not starting with .)".into(),
        })
    }
}

fn parse(kv_key: &str, value: &[u8]) -> Result<Snapshot, VolumeError> {
    serde_json::from_slice(value)
        .map_err(|e| VolumeError::Corrupt(format!("{kv_key} does not parse: {e}")))
}

/// Requests a snapshot of a volume (by id or name); the volume's primary takes it.
pub async fn request(
    store: &dyn Store,
    volume: &str,
    name: &str,
    now: u64,
) -> Result<Snapshot, VolumeError> {
    check_name(name)?;
    let (v, rev) = find(store, volume).await?;
    let s = Snapshot {
        name: name.to_string(),
        volume: v.id.clone(),
        volume_name: v.name.clone(),
        size: v.size,
        block_size: v.block_size,
        state: SnapshotState::Creating,
        created: now,
        node: None,
        error: None,
    };
    let k = key(&v.id, name);
    let r = store
        .txn(Txn {
            // The volume is still there (a deleted volume's snapshots are deleted with it).
            when: vec![
                Compare::ModRevision(format!("volumes/{}", v.id), rev),
                Compare::Missing(k.clone()),
            ],
            then: vec![TxnOp::Put {
                key: k.clone(),
                value: serde_json::to_vec(&s).expect("serialises"),
                lease: None,
            }],
            otherwise: vec![],
        })
        .await?;
    if r.succeeded {
        return Ok(s);
    }
    if store.get(&k).await?.is_some() {
        return Err(VolumeError::Taken {
            field: "name",
            reason: format!("volume {} has a snapshot named {name:?}", v.name),
        });
    }
    Err(VolumeError::Conflict)
}

/// A volume's snapshots, by name.
pub async fn list(store: &dyn Store, volume: &str) -> Result<Vec<Snapshot>, VolumeError> {
    let (v, _) = find(store, volume).await?;
    list_of(store, &v.id).await
}

/// The snapshots of volume `id`, by name.
pub async fn list_of(store: &dyn Store, id: &str) -> Result<Vec<Snapshot>, VolumeError> {
    let mut out = Vec::new();
    for kv in store.list(&format!("{SNAPSHOTS}{id}/")).await? {
        out.push(parse(&kv.key, &kv.value)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One snapshot of a volume (by id or name), with the volume and the record's revision.
pub async fn get(
    store: &dyn Store,
    volume: &str,
    name: &str,
) -> Result<(Volume, Snapshot, i64), VolumeError> {
    let (v, _) = find(store, volume).await?;
    let k = key(&v.id, name);
    let kv = store
        .get(&k)
        .await?
        .ok_or_else(|| VolumeError::NotFound(format!("snapshot {name:?} of volume {}", v.name)))?;
    let s = parse(&k, &kv.value)?;
    Ok((v, s, kv.mod_revision))
}

/// Every snapshot record of every volume with its revision (for primaries to find work).
pub async fn all(store: &dyn Store) -> Result<Vec<(Snapshot, i64)>, StoreError> {
    Ok(store
        .list(SNAPSHOTS)
        .await?
        .into_iter()
        .filter_map(|kv| Some((serde_json::from_slice(&kv.value).ok()?, kv.mod_revision)))
        .collect())
}

/// Records how taking snapshot `s` (read at revision `rev`) ended, as the volume's primary
/// `me`: written only if the record is unchanged and `me` is still the primary, so a node
/// that lost the volume meanwhile cannot overwrite its successor's outcome. False: fenced.
pub async fn finish(
    store: &dyn Store,
    s: &Snapshot,
    rev: i64,
    me: &str,
    outcome: Result<(), String>,
) -> Result<bool, VolumeError> {
    let (v, vrev) = find(store, &s.volume).await?;
    if v.primary != me {
        return Ok(false);
    }
    let mut done = s.clone();
    done.node = Some(me.to_string());
    match outcome {
        Ok(()) => done.state = SnapshotState::Ready,
        Err(e) => {
            done.state = SnapshotState::Failed;
            done.error = Some(e);
        }
    }
    let k = key(&s.volume, &s.name);
    let r = store
        .txn(Txn {
            when: vec![
                Compare::ModRevision(k.clone(), rev),
                Compare::ModRevision(format!("volumes/{}", v.id), vrev),
            ],
            then: vec![TxnOp::Put {
                key: k,
                value: serde_json::to_vec(&done).expect("serialises"),
                lease: None,
            }],
            otherwise: vec![],
        })
        .await?;
    Ok(r.succeeded)
}

/// Removes snapshot `name`'s record (its backend snapshot is the caller's to delete first),
/// if it is still at `rev`.
pub async fn remove(store: &dyn Store, s: &Snapshot, rev: i64) -> Result<(), VolumeError> {
    let k = key(&s.volume, &s.name);
    let r = store
        .txn(Txn {
            when: vec![Compare::ModRevision(k.clone(), rev)],
            then: vec![TxnOp::Delete { key: k }],
            otherwise: vec![],
        })
        .await?;
    if r.succeeded {
        Ok(())
    } else {
        Err(VolumeError::Conflict)
    }
}
