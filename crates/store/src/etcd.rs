//! The etcd implementation (etcd v3 API over gRPC, `etcd-client`).

use std::time::Duration;

use etcd_client::{
    Client, Compare as ECompare, CompareOp, EventType, GetOptions, PutOptions, Txn as ETxn,
    TxnOp as ETxnOp, WatchOptions,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::{
    prefix_end, Compare, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, TxnResponse,
    Watch, WatchEvent,
};

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

fn err(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn lease_err(id: LeaseId, e: etcd_client::Error) -> StoreError {
    if e.to_string().contains("lease not found") {
        StoreError::LeaseNotFound(id)
    } else {
        err(e)
    }
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        lease: (k.lease() != 0).then_some(k.lease()),
    }
}

fn put_opts(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|l| PutOptions::new().with_lease(l))
}

impl EtcdStore {
    /// Connects to the etcd endpoints (`http://host:port`), failing after `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = Client::connect(endpoints, Some(opts)).await.map_err(err)?;
        Ok(Self { client })
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let r = c.get(key, None).await.map_err(err)?;
            Ok(r.kvs().first().map(kv))
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let r = c
                .get(
                    prefix,
                    Some(GetOptions::new().with_range(prefix_end(prefix))),
                )
                .await
                .map_err(err)?;
            Ok(r.kvs().iter().map(kv).collect())
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let r = c
                .put(key, value, put_opts(lease))
                .await
                .map_err(|e| lease_err(lease.unwrap_or(0), e))?;
            Ok(r.header().map_or(0, |h| h.revision()))
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let r = c.delete(key, None).await.map_err(err)?;
            Ok(r.deleted() > 0)
        }
        .boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let when: Vec<ECompare> = txn
                .when
                .into_iter()
                .map(|w| match w {
                    Compare::Missing(k) => ECompare::create_revision(k, CompareOp::Equal, 0),
                    Compare::ModRevision(k, r) => ECompare::mod_revision(k, CompareOp::Equal, r),
                    Compare::Value(k, v) => ECompare::value(k, CompareOp::Equal, v),
                })
                .collect();
            let lease = txn
                .then
                .iter()
                .chain(&txn.otherwise)
                .find_map(|op| match op {
                    TxnOp::Put { lease, .. } => *lease,
                    TxnOp::Delete { .. } => None,
                })
                .unwrap_or(0);
            let ops = |v: Vec<TxnOp>| -> Vec<ETxnOp> {
                v.into_iter()
                    .map(|op| match op {
                        TxnOp::Put { key, value, lease } => {
                            ETxnOp::put(key, value, put_opts(lease))
                        }
                        TxnOp::Delete { key } => ETxnOp::delete(key, None),
                    })
                    .collect()
            };
            let t = ETxn::new()
                .when(when)
                .and_then(ops(txn.then))
                .or_else(ops(txn.otherwise));
            let r = c.txn(t).await.map_err(|e| lease_err(lease, e))?;
            Ok(TxnResponse {
                succeeded: r.succeeded(),
                revision: r.header().map_or(0, |h| h.revision()),
            })
        }
        .boxed()
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: Option<Revision>,
    ) -> BoxFuture<'a, Result<Watch, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let mut opts = WatchOptions::new().with_range(prefix_end(prefix));
            if let Some(r) = start {
                opts = opts.with_start_revision(r);
            }
            let mut stream = c.watch(prefix, Some(opts)).await.map_err(err)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let _ =
                                    tx.send(Err(StoreError::Compacted(resp.compact_revision())));
                                return;
                            }
                            for ev in resp.events() {
                                let Some(k) = ev.kv() else { continue };
                                let e = match ev.event_type() {
                                    EventType::Put => WatchEvent::Put(kv(k)),
                                    EventType::Delete => WatchEvent::Delete {
                                        key: String::from_utf8_lossy(k.key()).into_owned(),
                                        revision: k.mod_revision(),
                                    },
                                };
                                if tx.send(Ok(e)).is_err() {
                                    return;
                                }
                            }
                            if resp.canceled() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(err(e)));
                            return;
                        }
                    }
                }
            });
            Ok(Watch {
                rx,
                _cancel: Some(Box::new(AbortOnDrop(task))),
            })
        }
        .boxed()
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
            let r = c.lease_grant(secs, None).await.map_err(err)?;
            if r.ttl() > secs {
                // etcd's shortest lease is 1.5 election timeouts (2 s with its defaults).
                tracing::warn!(
                    asked = secs,
                    granted = r.ttl(),
                    "etcd granted a longer lease than asked (its minimum TTL)"
                );
            }
            Ok(r.id())
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut c = self.client.clone();
        async move {
            let (mut keeper, mut stream) = c
                .lease_keep_alive(lease)
                .await
                .map_err(|e| lease_err(lease, e))?;
            keeper.keep_alive().await.map_err(|e| lease_err(lease, e))?;
            match stream.message().await.map_err(|e| lease_err(lease, e))? {
                Some(r) if r.ttl() > 0 => Ok(()),
                _ => Err(StoreError::LeaseNotFound(lease)),
            }
        }
        .boxed()
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut c = self.client.clone();
        async move {
            c.lease_revoke(lease)
                .await
                .map_err(|e| lease_err(lease, e))?;
            Ok(())
        }
        .boxed()
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let r = c.get("\0", None).await.map_err(err)?;
            Ok(r.header().map_or(0, |h| h.revision()))
        }
        .boxed()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
