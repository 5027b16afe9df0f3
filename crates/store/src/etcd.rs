//! The etcd implementation: etcd's v3 gRPC API over tonic, with the client generated at build
//! time from `proto/etcd.proto` (the part of etcd's API this store uses).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::{
    prefix_end, Compare, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, TxnResponse,
    Watch, WatchEvent,
};

/// The generated messages and clients.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::request_op::Request;
use pb::watch_client::WatchClient;
use pb::watch_request::RequestUnion;

/// The largest response decoded: a prefix list of the whole store must fit (tonic's default
/// is 4 MiB; etcd's own limit on a response is its gRPC default, 2 GiB).
const MAX_RESPONSE: usize = 1 << 30;

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
}

fn err(e: tonic::Status) -> StoreError {
    let msg = e.message();
    StoreError::Unavailable(if msg.is_empty() {
        format!("etcd: {}", e.code())
    } else {
        format!("etcd: {msg} ({})", e.code())
    })
}

/// etcd answers NOT_FOUND "etcdserver: requested lease not found" for a lease that expired or
/// was revoked.
fn lease_err(id: LeaseId, e: tonic::Status) -> StoreError {
    if e.code() == tonic::Code::NotFound || e.message().contains("lease not found") {
        StoreError::LeaseNotFound(id)
    } else {
        err(e)
    }
}

fn kv(k: pb::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(&k.key).into_owned(),
        value: k.value,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        lease: (k.lease != 0).then_some(k.lease),
    }
}

fn revision(h: Option<pb::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision)
}

/// One request, then a stream that stays open: etcd ends a watch or keep-alive stream when
/// the client closes its side.
fn one_then_open<T: Send + 'static>(first: T) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::once(async move { first }).chain(futures::stream::pending())
}

fn put_request(key: String, value: Vec<u8>, lease: Option<LeaseId>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into_bytes(),
        value,
        lease: lease.unwrap_or(0),
    }
}

fn compare(c: Compare) -> pb::Compare {
    let (key, target, value) = match c {
        // A key that does not exist has create revision 0.
        Compare::Missing(k) => (k, CompareTarget::Create, TargetUnion::CreateRevision(0)),
        Compare::ModRevision(k, r) => (k, CompareTarget::Mod, TargetUnion::ModRevision(r)),
        Compare::Value(k, v) => (k, CompareTarget::Value, TargetUnion::Value(v)),
    };
    pb::Compare {
        result: CompareResult::Equal.into(),
        target: target.into(),
        key: key.into_bytes(),
        target_union: Some(value),
    }
}

fn request_op(op: TxnOp) -> pb::RequestOp {
    let request = match op {
        TxnOp::Put { key, value, lease } => Request::RequestPut(put_request(key, value, lease)),
        TxnOp::Delete { key } => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.into_bytes(),
            range_end: Vec::new(),
        }),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

