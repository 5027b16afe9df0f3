//! Nodes in the metadata store: registration, heartbeats and activation.
//!
//! Keys:
//! * `nodes/<name>`: the node's record ([`Node`], JSON), kept across restarts;
//! * `alive/<name>`: attached to the node's heartbeat lease. It exists while heartbeats arrive,
//!   so a node's service state is *available* exactly while the key exists; when a node dies its
//!   lease expires after the heartbeat timeout and the key goes, with a watch event.
//!
//! Activation writes every candidate's transition in one transaction that also checks that no
//! record changed since it was read (compare-and-swap on each record's revision).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_store::{put_if, Compare, LeaseId, Revision, Store, StoreError, Txn, TxnOp};

use crate::activation::{self, ActivationError, Licence};
use crate::model::{transition, Activation, ActivationEvent, Node, Service, TransitionError};

/// Prefix of node records.
pub const NODES: &str = "nodes/";
/// Prefix of liveness keys.
pub const ALIVE: &str = "alive/";

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record in the store does not parse.
    #[error("node record {key} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        reason: String,
    },
    /// No such node.
    #[error("node {0} is not registered")]
    UnknownNode(String),
    /// The node's identity clashes with another node's.
    #[error("node {node}: {reason}")]
    Clash {
        /// The registering node.
        node: String,
        /// What clashes.
        reason: String,
    },
    /// The activation rules refused.
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// The state table refused.
    #[error("node {node}: {source}")]
    Transition {
        /// The node.
        node: String,
        /// The refused transition.
        source: TransitionError,
    },
    /// Records changed while the operation ran; retry.
    #[error("node records changed concurrently; retry")]
    Conflict,
    /// Nodes did not finish activating in time.
    #[error("nodes {nodes:?} did not become active within {timeout:?}")]
    NotActive {
        /// The nodes still not active.
        nodes: Vec<String>,
        /// How long it waited.
        timeout: Duration,
    },
}

fn encode(n: &Node) -> Vec<u8> {
    serde_json::to_vec(n).expect("node serialises")
}

