//! The leader's rules for a volume's replica set: pure functions from what the store says (nodes,
//! their service states, how long each has been unavailable, the cluster configuration) to the
//! volume's next replica set. [`crate::leader`] runs them and writes the result.
//!
//! A node is *up* when it is active, available, and none of its cache devices failed.
//!
//! Rules, applied in order to each volume; any change raises the epoch once:
//! 1. **Lost secondary**: an in-sync replica other than the primary whose node is not *up*
//!    (active and available) leaves the in-sync set, so the primary stops waiting for it.
//! 2. **Failover**: if the primary's node is not up, or it is draining, the first in-sync replica
//!    (in replica-set order) whose node is up and not draining becomes the primary; a failed old
//!    primary leaves the in-sync set. With no such replica the volume stays as it is
//!    (unavailable, or drained later): only an in-sync replica may serve, never a stale one.
//! 3. **Migration**: a non-primary replica is replaced by a node chosen by placement when its
//!    node is gone from the registry, deactivated, draining, its cache device is not healthy, or
//!    (with dynamic migration on)
//!    unavailable for at least the migration delay. The new replica is out of sync until it is
//!    rebuilt (issue 6).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cluster::ClusterConfig;
use crate::model::{Activation, CacheState, Node, Service};
use crate::placement::{place, Candidate};
use crate::volumes::Volume;
use alcubierre_types::{Epoch, NodeId};

/// What the rules know of the cluster.
pub struct View<'a> {
    /// Registered nodes.
    pub nodes: &'a BTreeMap<String, Node>,
    /// Service states.
    pub services: &'a BTreeMap<String, Service>,
    /// How long the leader has seen each unavailable node unavailable.
    pub down_for: &'a BTreeMap<String, Duration>,
    /// The cluster configuration.
    pub config: &'a ClusterConfig,
}

impl View<'_> {
    /// Active, available, and no cache device failed (a failed journal refuses writes).
    pub fn up(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| {
            n.activation == Activation::Active
                && n.cache.iter().all(|c| c.state != CacheState::Failed)
        }) && self.services.get(node) == Some(&Service::Available)
    }

    fn draining(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.draining)
    }

    /// Why a non-primary replica on `node` should move, if it should.
    fn must_move(&self, node: &str) -> Option<String> {
        let Some(n) = self.nodes.get(node) else {
            return Some("its node is no longer registered".into());
        };
        if n.draining {
            return Some("its node is draining".into());
        }
        if let Some(c) = n.cache.iter().find(|c| c.state != CacheState::Healthy) {
            return Some(
                format!("its node's cache device {} is {:?}", c.path, c.state).to_lowercase(),
            );
        }
        match n.activation {
            Activation::Deactivated => return Some("its node is deactivated".into()),
            Activation::Failed { .. } => return Some("its node failed activation".into()),
            _ => {}
        }
        let down = self.down_for.get(node).copied().unwrap_or_default();
        let delay = Duration::from_secs(self.config.migration_delay_s);
        if self.config.dynamic_migration && !self.up(node) && down >= delay {
            return Some(format!(
                "its node has been unavailable for {}s (migration delay {}s)",
                down.as_secs(),
                self.config.migration_delay_s
            ));
        }
        None
    }

    /// Placement candidates, with the replica counts of `volumes`.
    pub fn candidates<'v>(&self, volumes: impl Iterator<Item = &'v Volume>) -> Vec<Candidate> {
        let mut load: BTreeMap<&str, u32> = BTreeMap::new();
        let mut primaries: BTreeMap<&str, u32> = BTreeMap::new();
        for v in volumes {
            for r in &v.replicas {
                *load.entry(r.as_str()).or_default() += 1;
            }
            *primaries.entry(v.primary.as_str()).or_default() += 1;
        }
        self.nodes
            .values()
            .map(|n| Candidate {
                name: n.name.clone(),
                eligible: self.up(&n.name)
                    && !n.draining
                    && n.cache.iter().all(|c| c.state == CacheState::Healthy),
                free_cache: n.cache_bytes(),
                replicas: load.get(n.name.as_str()).copied().unwrap_or(0),
                primaries: primaries.get(n.name.as_str()).copied().unwrap_or(0),
            })
            .collect()
    }
}

