//! The embedded store: etcd's semantics in a map, for one process (the demo, tests). Lease
//! expiry runs on a tokio task that sleeps until the earliest deadline; nothing polls.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::{
    Compare, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, TxnResponse, Watch,
    WatchEvent,
};

/// Events kept for watches that start in the past.
const HISTORY: usize = 100_000;

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<Result<WatchEvent, StoreError>>,
}

#[derive(Default)]
struct Inner {
    revision: Revision,
    kv: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
    history: VecDeque<(Revision, WatchEvent)>,
}

impl Inner {
    fn emit(&mut self, ev: WatchEvent) {
        self.watchers
            .retain(|w| !ev.key().starts_with(&w.prefix) || w.tx.send(Ok(ev.clone())).is_ok());
        self.history.push_back((self.revision, ev));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) {
        let rev = self.revision;
        let create = self.kv.get(key).map_or(rev, |kv| kv.create_revision);
        if let Some(old) = self.kv.get(key).and_then(|kv| kv.lease) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.insert(key.to_string());
        }
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: create,
            mod_revision: rev,
            lease,
        };
        self.kv.insert(key.to_string(), kv.clone());
        self.emit(WatchEvent::Put(kv));
    }

    fn delete(&mut self, key: &str) -> bool {
        let Some(old) = self.kv.remove(key) else {
            return false;
        };
        if let Some(l) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
        let revision = self.revision;
        self.emit(WatchEvent::Delete {
            key: key.to_string(),
            revision,
        });
        true
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> Result<(), StoreError> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => Err(StoreError::LeaseNotFound(id)),
            _ => Ok(()),
        }
    }

    fn drop_lease(&mut self, id: LeaseId) -> bool {
        let Some(l) = self.leases.remove(&id) else {
            return false;
        };
        if !l.keys.is_empty() {
            self.revision += 1;
            let mut keys: Vec<_> = l.keys.into_iter().collect();
            keys.sort();
            for k in keys {
                self.delete(&k);
            }
        }
        true
    }

    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let dead: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            tracing::debug!(lease = id, "lease expired");
            self.drop_lease(id);
        }
        self.leases.values().map(|l| l.deadline).min()
    }
}

/// The embedded store. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
    leases_changed: Arc<Notify>,
}

impl MemStore {
    /// A new, empty store. Must be created inside a tokio runtime (its lease reaper is a task).
    pub fn new() -> Self {
        let s = Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            leases_changed: Arc::new(Notify::new()),
        };
        let weak = Arc::downgrade(&s.inner);
        let notify = s.leases_changed.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let next = inner.lock().expire(Instant::now());
                    next
                };
                match next {
                    Some(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(d) => {}
                            _ = notify.notified() => {}
                        }
                    }
                    None => notify.notified().await,
                }
            }
        });
        s
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    futures::future::ready(v).boxed()
}

impl Store for MemStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        ready(Ok(self.inner.lock().kv.get(key).cloned()))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        let i = self.inner.lock();
        let v =
            i.kv.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v.clone())
                .collect();
        ready(Ok(v))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        let mut i = self.inner.lock();
        let r = i.check_lease(lease).map(|()| {
            i.revision += 1;
            i.put(key, value, lease);
            i.revision
        });
        ready(r)
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut i = self.inner.lock();
        if !i.kv.contains_key(key) {
            return ready(Ok(false));
        }
        i.revision += 1;
        ready(Ok(i.delete(key)))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse, StoreError>> {
        let mut i = self.inner.lock();
        let ok = txn.when.iter().all(|c| match c {
            Compare::Missing(k) => !i.kv.contains_key(k),
            Compare::ModRevision(k, r) => i.kv.get(k).is_some_and(|kv| kv.mod_revision == *r),
            Compare::Value(k, v) => i.kv.get(k).is_some_and(|kv| &kv.value == v),
        });
        let ops = if ok { txn.then } else { txn.otherwise };
        for op in &ops {
            if let TxnOp::Put { lease, .. } = op {
                if let Err(e) = i.check_lease(*lease) {
                    return ready(Err(e));
                }
            }
        }
        let changes = ops.iter().any(|op| match op {
            TxnOp::Put { .. } => true,
            TxnOp::Delete { key } => i.kv.contains_key(key),
        });
        if changes {
            i.revision += 1;
        }
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => i.put(&key, value, lease),
                TxnOp::Delete { key } => {
                    i.delete(&key);
                }
            }
        }
        ready(Ok(TxnResponse {
            succeeded: ok,
            revision: i.revision,
        }))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start: Option<Revision>,
    ) -> BoxFuture<'a, Result<Watch, StoreError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut i = self.inner.lock();
        if let Some(start) = start {
            let oldest = i.history.front().map_or(i.revision + 1, |(r, _)| *r);
            if start < oldest && start <= i.revision {
                return ready(Err(StoreError::Compacted(start)));
            }
            for (r, ev) in &i.history {
                if *r >= start && ev.key().starts_with(prefix) {
                    let _ = tx.send(Ok(ev.clone()));
                }
            }
        }
        i.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        ready(Ok(Watch { rx, _cancel: None }))
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        let ttl = Duration::from_secs(ttl.as_secs_f64().ceil().max(1.0) as u64);
        let mut i = self.inner.lock();
        i.next_lease += 1;
        let id = i.next_lease;
        i.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
                keys: HashSet::new(),
            },
        );
        drop(i);
        self.leases_changed.notify_one();
        ready(Ok(id))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut i = self.inner.lock();
        let now = Instant::now();
        i.expire(now);
        let r = match i.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            None => Err(StoreError::LeaseNotFound(lease)),
        };
        ready(r)
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut i = self.inner.lock();
        let r = if i.drop_lease(lease) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        };
        drop(i);
        self.leases_changed.notify_one();
        ready(r)
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        ready(Ok(self.inner.lock().revision))
    }
}