fn decode(key: &str, v: &[u8]) -> Result<Node, RegistryError> {
    serde_json::from_slice(v).map_err(|e| RegistryError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Registers a node, or updates its devices and addresses while keeping its activation state.
pub async fn register(store: &dyn Store, node: &Node) -> Result<Node, RegistryError> {
    let key = format!("{NODES}{}", node.name);
    if let Some(me) = &node.nvme {
        for (name, (other, _)) in nodes(store).await? {
            let clash = other
                .nvme
                .filter(|_| name != node.name)
                .and_then(|o| me.conflict(&o, &name));
            if let Some(reason) = clash {
                return Err(RegistryError::Clash {
                    node: node.name.clone(),
                    reason,
                });
            }
        }
    }
    loop {
        let cur = store.get(&key).await?;
        let (record, cmp) = match &cur {
            Some(kv) => {
                let old = decode(&key, &kv.value)?;
                (
                    Node {
                        activation: old.activation,
                        draining: old.draining,
                        ..node.clone()
                    },
                    Compare::ModRevision(key.clone(), kv.mod_revision),
                )
            }
            None => (
                Node {
                    activation: Activation::Registered,
                    draining: false,
                    ..node.clone()
                },
                Compare::Missing(key.clone()),
            ),
        };
        if put_if(store, vec![cmp], &key, encode(&record)).await? {
            return Ok(record);
        }
    }
}

/// Every registered node with its record revision, by name.
pub async fn nodes(store: &dyn Store) -> Result<BTreeMap<String, (Node, Revision)>, RegistryError> {
    let mut out = BTreeMap::new();
    for kv in store.list(NODES).await? {
        let n = decode(&kv.key, &kv.value)?;
        out.insert(n.name.clone(), (n, kv.mod_revision));
    }
    Ok(out)
}

/// The service state of every node that has a liveness key or a record.
pub async fn service_states(store: &dyn Store) -> Result<BTreeMap<String, Service>, RegistryError> {
    let mut out: BTreeMap<String, Service> = store
        .list(NODES)
        .await?
        .into_iter()
        .filter_map(|kv| {
            kv.key
                .strip_prefix(NODES)
                .map(|n| (n.to_string(), Service::Unavailable))
        })
        .collect();
    for kv in store.list(ALIVE).await? {
        if let Some(n) = kv.key.strip_prefix(ALIVE) {
            out.insert(n.to_string(), Service::Available);
        }
    }
    Ok(out)
}

/// Activates `names`: checks the rules against the current records and moves each candidate to
/// Activating, atomically. Nodes finish with [`finish_activation`].
pub async fn activate(
    store: &dyn Store,
    names: &[String],
    licence: &Licence,
    now: u64,
) -> Result<(), RegistryError> {
    let all = nodes(store).await?;
    let services = service_states(store).await?;
    let mut cands = Vec::new();
    for n in names {
        let (node, rev) = all
            .get(n)
            .ok_or_else(|| RegistryError::UnknownNode(n.clone()))?;
        cands.push((
            node,
            *rev,
            services.get(n).copied().unwrap_or(Service::Unavailable),
        ));
    }
    let active: Vec<&Node> = all
        .values()
        .map(|(n, _)| n)
        .filter(|n| n.activation == Activation::Active)
        .collect();
    let with_service: Vec<(&Node, Service)> = cands.iter().map(|(n, _, s)| (*n, *s)).collect();
    activation::check(&with_service, &active, licence, now)?;
    let mut when = Vec::new();
    let mut then = Vec::new();
    for (node, rev, _) in &cands {
        let next = transition(&node.activation, ActivationEvent::Activate).map_err(|source| {
            RegistryError::Transition {
                node: node.name.clone(),
                source,
            }
        })?;
        let key = format!("{NODES}{}", node.name);
        when.push(Compare::ModRevision(key.clone(), *rev));
        then.push(TxnOp::Put {
            key,
            value: encode(&Node {
                activation: next,
                draining: false,
                ..(*node).clone()
            }),
            lease: None,
        });
    }
    if !store
        .txn(Txn {
            when,
            then,
            otherwise: vec![],
        })
        .await?
        .succeeded
    {
        return Err(RegistryError::Conflict);
    }
    Ok(())
}

/// Applies `f` to a node's record and writes it with compare-and-swap, re-reading and retrying
/// when the record changed meanwhile.
async fn update_node(
    store: &dyn Store,
    name: &str,
    f: impl Fn(Node) -> Result<Node, RegistryError>,
) -> Result<Node, RegistryError> {
    let key = format!("{NODES}{name}");
    loop {
        let kv = store
            .get(&key)
            .await?
            .ok_or_else(|| RegistryError::UnknownNode(name.to_string()))?;
        let updated = f(decode(&key, &kv.value)?)?;
        let cmp = vec![Compare::ModRevision(key.clone(), kv.mod_revision)];
        if put_if(store, cmp, &key, encode(&updated)).await? {
            return Ok(updated);
        }
    }
}

/// Applies one activation event to one node (the node reports success or failure; the operator
/// deactivates).
pub async fn apply(
    store: &dyn Store,
    name: &str,
    ev: ActivationEvent,
) -> Result<Node, RegistryError> {
    update_node(store, name, |node| {
        let next = transition(&node.activation, ev.clone()).map_err(|source| {
            RegistryError::Transition {
                node: name.to_string(),
                source,
            }
        })?;
        Ok(Node {
            activation: next,
            ..node
        })
    })
    .await
}

/// Starts (or stops) draining a node: it takes no new replicas and the leader moves its
/// replicas to other nodes. Only an active node can be drained.
pub async fn set_draining(
    store: &dyn Store,
    name: &str,
    draining: bool,
) -> Result<Node, RegistryError> {
    update_node(store, name, |node| {
        if draining && node.activation != Activation::Active {
            return Err(RegistryError::Transition {
                node: name.to_string(),
                source: TransitionError {
                    from: node.activation.name(),
                    event: "be drained",
                },
            });
        }
        Ok(Node { draining, ..node })
    })
    .await
}

/// Records the health of a node's cache devices (in device order), as the node observes them.
pub async fn set_cache_states(
    store: &dyn Store,
    name: &str,
    states: &[crate::model::CacheState],
) -> Result<Node, RegistryError> {
    update_node(store, name, |mut node| {
        for (d, s) in node.cache.iter_mut().zip(states) {
            d.state = *s;
        }
        Ok(node)
    })
    .await
}

/// A node finishing its activation: success when its cache devices are all healthy.
pub async fn finish_activation(store: &dyn Store, node: &Node) -> Result<Node, RegistryError> {
    let ev = match node
        .cache
        .iter()
        .find(|c| c.state != crate::model::CacheState::Healthy)
    {
        None => ActivationEvent::Succeeded,
        Some(c) => ActivationEvent::Failed(format!("cache device {} is {:?}", c.path, c.state)),
    };
    apply(store, &node.name, ev).await
}

/// A running heartbeat: keeps `alive/<name>` on a lease of `timeout`, refreshed every
/// `interval`. Dropping it stops the heartbeats (the key expires after the timeout), as a
/// crashed node's would.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    name: String,
    timing: (Duration, Duration),
    last_ok: LastOk,
}

/// When the newest successful heartbeat round trip started (shared across restarts of the
/// heartbeat): the node's store lease runs from there.
pub type LastOk = Arc<std::sync::Mutex<Option<std::time::Instant>>>;

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    /// Starts heartbeating for `name`.
    pub async fn start(
        store: Arc<dyn Store>,
        name: &str,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::start_with(store, name, interval, timeout, LastOk::default()).await
    }

    async fn start_with(
        store: Arc<dyn Store>,
        name: &str,
        interval: Duration,
        timeout: Duration,
        last_ok: LastOk,
    ) -> Result<Self, StoreError> {
        let key = format!("{ALIVE}{name}");
        let t0 = std::time::Instant::now();
        let mut lease = Self::announce(&*store, &key, timeout).await?;
        *last_ok.lock().expect("not poisoned") = Some(t0);
        let handle = store.clone();
        let clock = last_ok.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t0 = std::time::Instant::now();
                match store.keep_alive(lease).await {
                    Ok(()) => {
                        *clock.lock().expect("not poisoned") = Some(t0);
                    }
                    Err(StoreError::LeaseNotFound(_)) => {
                        // Expired (e.g. the store was unreachable for longer than the timeout):
                        // announce again.
                        tracing::warn!(key, "heartbeat lease expired; re-announcing");
                        match Self::announce(&*store, &key, timeout).await {
                            Ok(l) => lease = l,
                            Err(e) => tracing::warn!(key, "re-announce failed: {e}"),
                        }
                    }
                    Err(e) => tracing::warn!(key, "heartbeat failed: {e}"),
                }
            }
        });
        Ok(Self {
            task,
            store: handle,
            name: name.to_string(),
            timing: (interval, timeout),
            last_ok,
        })
    }

    /// The shared clock of successful round trips.
    pub fn last_ok(&self) -> LastOk {
        self.last_ok.clone()
    }

    /// The interval and timeout in use.
    pub fn timing(&self) -> (Duration, Duration) {
        self.timing
    }

    /// A heartbeat for the same node with new timing: the key moves to a new lease at once (the
    /// node stays available throughout); drop `self` afterwards.
    pub async fn restart(&self, interval: Duration, timeout: Duration) -> Result<Self, StoreError> {
        Self::start_with(
            self.store.clone(),
            &self.name,
            interval,
            timeout,
            self.last_ok.clone(),
        )
        .await
    }

    async fn announce(
        store: &dyn Store,
        key: &str,
        timeout: Duration,
    ) -> Result<LeaseId, StoreError> {
        let lease = store.grant(timeout).await?;
        store.put(key, b"1".to_vec(), Some(lease)).await?;
        Ok(lease)
    }
}

/// Waits until every node in `names` is active (their agents finish activation), or fails after
/// `timeout` naming the ones that are not.
pub async fn wait_active(
    store: &dyn Store,
    names: &[String],
    timeout: Duration,
) -> Result<(), RegistryError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = nodes(store).await?;
        let pending: Vec<&String> = names
            .iter()
            .filter(|n| {
                !all.get(*n)
                    .is_some_and(|(r, _)| r.activation == Activation::Active)
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RegistryError::NotActive {
                nodes: pending.into_iter().cloned().collect(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