/// A primary's request about its replica set (rules 4 and 7 of docs/design/replication.md),
/// stored at `replica-requests/<volume>/<node>` until the leader handles it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaRequest {
    /// `node` stopped acknowledging: drop it from the in-sync set.
    Drop {
        /// The follower.
        node: NodeId,
        /// The epoch the primary saw.
        epoch: Epoch,
        /// The requesting primary.
        from: NodeId,
    },
    /// `node` holds every acknowledged write: add it to the in-sync set.
    Add {
        /// The follower.
        node: NodeId,
        /// The epoch the primary saw.
        epoch: Epoch,
        /// The requesting primary.
        from: NodeId,
    },
    /// The primary's node restarted: it needs a new epoch before it serves again (so that no
    /// `(epoch, seq)` is ever assigned twice).
    Restarted {
        /// The epoch it found.
        epoch: Epoch,
        /// The restarted primary.
        from: NodeId,
    },
}

/// Applies a primary's request to `v`, raising its epoch; `Err` says why it is refused (stale
/// epoch, not from the primary, not applicable), and then `v` is unchanged.
pub fn apply_request(
    v: &mut Volume,
    req: &ReplicaRequest,
    view: &View,
) -> Result<(), &'static str> {
    let (epoch, from) = match req {
        ReplicaRequest::Drop { epoch, from, .. }
        | ReplicaRequest::Add { epoch, from, .. }
        | ReplicaRequest::Restarted { epoch, from } => (*epoch, from),
    };
    if *from != v.primary {
        return Err("only the primary may ask");
    }
    if epoch != v.epoch {
        return Err("made in an older epoch");
    }
    match req {
        ReplicaRequest::Drop { node, .. } => {
            if *node == v.primary || !v.in_sync.contains(node) {
                return Err("not an in-sync follower");
            }
            v.in_sync.retain(|n| n != node);
        }
        ReplicaRequest::Add { node, .. } => {
            if !v.has_replica(node) || v.in_sync.contains(node) {
                return Err("not an out-of-sync member");
            }
            if !view.up(node) {
                return Err("its node is not up");
            }
            v.in_sync.push(node.clone());
        }
        ReplicaRequest::Restarted { .. } => {}
    }
    v.epoch = v.epoch.next();
    Ok(())
}

/// One change the rules made, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A replica left the in-sync set.
    OutOfSync {
        /// Its node.
        node: NodeId,
    },
    /// The primary moved.
    Failover {
        /// The old primary.
        from: NodeId,
        /// The new primary.
        to: NodeId,
    },
    /// A replica moved to another node.
    Migrated {
        /// The old node.
        from: NodeId,
        /// The new node.
        to: NodeId,
        /// Why.
        reason: String,
    },
    /// A replica should move but no node can take it.
    Stuck {
        /// The node it is on.
        node: NodeId,
        /// Why it should move, and why it cannot.
        reason: String,
    },
}

