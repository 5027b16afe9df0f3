//! The metadata store: one interface over etcd ([`EtcdStore`]) and an embedded map for a single
//! process ([`MemStore`]), with the same semantics, checked by one conformance suite
//! (`tests/conformance.rs`) against both.
//!
//! The model is etcd's: a flat key space of strings with a global revision that every change
//! advances; each key carries the revisions of its creation and last change; transactions compare
//! keys and apply one of two lists of operations atomically; watches deliver every change under a
//! prefix in revision order, optionally from a past revision; leases expire after their TTL unless
//! kept alive and delete the keys attached to them. Leader election ([`election`]) is built on
//! those primitives once, for both implementations.
//!
//! Invariants:
//! 1. Revisions strictly increase; a transaction is one revision.
//! 2. A watch delivers each change once, in revision order, with nothing skipped.
//! 3. A key attached to a lease disappears (with a delete event) when the lease expires or is
//!    revoked.

use std::time::Duration;

use futures::future::BoxFuture;

pub mod election;
mod embedded;
mod etcd;
pub mod testing;

pub use embedded::MemStore;
pub use etcd::EtcdStore;

/// A store revision.
pub type Revision = i64;
/// A lease id.
pub type LeaseId = i64;

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: Revision,
    /// Revision of the key's last change.
    pub mod_revision: Revision,
    /// The lease the key is attached to.
    pub lease: Option<LeaseId>,
}

/// A transaction condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Missing(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, Revision),
    /// The key exists with this value.
    Value(String, Vec<u8>),
}

/// A transaction operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Sets a key (attached to a lease, or not).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease.
        lease: Option<LeaseId>,
    },
    /// Deletes a key.
    Delete {
        /// The key.
        key: String,
    },
}

/// If every comparison holds, `then` is applied, else `otherwise`; atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions.
    pub when: Vec<Compare>,
    /// Operations when every condition holds.
    pub then: Vec<TxnOp>,
    /// Operations otherwise.
    pub otherwise: Vec<TxnOp>,
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the conditions held.
    pub succeeded: bool,
    /// The store revision after it.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached or refused the request; retry later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// The watch start revision was compacted away.
    #[error("revision {0} is compacted; re-read and watch from the current revision")]
    Compacted(Revision),
}

/// A stream of changes under a prefix; dropping it cancels the watch.
pub struct Watch {
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<WatchEvent, StoreError>>,
    _cancel: Option<Box<dyn Send + Sync>>,
}

impl Watch {
    /// The next change; `None` when the watch ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.rx.recv().await
    }
}

/// Sets `key` to `value` (no lease) if every comparison holds; whether it did.
pub async fn put_if(
    store: &dyn Store,
    when: Vec<Compare>,
    key: &str,
    value: Vec<u8>,
) -> Result<bool, StoreError> {
    let r = store
        .txn(Txn {
            when,
            then: vec![TxnOp::Put {
                key: key.to_string(),
                value,
                lease: None,
            }],
            otherwise: vec![],
        })
        .await?;
    Ok(r.succeeded)
}

/// The metadata store interface.
pub trait Store: Send + Sync {
    /// One key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;
    /// Every key under `prefix`, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>>;
    /// Sets a key; returns the new revision.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>>;
    /// Deletes a key; whether it existed.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Runs a transaction.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, StoreError>>;
    /// Watches `prefix` from revision `start` (inclusive), or from now.
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: Option<Revision>,
    ) -> BoxFuture<'a, Result<Watch, StoreError>>;
    /// Grants a lease with `ttl` (rounded up to whole seconds, at least 1).
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>>;
    /// Refreshes a lease to its full TTL.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Revokes a lease, deleting its keys.
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The current revision.
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;
}

/// The smallest key greater than every key with this prefix (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
