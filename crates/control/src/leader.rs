//! The leader: every node campaigns in the store's election `leader`; the winner runs the
//! reconcilers ([`crate::reconcile`]) until it loses its lease.
//!
//! A round reads the cluster configuration, the nodes, their service states and every volume,
//! applies the rules to each volume and writes the volumes that changed. Each write is a
//! transaction that compares the volume's revision *and* the leadership key's revision, so a
//! deposed leader (its lease expired while it was paused) cannot overwrite a newer leader's
//! decisions: fencing by the store. Rounds run when a node record, a heartbeat or a volume
//! changes, when a primary leaves a request (`replica-requests/<volume>/<node>`: drop or add an
//! in-sync member, or a new epoch after its restart; handled first, each in one transaction with
//! its volume), and every second (for the migration delay).
//!
//! How long a node has been unavailable is measured by the leader from when it first saw it so;
//! a new leader starts counting afresh, which delays a migration, never hastens one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcubierre_store::election::{self, Leadership};
use alcubierre_store::{put_if, Compare, Store, StoreError, Txn, TxnOp};
use alcubierre_types::NodeId;

use crate::cluster;
use crate::model::Service;
use crate::reconcile::{apply_request, reconcile, Change, ReplicaRequest, View};
use crate::registry;
use crate::volumes;

/// The election's name.
pub const ELECTION: &str = "leader";

/// Where primaries leave requests for the leader.
pub const REQUESTS: &str = "replica-requests/";

/// A primary asks the leader to change its volume's replica set (`node` is the member the
/// request is about; a newer request about the same member replaces an unhandled one).
pub async fn request(
    store: &dyn Store,
    volume: &str,
    node: &str,
    req: &ReplicaRequest,
) -> Result<(), StoreError> {
    store
        .put(
            &format!("{REQUESTS}{volume}/{node}"),
            serde_json::to_vec(req).expect("serialises"),
            None,
        )
        .await?;
    Ok(())
}

/// The current leader's name, if any.
pub async fn current(store: &dyn Store) -> Result<Option<String>, StoreError> {
    election::leader(store, ELECTION).await
}

/// Campaigns as `candidate` and leads when elected, forever (cancel by aborting the task).
pub async fn run(store: Arc<dyn Store>, candidate: String) {
    loop {
        if let Err(e) = term(&store, &candidate).await {
            tracing::warn!(node = %candidate, "leadership ended: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One term: take a lease, win the election, lead until the lease is lost.
async fn term(store: &Arc<dyn Store>, candidate: &str) -> Result<(), StoreError> {
    let cfg = cluster::load(&**store).await.unwrap_or_default();
    let ttl = Duration::from_millis(cfg.heartbeat_timeout_ms);
    let lease = store.grant(ttl).await?;
    let lost = Arc::new(AtomicBool::new(false));
    let _keeper = AbortOnDrop({
        let store = store.clone();
        let lost = lost.clone();
        let every = Duration::from_millis(cfg.heartbeat_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.keep_alive(lease).await {
                    Ok(()) => {}
                    Err(StoreError::LeaseNotFound(_)) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => tracing::warn!("leader lease keep-alive failed: {e}"),
                }
            }
        })
    });
    let r = async {
        let l = election::campaign(&**store, ELECTION, candidate, lease).await?;
        tracing::info!(node = %candidate, revision = l.revision, "elected leader");
        lead(
            store,
            &l,
            &lost,
            (cfg.heartbeat_interval_ms, cfg.heartbeat_timeout_ms),
        )
        .await
    }
    .await;
    let _ = store.revoke(lease).await;
    r
}

/// Stops the lease keeper when the term ends, including when the term's task is aborted (then
/// the lease expires after its TTL, as a crashed leader's would).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Leads until the lease is lost, or until the heartbeat timing in the configuration differs
/// from `timing` (the term's lease was granted with it: a new term takes a lease that expires
/// as fast as the nodes' heartbeats, so a dead leader is replaced as fast as a dead node).
async fn lead(
    store: &Arc<dyn Store>,
    l: &Leadership,
    lost: &AtomicBool,
    timing: (u64, u64),
) -> Result<(), StoreError> {
    let mut leader = Leader::default();
    let mut watches = (
        store.watch(registry::NODES, None).await?,
        store.watch(registry::ALIVE, None).await?,
        store.watch("volumes/", None).await?,
        store.watch(REQUESTS, None).await?,
    );
    loop {
        if lost.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the leader lease expired".into()));
        }
        if let Ok(c) = cluster::load(&**store).await {
            if (c.heartbeat_interval_ms, c.heartbeat_timeout_ms) != timing {
                tracing::info!("heartbeat timing changed: leading again under a new lease");
                return Ok(());
            }
        }
        match leader.round(&**store, l).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(StoreError::Unavailable(
                    "another node holds the leadership".into(),
                ))
            }
            Err(e) => tracing::warn!("reconcile round failed: {e}"),
        }
        let ev = tokio::select! {
            e = watches.0.next() => e,
            e = watches.1.next() => e,
            e = watches.2.next() => e,
            e = watches.3.next() => e,
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        match ev {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(StoreError::Unavailable("a watch ended".into())),
        }
    }
}

/// The leader's memory between rounds.
#[derive(Default)]
pub struct Leader {
    down_since: BTreeMap<String, Instant>,
    stuck: BTreeSet<(String, NodeId)>,
}