/// Applies the rules to `v`; `candidates` are placement candidates (their replica counts are
/// updated when a replica moves). Returns the changes; `v` is updated in place and its epoch
/// raised when anything but [`Change::Stuck`] happened.
pub fn reconcile(v: &mut Volume, view: &View, candidates: &mut [Candidate]) -> Vec<Change> {
    let mut changes = Vec::new();
    // 1. Lost secondaries leave the in-sync set.
    let primary = v.primary.clone();
    v.in_sync.retain(|r| {
        let keep = *r == primary || view.up(r);
        if !keep {
            changes.push(Change::OutOfSync { node: r.clone() });
        }
        keep
    });
    // 2. Failover.
    let primary_up = view.up(&v.primary);
    if !primary_up || view.draining(&v.primary) {
        let next = v
            .replicas
            .iter()
            .find(|r| **r != v.primary && v.in_sync.contains(r) && view.up(r) && !view.draining(r))
            .cloned();
        if let Some(to) = next {
            let from = std::mem::replace(&mut v.primary, to.clone());
            if !primary_up {
                v.in_sync.retain(|r| *r != from);
                changes.push(Change::OutOfSync { node: from.clone() });
            }
            changes.push(Change::Failover { from, to });
        }
    }
    // 3. Migration of non-primary replicas.
    for i in 0..v.replicas.len() {
        let node = v.replicas[i].clone();
        if node == v.primary {
            continue;
        }
        let Some(reason) = view.must_move(&node) else {
            continue;
        };
        let exclude: Vec<&str> = v.replicas.iter().map(NodeId::as_str).collect();
        match place(candidates, 1, &exclude) {
            Ok(mut to) => {
                let to = to.remove(0);
                for c in candidates.iter_mut() {
                    if c.name == to {
                        c.replicas += 1;
                    } else if c.name == node {
                        c.replicas = c.replicas.saturating_sub(1);
                    }
                }
                v.replicas[i] = NodeId::from(&to);
                v.in_sync.retain(|r| *r != node);
                changes.push(Change::Migrated {
                    from: node,
                    to: NodeId::from(to),
                    reason,
                });
            }
            Err(e) => changes.push(Change::Stuck {
                node,
                reason: format!("{reason}, but {e}"),
            }),
        }
    }
    if changes.iter().any(|c| !matches!(c, Change::Stuck { .. })) {
        v.epoch = v.epoch.next();
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CacheDevice;

    fn node(name: &str, activation: Activation) -> Node {
        Node {
            name: name.into(),
            management: String::new(),
            replica: String::new(),
            cache: vec![CacheDevice {
                path: "/dev/x".into(),
                size: 1 << 30,
                state: CacheState::Healthy,
            }],
            activation,
            draining: false,
            cpu_threads: None,
            nvme: None,
            portals: Vec::new(),
            iscsi_portals: Vec::new(),
        }
    }

    struct Cluster {
        nodes: BTreeMap<String, Node>,
        services: BTreeMap<String, Service>,
        down_for: BTreeMap<String, Duration>,
        config: ClusterConfig,
    }

    impl Cluster {
        fn new(n: usize) -> Self {
            let mut c = Cluster {
                nodes: BTreeMap::new(),
                services: BTreeMap::new(),
                down_for: BTreeMap::new(),
                config: ClusterConfig {
                    migration_delay_s: 60,
                    ..ClusterConfig::default()
                },
            };
            for i in 0..n {
                let name = format!("n{i}");
                c.nodes
                    .insert(name.clone(), node(&name, Activation::Active));
                c.services.insert(name, Service::Available);
            }
            c
        }

        fn down(&mut self, name: &str, for_s: u64) {
            self.services.insert(name.into(), Service::Unavailable);
            self.down_for
                .insert(name.into(), Duration::from_secs(for_s));
        }

        fn run(&self, v: &mut Volume) -> Vec<Change> {
            let view = View {
                nodes: &self.nodes,
                services: &self.services,
                down_for: &self.down_for,
                config: &self.config,
            };
            let mut cands = view.candidates(std::iter::once(&*v));
            reconcile(v, &view, &mut cands)
        }
    }

    fn volume(in_sync: &[&str]) -> Volume {
        Volume {
            version: 1,
            id: "u".into(),
            name: "v".into(),
            size: 4096,
            block_size: 4096,
            replicas: vec!["n0".into(), "n1".into(), "n2".into()],
            primary: "n0".into(),
            in_sync: in_sync.iter().map(|s| (*s).into()).collect(),
            qos: None,
            hosts: vec![],
            closed: false,
            epoch: Epoch(1),
            source: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn healthy_volume_is_left_alone() {
        let c = Cluster::new(4);
        let mut v = volume(&["n0", "n1", "n2"]);
        assert!(c.run(&mut v).is_empty());
        assert_eq!(v.epoch, Epoch(1));
    }

    #[test]
    fn lost_secondary_leaves_in_sync_then_migrates_after_the_delay() {
        let mut c = Cluster::new(4);
        c.down("n1", 10);
        let mut v = volume(&["n0", "n1", "n2"]);
        let ch = c.run(&mut v);
        assert_eq!(ch, vec![Change::OutOfSync { node: "n1".into() }]);
        assert_eq!(v.in_sync, ["n0", "n2"]);
        assert_eq!(v.replicas, ["n0", "n1", "n2"], "not yet: delay not reached");
        assert_eq!(v.epoch, Epoch(2));
        // Running again changes nothing until the delay passes.
        assert!(c.run(&mut v).is_empty());
        assert_eq!(v.epoch, Epoch(2));
        c.down("n1", 60);
        let ch = c.run(&mut v);
        assert!(
            matches!(&ch[..], [Change::Migrated { from, to, .. }] if from == "n1" && to == "n3"),
            "{ch:?}"
        );
        assert_eq!(v.replicas, ["n0", "n3", "n2"]);
        assert_eq!(v.in_sync, ["n0", "n2"], "the new replica needs a rebuild");
        assert_eq!(v.epoch, Epoch(3));
    }

    #[test]
    fn no_migration_when_dynamic_migration_is_off() {
        let mut c = Cluster::new(4);
        c.config.dynamic_migration = false;
        c.down("n2", 10_000);
        let mut v = volume(&["n0", "n1", "n2"]);
        c.run(&mut v);
        assert_eq!(v.replicas, ["n0", "n1", "n2"]);
        assert_eq!(v.in_sync, ["n0", "n1"]);
    }

    #[test]
    fn primary_fails_over_to_an_in_sync_replica_only() {
        let mut c = Cluster::new(4);
        c.down("n0", 1);
        let mut v = volume(&["n0", "n2"]);
        let ch = c.run(&mut v);
        assert!(ch.contains(&Change::Failover {
            from: "n0".into(),
            to: "n2".into()
        }));
        assert_eq!(v.primary, "n2", "n1 is out of sync and must not serve");
        assert_eq!(v.in_sync, ["n2"]);
        assert_eq!(v.epoch, Epoch(2));
        // The old primary is now an ordinary lost replica: migrated after the delay.
        c.down("n0", 60);
        c.run(&mut v);
        assert_eq!(v.replicas, ["n3", "n1", "n2"]);
        assert_eq!(v.primary, "n2");
    }

    #[test]
    fn primary_without_in_sync_peer_stays_unavailable() {
        let mut c = Cluster::new(4);
        c.down("n0", 10_000);
        let mut v = volume(&["n0"]);
        let ch = c.run(&mut v);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(v.primary, "n0");
        assert_eq!(v.in_sync, ["n0"]);
        assert_eq!(v.epoch, Epoch(1));
    }

    #[test]
    fn draining_moves_secondaries_at_once_and_hands_the_primary_over() {
        let mut c = Cluster::new(5);
        c.nodes.get_mut("n0").unwrap().draining = true;
        c.nodes.get_mut("n1").unwrap().draining = true;
        let mut v = volume(&["n0", "n1", "n2"]);
        let ch = c.run(&mut v);
        assert!(ch.contains(&Change::Failover {
            from: "n0".into(),
            to: "n2".into()
        }));
        assert_eq!(v.primary, "n2");
        assert!(!v.has_replica("n0") && !v.has_replica("n1"), "{v:?}");
        assert_eq!(v.replicas.len(), 3);
        assert_eq!(v.in_sync, ["n2"]);
        assert_eq!(v.epoch, Epoch(2), "one epoch step per round");
    }

    #[test]
    fn deactivated_node_is_replaced_and_stuck_is_reported_without_epoch() {
        let mut c = Cluster::new(3);
        c.nodes.get_mut("n1").unwrap().activation = Activation::Deactivated;
        let mut v = volume(&["n0", "n2"]);
        let ch = c.run(&mut v);
        assert!(
            matches!(&ch[..], [Change::Stuck { node, reason }] if node == "n1" && reason.contains("deactivated")),
            "{ch:?}"
        );
        assert_eq!(v.epoch, Epoch(1));
        c.nodes.insert("n3".into(), node("n3", Activation::Active));
        c.services.insert("n3".into(), Service::Available);
        let ch = c.run(&mut v);
        assert!(matches!(&ch[..], [Change::Migrated { to, .. }] if to == "n3"));
        assert_eq!(v.epoch, Epoch(2));
    }

    #[test]
    fn migrations_spread_over_nodes() {
        let mut c = Cluster::new(6);
        c.down("n1", 600);
        c.down("n2", 600);
        let mut v = volume(&["n0", "n1", "n2"]);
        c.run(&mut v);
        let mut r = v.replicas.clone();
        r.sort();
        r.dedup();
        assert_eq!(r.len(), 3, "distinct nodes: {:?}", v.replicas);
        assert!(!v.has_replica("n1") && !v.has_replica("n2"));
    }

    #[test]
    fn failed_cache_moves_replicas_and_fails_the_primary_over() {
        let mut c = Cluster::new(5);
        c.nodes.get_mut("n1").unwrap().cache[0].state = CacheState::Degraded;
        c.nodes.get_mut("n0").unwrap().cache[0].state = CacheState::Failed;
        let mut v = volume(&["n0", "n2"]);
        let ch = c.run(&mut v);
        assert!(ch.contains(&Change::Failover {
            from: "n0".into(),
            to: "n2".into()
        }));
        assert!(!v.has_replica("n0") && !v.has_replica("n1"), "{v:?}");
        assert_eq!(v.in_sync, ["n2"]);
    }

    #[test]
    fn primaries_requests_change_the_set_under_a_new_epoch() {
        let c = Cluster::new(4);
        let view = View {
            nodes: &c.nodes,
            services: &c.services,
            down_for: &c.down_for,
            config: &c.config,
        };
        let mut v = volume(&["n0", "n1", "n2"]);
        let drop = |node: &str, epoch, from: &str| ReplicaRequest::Drop {
            node: node.into(),
            epoch,
            from: from.into(),
        };
        assert_eq!(
            apply_request(&mut v, &drop("n1", Epoch(1), "n2"), &view),
            Err("only the primary may ask")
        );
        assert_eq!(
            apply_request(&mut v, &drop("n1", Epoch(0), "n0"), &view),
            Err("made in an older epoch")
        );
        assert_eq!(
            apply_request(&mut v, &drop("n0", Epoch(1), "n0"), &view),
            Err("not an in-sync follower")
        );
        apply_request(&mut v, &drop("n1", Epoch(1), "n0"), &view).unwrap();
        assert_eq!(
            (v.in_sync.clone(), v.epoch),
            (vec!["n0".into(), "n2".into()], Epoch(2))
        );
        let add = ReplicaRequest::Add {
            node: "n1".into(),
            epoch: Epoch(2),
            from: "n0".into(),
        };
        apply_request(&mut v, &add, &view).unwrap();
        assert_eq!(v.in_sync, ["n0", "n2", "n1"]);
        assert_eq!(
            apply_request(&mut v, &add, &view),
            Err("made in an older epoch"),
            "a replayed request is stale"
        );
        let restarted = ReplicaRequest::Restarted {
            epoch: Epoch(3),
            from: "n0".into(),
        };
        apply_request(&mut v, &restarted, &view).unwrap();
        assert_eq!(v.epoch, Epoch(4));
    }
}
