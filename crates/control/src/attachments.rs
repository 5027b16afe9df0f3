//! Attachments in the store: a host on a volume's access list. Attaching or detaching closes the
//! volume (`Volume::closed`), so that detaching the last host leaves nobody, not everybody.
//!
//! A force detach also fences the host: a [`Fence`] request at `fences/<volume>/<host>` names
//! the host's reservation identities; the volume's primary removes their registrations (saved
//! in the store like any reservation change) and then deletes the request.

use std::collections::BTreeMap;
use std::time::Duration;

use alcubierre_store::{put_if, Compare, Store, StoreError, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::volumes::{find, Host, Volume, VolumeError};

pub use crate::volumes::FENCES;

/// The NVMe host NQNs whose last part is the host's UUID (`nvme-cli` uses it as the Host
/// Identifier when `/etc/nvme/hostid` is missing).
const UUID_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// A request to remove a host's persistent reservations on a volume (NVMe registrations by
/// Host Identifier, SCSI registrations of every I_T nexus of its initiator name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The volume's id.
    pub volume: String,
    /// The host's name.
    pub host: String,
    /// Its NVMe Host Identifiers, as UUIDs.
    #[serde(default)]
    pub nvme_hostids: Vec<String>,
    /// Its iSCSI initiator name.
    #[serde(default)]
    pub iqn: Option<String>,
}

impl Fence {
    /// The request to fence `host` off volume `volume`: the Host Identifier it registered, or
    /// the UUID of a `nqn.2014-08.org.nvmexpress:uuid:` NQN, and its IQN.
    pub fn of(volume: &str, host: &Host) -> Self {
        let mut ids: Vec<String> = host.nvme_hostid.iter().cloned().collect();
        let from_nqn = host
            .nqn
            .as_deref()
            .and_then(|n| n.strip_prefix(UUID_NQN))
            .and_then(crate::volumes::canonical_uuid);
        ids.extend(from_nqn.filter(|id| !ids.contains(id)));
        Fence {
            volume: volume.to_string(),
            host: host.name.clone(),
            nvme_hostids: ids,
            iqn: host.iqn.clone(),
        }
    }

    /// Its key in the store.
    pub fn key(&self) -> String {
        format!("{FENCES}{}/{}", self.volume, self.host)
    }

    /// The NVMe Host Identifiers as bytes (ones that are not UUIDs are skipped).
    pub fn host_ids(&self) -> Vec<[u8; 16]> {
        self.nvme_hostids
            .iter()
            .filter_map(|s| {
                let hex: String = s.chars().filter(|c| *c != '-').collect();
                let v = u128::from_str_radix(&hex, 16).ok()?;
                (hex.len() == 32).then(|| v.to_be_bytes())
            })
            .collect()
    }
}

/// Writes (or replaces) the request to fence `host` off `volume`.
pub async fn request_fence(store: &dyn Store, fence: &Fence) -> Result<(), StoreError> {
    let value = serde_json::to_vec(fence).expect("serialises");
    store.put(&fence.key(), value, None).await?;
    Ok(())
}

/// A pending fence request and the revision it was last written at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFence {
    /// The request.
    pub fence: Fence,
    /// Its record's revision (its deletion is conditional on it, so a request written again
    /// meanwhile is applied again).
    pub revision: i64,
}

/// Pending fence requests, by volume id. A record that cannot be read is logged and left.
pub async fn fences(store: &dyn Store) -> Result<BTreeMap<String, Vec<PendingFence>>, StoreError> {
    let mut out: BTreeMap<String, Vec<PendingFence>> = BTreeMap::new();
    for kv in store.list(FENCES).await? {
        match serde_json::from_slice::<Fence>(&kv.value) {
            Ok(f) if kv.key == f.key() => {
                out.entry(f.volume.clone()).or_default().push(PendingFence {
                    fence: f,
                    revision: kv.mod_revision,
                })
            }
            _ => {
                tracing::warn!(key = %kv.key, "a fence request that cannot be read: left as it is")
            }
        }
    }
    Ok(out)
}

/// The primary applied `f`: its request goes, unless it was written again since.
pub async fn fence_done(store: &dyn Store, f: &PendingFence) -> Result<bool, StoreError> {
    let key = f.fence.key();
    let r = store
        .txn(Txn {
            when: vec![Compare::ModRevision(key.clone(), f.revision)],
            then: vec![TxnOp::Delete { key }],
            otherwise: vec![],
        })
        .await?;
    Ok(r.succeeded)
}

/// Waits up to `wait` for the request at `key` to be applied (deleted); whether it was.
pub async fn await_fence(store: &dyn Store, key: &str, wait: Duration) -> Result<bool, StoreError> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if store.get(key).await?.is_none() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts host `host` (which must exist) on the volume's access list: an attachment. Returns the
/// volume and whether the host was added (attaching twice changes nothing).
pub async fn attach_host(
    store: &dyn Store,
    id_or_name: &str,
    host: &str,
) -> Result<(Volume, bool), VolumeError> {
    if store.get(&format!("hosts/{host}")).await?.is_none() {
        return Err(VolumeError::NotFound(format!("host {host:?}")));
    }
    change_hosts(store, id_or_name, |v| {
        if v.closed && v.hosts.iter().any(|h| h == host) {
            return false;
        }
        if !v.hosts.iter().any(|h| h == host) {
            v.hosts.push(host.to_string());
            v.hosts.sort();
        }
        v.closed = true;
        true
    })
    .await
}

/// Takes host `host` off the volume's access list. Returns the volume and whether the host was
/// on it (detaching twice changes nothing).
pub async fn detach_host(
    store: &dyn Store,
    id_or_name: &str,
    host: &str,
) -> Result<(Volume, bool), VolumeError> {
    let mut was = false;
    let r = change_hosts(store, id_or_name, |v| {
        was = v.hosts.iter().any(|h| h == host);
        // A host that is not attached changes nothing (an open volume stays open).
        if !was {
            return false;
        }
        v.hosts.retain(|h| h != host);
        // The last host leaving leaves nobody, never everybody.
        v.closed = true;
        true
    })
    .await?;
    Ok((r.0, was))
}

/// Applies `f` to the volume, retrying when another change raced it; writes only when `f`
/// says it changed it.
async fn change_hosts(
    store: &dyn Store,
    id_or_name: &str,
    mut f: impl FnMut(&mut Volume) -> bool,
) -> Result<(Volume, bool), VolumeError> {
    for _ in 0..16 {
        let (mut v, rev) = find(store, id_or_name).await?;
        if !f(&mut v) {
            return Ok((v, false));
        }
        v.stamp();
        let key = format!("volumes/{}", v.id);
        let cmp = vec![Compare::ModRevision(key.clone(), rev)];
        let value = serde_json::to_vec(&v).expect("serialises");
        if put_if(store, cmp, &key, value).await? {
            return Ok((v, true));
        }
    }
    Err(VolumeError::Conflict)
}
