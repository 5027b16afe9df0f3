//! The leader on the embedded store: one of several candidates leads, replaces the replica of a
//! node whose heartbeat stopped once the migration delay passed, hands over when it dies, and a
//! deposed leader's writes are refused (fencing).

mod common;

use std::time::Duration;

use alcubierre_control::activation::Licence;
use alcubierre_control::cluster::{self, ClusterConfig};
use alcubierre_control::leader::{self, Leader};
use alcubierre_control::model::ActivationEvent;
use alcubierre_control::registry;
use alcubierre_control::volumes::{self, CreateVolume, Volume};
use alcubierre_store::{election, Store};

fn req(name: &str) -> CreateVolume {
    CreateVolume {
        name: name.into(),
        size: 1 << 30,
        block_size: Some(4096),
        qos: None,
        hosts: vec![],
        source: None,
    }
}

async fn wait_for<F: Fn(&Volume) -> bool>(store: &dyn Store, id: &str, f: F) -> Volume {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (v, _) = volumes::find(store, id).await.unwrap();
        if f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "volume never reached the state: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_leader(store: &dyn Store, not: Option<&str>) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = leader::current(store).await.unwrap() {
            if Some(l.as_str()) != not {
                return l;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_migrates_a_lost_replica_and_hands_over() {
    let (store, mut beats) = common::active_cluster(4, Duration::from_secs(1)).await;
    cluster::save(
        &*store,
        &ClusterConfig {
            migration_delay_s: 1,
            heartbeat_interval_ms: 200,
            heartbeat_timeout_ms: 1000,
            ..ClusterConfig::default()
        },
    )
    .await
    .unwrap();
    let v = volumes::create(&*store, &req("v"), "vol-1".into(), &Licence::default())
        .await
        .unwrap();
    assert_eq!(v.primary, v.replicas[0]);
    assert_eq!(v.in_sync, v.replicas, "a new volume is in sync everywhere");
    let spare = (1..=4)
        .map(|i| format!("node-{i}"))
        .find(|n| !v.has_replica(n))
        .unwrap();

    let mut tasks = std::collections::BTreeMap::new();
    for n in ["node-1", "node-2"] {
        tasks.insert(n, tokio::spawn(leader::run(store.clone(), n.to_string())));
    }
    let first = wait_leader(&*store, None).await;

    // A secondary's heartbeat stops: after the lease expires (1 s) and the migration delay
    // (1 s) its replica moves to the spare node; the primary stays.
    let lost = v.replicas[1].clone();
    let idx: usize = lost.trim_start_matches("node-").parse().unwrap();
    drop(beats.remove(idx - 1));
    let moved = wait_for(&*store, "vol-1", |x| !x.has_replica(&lost)).await;
    assert_eq!(moved.primary, v.primary);
    assert!(moved.has_replica(&spare), "{moved:?}");
    assert_eq!(moved.replicas.len(), 3);
    let kept: Vec<alcubierre_types::NodeId> =
        v.in_sync.iter().filter(|n| **n != lost).cloned().collect();
    assert_eq!(
        moved.in_sync, kept,
        "the lost one left, the new one needs a rebuild"
    );
    assert!(moved.epoch > v.epoch);

    // The leader dies (its task stops without resigning): the other candidate takes over once
    // the lease expires, and keeps reconciling: draining a secondary moves it at once.
    tasks.remove(first.as_str()).unwrap().abort();
    let second = wait_leader(&*store, Some(&first)).await;
    assert_ne!(second, first);
    let drained = moved
        .replicas
        .iter()
        .find(|r| **r != moved.primary)
        .unwrap()
        .clone();
    registry::set_draining(&*store, &drained, true)
        .await
        .unwrap();
    // Only 3 healthy nodes remain besides the drained one... the lost node is gone, so the
    // replica has nowhere to go: the leader reports it stuck and changes nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (still, _) = volumes::find(&*store, "vol-1").await.unwrap();
    assert_eq!(still, moved, "no eligible node: nothing changes");
    // The lost node comes back: the drained replica moves there.
    beats.push(
        registry::Heartbeat::start(
            store.clone(),
            &lost,
            Duration::from_millis(200),
            Duration::from_secs(1),
        )
        .await
        .unwrap(),
    );
    let after = wait_for(&*store, "vol-1", |x| !x.has_replica(&drained)).await;
    assert!(after.has_replica(&lost), "{after:?}");
    for t in tasks.values() {
        t.abort();
    }
}

#[tokio::test]
async fn a_deposed_leader_cannot_write() {
    let (store, _beats) = common::active_cluster(4, Duration::from_secs(5)).await;
    let v = volumes::create(&*store, &req("v"), "vol-1".into(), &Licence::default())
        .await
        .unwrap();
    let lease = store.grant(Duration::from_secs(5)).await.unwrap();
    let old = election::campaign(&*store, leader::ELECTION, "old", lease)
        .await
        .unwrap();
    store.revoke(lease).await.unwrap();
    let lease = store.grant(Duration::from_secs(5)).await.unwrap();
    let new = election::campaign(&*store, leader::ELECTION, "new", lease)
        .await
        .unwrap();
    // A secondary's node is deactivated: its replica must move.
    registry::apply(&*store, &v.replicas[2], ActivationEvent::Deactivate)
        .await
        .unwrap();
    assert!(
        !Leader::default().round(&*store, &old).await.unwrap(),
        "the old leader must learn it lost"
    );
    let (same, _) = volumes::find(&*store, "vol-1").await.unwrap();
    assert_eq!(same, v, "the deposed leader wrote nothing");
    assert!(Leader::default().round(&*store, &new).await.unwrap());
    let (moved, _) = volumes::find(&*store, "vol-1").await.unwrap();
    assert!(!moved.has_replica(&v.replicas[2]));
    assert_eq!(moved.epoch, v.epoch.next());
}

#[tokio::test]
async fn the_leader_handles_primaries_requests() {
    use alcubierre_control::reconcile::ReplicaRequest;
    let (store, _beats) = common::active_cluster(4, Duration::from_secs(5)).await;
    let v = volumes::create(&*store, &req("v"), "vol-1".into(), &Licence::default())
        .await
        .unwrap();
    // The primary asks to drop a follower, then (caught up again) to add it back.
    let follower = v.replicas[1].clone();
    let drop_it = ReplicaRequest::Drop {
        node: follower.clone(),
        epoch: v.epoch,
        from: v.primary.clone(),
    };
    leader::request(&*store, &v.id, &follower, &drop_it)
        .await
        .unwrap();
    // A request from a node that is not the primary is refused.
    let other = v.replicas[2].clone();
    let bogus = ReplicaRequest::Drop {
        node: v.primary.clone(),
        epoch: v.epoch,
        from: other.clone(),
    };
    leader::request(&*store, &v.id, &other, &bogus)
        .await
        .unwrap();
    let lease = store.grant(Duration::from_secs(5)).await.unwrap();
    let l = election::campaign(&*store, leader::ELECTION, "l", lease)
        .await
        .unwrap();
    assert!(Leader::default().round(&*store, &l).await.unwrap());
    let (dropped, _) = volumes::find(&*store, "vol-1").await.unwrap();
    assert_eq!(dropped.in_sync, [v.primary.clone(), other.clone()]);
    assert_eq!(dropped.epoch, v.epoch.next());
    assert!(
        store.list(leader::REQUESTS).await.unwrap().is_empty(),
        "handled and refused requests are gone"
    );
    let add = ReplicaRequest::Add {
        node: follower.clone(),
        epoch: dropped.epoch,
        from: v.primary.clone(),
    };
    leader::request(&*store, &v.id, &follower, &add)
        .await
        .unwrap();
    assert!(Leader::default().round(&*store, &l).await.unwrap());
    let (after, _) = volumes::find(&*store, "vol-1").await.unwrap();
    assert_eq!(after.in_sync, [v.primary.clone(), other, follower.clone()]);
    assert_eq!(after.epoch, v.epoch.next().next());
    // The same request again is stale (older epoch): nothing changes.
    leader::request(&*store, &v.id, &follower, &add)
        .await
        .unwrap();
    assert!(Leader::default().round(&*store, &l).await.unwrap());
    let (same, _) = volumes::find(&*store, "vol-1").await.unwrap();
    assert_eq!(same, after);
    assert!(store.list(leader::REQUESTS).await.unwrap().is_empty());
}
