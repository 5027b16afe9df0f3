//! Attachments in the store: a host on a volume's access list. Attaching or detaching closes the
//! volume (`Volume::closed`), so that detaching the last host leaves nobody, not everybody.

use alcubierre_store::{put_if, Compare, Store};

use crate::volumes::{find, Volume, VolumeError};

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
