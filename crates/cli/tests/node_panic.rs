//! A panic in a node's own task does not leave a node that heartbeats but no longer acts: the
//! node exits (status 70), the cluster fails its volumes over, and the volume is served again
//! with every acknowledged write. The panic is injected with the `converge-panic@<node>`
//! failpoint (`ALCUBIERRE_FAILPOINTS`, crates/cli/src/failpoints.rs).

mod common;

use common::cluster::*;

use std::time::{Duration, Instant};

use alcubierre_store::testing::EtcdServer;

fn block(i: u64) -> bytes::Bytes {
    let mut d = vec![(i % 251) as u8; 4096];
    d[..8].copy_from_slice(&i.to_le_bytes());
    bytes::Bytes::from(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_node_task_ends_the_node_and_its_volume_fails_over() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let points = dir.path().join("failpoints");
    std::fs::create_dir_all(&points).unwrap();
    // Read by the nodes this test starts (the test process has no other user of it).
    std::env::set_var("ALCUBIERRE_FAILPOINTS", &points);
    let (mut procs, ready, apis, _store, v) =
        three_nodes_and_a_volume(dir.path(), &etcd, "p").await;
    let id = v["id"].as_str().unwrap().to_string();
    let primary = v["primary"].as_str().unwrap().to_string();
    let other = (1..=3)
        .map(|i| format!("node-{i}"))
        .find(|n| *n != primary)
        .unwrap();
    let mut c = connect_through(&ready, &v, &other, 10).await;
    for i in 0..32 {
        c.write(0, i * 5, block(i), 4096).await.unwrap();
    }

    std::fs::write(points.join(format!("converge-panic@{primary}")), b"").unwrap();
    let pidx = node_index(&primary);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = procs[pidx].0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the node whose task panicked is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(70), "{status}");

    // The surviving path takes writes again once a follower is promoted.
    let t1 = Instant::now();
    while c.write(0, 1000, block(1000), 4096).await.is_err() {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "no failover after the node exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..32 {
        assert_eq!(
            c.read(0, i * 5, 1, 4096).await.unwrap(),
            block(i),
            "block {i}"
        );
    }
    let live = &apis[(0..3).find(|i| *i != pidx).unwrap()];
    let v = json_call(live, "GET", &format!("/api/v1/volumes/{id}"), "").await;
    assert_ne!(v["primary"], primary.as_str(), "{v}");
}
