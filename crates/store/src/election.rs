//! Leader election on any [`Store`]: the leader is whoever created `election/<name>` attached to
//! its lease. A candidate creates the key when it is missing (one transaction), or waits for the
//! current leader's key to disappear (resignation, or its lease expired) and tries again. The
//! leadership's revision orders leaders: a newer leader has a higher one.

use crate::{Compare, LeaseId, Revision, Store, StoreError, Txn, TxnOp, WatchEvent};

/// Prefix of election keys.
pub const PREFIX: &str = "election/";

/// A won election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The election key.
    pub key: String,
    /// The revision at which leadership was won.
    pub revision: Revision,
}

/// Campaigns in election `name` as `candidate` on `lease`; returns once elected.
pub async fn campaign(
    store: &dyn Store,
    name: &str,
    candidate: &str,
    lease: LeaseId,
) -> Result<Leadership, StoreError> {
    let key = format!("{PREFIX}{name}");
    loop {
        let r = store
            .txn(Txn {
                when: vec![Compare::Missing(key.clone())],
                then: vec![TxnOp::Put {
                    key: key.clone(),
                    value: candidate.as_bytes().to_vec(),
                    lease: Some(lease),
                }],
                otherwise: vec![],
            })
            .await?;
        if r.succeeded {
            return Ok(Leadership {
                key,
                revision: r.revision,
            });
        }
        // Someone leads: wait until the key is deleted, then try again.
        let Some(cur) = store.get(&key).await? else {
            continue;
        };
        let mut w = store.watch(&key, Some(cur.mod_revision + 1)).await?;
        while let Some(ev) = w.next().await {
            if matches!(ev?, WatchEvent::Delete { key: k, .. } if k == key) {
                break;
            }
        }
    }
}

/// The current leader of election `name`, if any.
pub async fn leader(store: &dyn Store, name: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(&format!("{PREFIX}{name}"))
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Gives up leadership (only if still held at that revision).
pub async fn resign(store: &dyn Store, l: &Leadership) -> Result<bool, StoreError> {
    let r = store
        .txn(Txn {
            when: vec![Compare::ModRevision(l.key.clone(), l.revision)],
            then: vec![TxnOp::Delete { key: l.key.clone() }],
            otherwise: vec![],
        })
        .await?;
    Ok(r.succeeded)
}