impl EtcdStore {
    /// Connects to the etcd endpoints (`http://host:port`), spreading requests over them; a
    /// request (or a connection attempt) fails after `timeout`. The connections are made on
    /// first use: an unreachable cluster fails the first request with
    /// [`StoreError::Unavailable`].
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoints given".into()));
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let e = Endpoint::from_shared(url.clone())
                .map_err(|e| {
                    StoreError::Unavailable(format!("etcd endpoint {url:?} is not a URL: {e}"))
                })?
                .connect_timeout(timeout)
                .timeout(timeout)
                .tcp_nodelay(true)
                // Dead connections are noticed within a few seconds, not at the OS's TCP timeout.
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
            list.push(e);
        }
        let channel = Channel::balance_list(list.into_iter());
        Ok(Self {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE),
            watch: WatchClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE),
            lease: LeaseClient::new(channel),
        })
    }

    async fn range(&self, key: &str, range_end: Vec<u8>) -> Result<pb::RangeResponse, StoreError> {
        let r = self
            .kv
            .clone()
            .range(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                range_end,
                limit: 0,
                revision: 0,
            })
            .await
            .map_err(err)?;
        Ok(r.into_inner())
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        async move {
            let r = self.range(key, Vec::new()).await?;
            Ok(r.kvs.into_iter().next().map(kv))
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        async move {
            let r = self.range(prefix, prefix_end(prefix)).await?;
            Ok(r.kvs.into_iter().map(kv).collect())
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        async move {
            let r = self
                .kv
                .clone()
                .put(put_request(key.to_string(), value, lease))
                .await
                .map_err(|e| lease_err(lease.unwrap_or(0), e))?;
            Ok(revision(r.into_inner().header))
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let r = self
                .kv
                .clone()
                .delete_range(pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: Vec::new(),
                })
                .await
                .map_err(err)?;
            Ok(r.into_inner().deleted > 0)
        }
        .boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, StoreError>> {
        async move {
            let lease = txn
                .then
                .iter()
                .chain(&txn.otherwise)
                .find_map(|op| match op {
                    TxnOp::Put { lease, .. } => *lease,
                    TxnOp::Delete { .. } => None,
                })
                .unwrap_or(0);
            let request = pb::TxnRequest {
                compare: txn.when.into_iter().map(compare).collect(),
                success: txn.then.into_iter().map(request_op).collect(),
                failure: txn.otherwise.into_iter().map(request_op).collect(),
            };
            let r = self
                .kv
                .clone()
                .txn(request)
                .await
                .map_err(|e| lease_err(lease, e))?
                .into_inner();
            Ok(TxnResponse {
                succeeded: r.succeeded,
                revision: revision(r.header),
            })
        }
        .boxed()
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: Option<Revision>,
    ) -> BoxFuture<'a, Result<Watch, StoreError>> {
        async move {
            let create = pb::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision: start.unwrap_or(0),
                })),
            };
            let mut stream = self
                .watch
                .clone()
                .watch(one_then_open(create))
                .await
                .map_err(err)?
                .into_inner();
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    let resp = match stream.message().await {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(err(e)));
                            return;
                        }
                    };
                    if resp.compact_revision > 0 {
                        let _ = tx.send(Err(StoreError::Compacted(resp.compact_revision)));
                        return;
                    }
                    for ev in resp.events {
                        let Some(k) = ev.kv else { continue };
                        let e = match pb::event::EventType::try_from(ev.r#type) {
                            Ok(pb::event::EventType::Put) => WatchEvent::Put(kv(k)),
                            Ok(pb::event::EventType::Delete) => WatchEvent::Delete {
                                key: String::from_utf8_lossy(&k.key).into_owned(),
                                revision: k.mod_revision,
                            },
                            Err(_) => {
                                let _ = tx.send(Err(StoreError::Unavailable(format!(
                                    "etcd: a watch event of unknown type {}",
                                    ev.r#type
                                ))));
                                return;
                            }
                        };
                        if tx.send(Ok(e)).is_err() {
                            return;
                        }
                    }
                    if resp.canceled {
                        let _ = tx.send(Err(StoreError::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            resp.cancel_reason
                        ))));
                        return;
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
        async move {
            let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
            let r = self
                .lease
                .clone()
                .lease_grant(pb::LeaseGrantRequest { ttl: secs, id: 0 })
                .await
                .map_err(err)?
                .into_inner();
            if !r.error.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "etcd refused a lease: {}",
                    r.error
                )));
            }
            if r.ttl > secs {
                // etcd's shortest lease is 1.5 election timeouts (2 s with its defaults).
                tracing::warn!(
                    asked = secs,
                    granted = r.ttl,
                    "etcd granted a longer lease than asked (its minimum TTL)"
                );
            }
            Ok(r.id)
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let mut stream = self
                .lease
                .clone()
                .lease_keep_alive(one_then_open(pb::LeaseKeepAliveRequest { id: lease }))
                .await
                .map_err(|e| lease_err(lease, e))?
                .into_inner();
            // etcd answers a lease it does not know with TTL 0 (or less).
            match stream.message().await.map_err(|e| lease_err(lease, e))? {
                Some(r) if r.ttl > 0 => Ok(()),
                _ => Err(StoreError::LeaseNotFound(lease)),
            }
        }
        .boxed()
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.lease
                .clone()
                .lease_revoke(pb::LeaseRevokeRequest { id: lease })
                .await
                .map_err(|e| lease_err(lease, e))?;
            Ok(())
        }
        .boxed()
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        async move {
            let r = self.range("\0", Vec::new()).await?;
            Ok(revision(r.header))
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