impl Leader {
    /// One reconcile round; `Ok(false)` when the leadership was lost.
    pub async fn round(&mut self, store: &dyn Store, l: &Leadership) -> Result<bool, RoundError> {
        let config = cluster::load(store).await?;
        let nodes: BTreeMap<_, _> = registry::nodes(store)
            .await?
            .into_iter()
            .map(|(k, (n, _))| (k, n))
            .collect();
        let services = registry::service_states(store).await?;
        let now = Instant::now();
        for (n, s) in &services {
            if *s == Service::Available {
                self.down_since.remove(n);
            } else {
                self.down_since.entry(n.clone()).or_insert(now);
            }
        }
        let down_for = self
            .down_since
            .iter()
            .map(|(n, t)| (n.clone(), now - *t))
            .collect();
        let view = View {
            nodes: &nodes,
            services: &services,
            down_for: &down_for,
            config: &config,
        };
        if !self.requests(store, l, &view).await? {
            return Ok(false);
        }
        let mut vols = Vec::new();
        for kv in store.list("volumes/").await? {
            // A record this release cannot read is left as it is: never rewritten.
            match volumes::parse(&kv.key, &kv.value) {
                Ok(v) => vols.push((v, kv.mod_revision)),
                Err(u) => tracing::warn!(key = %u.key, "volume record not acted on: {}", u.reason),
            }
        }
        let mut candidates = view.candidates(vols.iter().map(|(v, _)| v));
        let mut stuck = BTreeSet::new();
        for (v, rev) in &vols {
            let mut next = v.clone();
            let changes = reconcile(&mut next, &view, &mut candidates);
            for c in &changes {
                log_change(&next, c, &mut stuck, &self.stuck);
            }
            if next == *v {
                continue;
            }
            let key = format!("volumes/{}", v.id);
            let written = put_if(
                store,
                vec![
                    Compare::ModRevision(key.clone(), *rev),
                    Compare::ModRevision(l.key.clone(), l.revision),
                ],
                &key,
                serde_json::to_vec(&next).expect("serialises"),
            )
            .await?;
            // On a conflict either the leadership was lost, or the volume changed meanwhile
            // (resized, deleted) and the next round sees it.
            if !written && !still_leader(store, l).await? {
                return Ok(false);
            }
        }
        self.stuck = stuck;
        Ok(true)
    }
}

impl Leader {
    /// Handles the primaries' requests: each applied one is written with its volume in one
    /// transaction that also deletes it; refused ones are deleted. `Ok(false)` when the
    /// leadership was lost.
    async fn requests(
        &mut self,
        store: &dyn Store,
        l: &Leadership,
        view: &View<'_>,
    ) -> Result<bool, RoundError> {
        for kv in store.list(REQUESTS).await? {
            let delete = TxnOp::Delete {
                key: kv.key.clone(),
            };
            let vol_id = kv
                .key
                .strip_prefix(REQUESTS)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default()
                .to_string();
            let parsed = serde_json::from_slice::<ReplicaRequest>(&kv.value);
            let found = volumes::find(store, &vol_id).await;
            let (req, (mut v, rev)) = match (parsed, found) {
                (Ok(r), Ok(f)) => (r, f),
                _ => {
                    tracing::warn!(key = %kv.key, "dropping a request for no volume or unreadable");
                    store
                        .txn(Txn {
                            when: vec![Compare::ModRevision(kv.key.clone(), kv.mod_revision)],
                            then: vec![delete],
                            otherwise: vec![],
                        })
                        .await?;
                    continue;
                }
            };
            let key = format!("volumes/{}", v.id);
            let mut then = vec![delete];
            match apply_request(&mut v, &req, view) {
                Ok(()) => {
                    tracing::info!(volume = %v.name, ?req, epoch = v.epoch.0, "replica set changed at the primary's request");
                    then.push(TxnOp::Put {
                        key: key.clone(),
                        value: serde_json::to_vec(&v).expect("serialises"),
                        lease: None,
                    });
                }
                Err(why) => tracing::info!(volume = %v.name, ?req, "request refused: {why}"),
            }
            let r = store
                .txn(Txn {
                    when: vec![
                        Compare::ModRevision(kv.key.clone(), kv.mod_revision),
                        Compare::ModRevision(key, rev),
                        Compare::ModRevision(l.key.clone(), l.revision),
                    ],
                    then,
                    otherwise: vec![],
                })
                .await?;
            if !r.succeeded && !still_leader(store, l).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether `l` still holds the leadership (its key unchanged since it was won).
async fn still_leader(store: &dyn Store, l: &Leadership) -> Result<bool, StoreError> {
    Ok(store
        .get(&l.key)
        .await?
        .is_some_and(|kv| kv.mod_revision == l.revision))
}

fn log_change(
    v: &volumes::Volume,
    c: &Change,
    stuck: &mut BTreeSet<(String, NodeId)>,
    before: &BTreeSet<(String, NodeId)>,
) {
    match c {
        Change::OutOfSync { node } => {
            tracing::warn!(volume = %v.name, %node, epoch = v.epoch.0, "replica out of sync")
        }
        Change::Failover { from, to } => {
            tracing::warn!(volume = %v.name, %from, %to, epoch = v.epoch.0, "primary moved")
        }
        Change::Migrated { from, to, reason } => {
            tracing::info!(volume = %v.name, %from, %to, epoch = v.epoch.0, "replica moved: {reason}")
        }
        Change::Stuck { node, reason } => {
            let k = (v.id.clone(), node.clone());
            if !before.contains(&k) {
                tracing::warn!(volume = %v.name, %node, "replica cannot move: {reason}");
            }
            stuck.insert(k);
        }
    }
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Node records could not be read.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The configuration could not be read.
    #[error(transparent)]
    Config(#[from] cluster::StoredConfigError),
}
