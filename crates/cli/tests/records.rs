//! A volume is removed only on an explicit delete: three `alcubierre serve` nodes on a real
//! etcd keep serving a volume, with every write intact, while its record carries a field a
//! newer release added, has a newer format version, is not JSON at all, or is missing (as an
//! `etcdctl del` would leave it); the nodes report what they leave as it is
//! (`alcubierre_volumes_held`, and the API's status for records it cannot read). A delete through the API then stops the volume, deletes its
//! backend image, and its deletion request goes once every replica node has done its part.

mod common;

use common::cluster::*;

use std::time::Duration;

use alcubierre_store::testing::EtcdServer;
use alcubierre_store::Store;
use serde_json::{json, Value};

fn block(i: u64) -> bytes::Bytes {
    let mut d = vec![(i % 251) as u8; 4096];
    d[..8].copy_from_slice(&i.to_le_bytes());
    bytes::Bytes::from(d)
}

/// The sum of `alcubierre_volumes_held` over every node's metrics.
async fn held(apis: &[String]) -> u64 {
    let mut sum = 0;
    for api in apis {
        let (st, text) = call(api, "GET", "/metrics", "").await;
        assert_eq!(st, 200);
        sum += text
            .lines()
            .filter(|l| l.starts_with("alcubierre_volumes_held{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_explicit_delete_removes_a_volume() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_procs, ready, apis, store, v) = three_nodes_and_a_volume(dir.path(), &etcd, "keep").await;
    let id = v["id"].as_str().unwrap().to_string();
    let mut c = connect_through(&ready, &v, v["primary"].as_str().unwrap(), 10).await;
    let image = dir.path().join("backend").join(format!("{id}.img"));
    let key = format!("volumes/{id}");
    let original = store.get(&key).await.unwrap().unwrap().value;
    let mut record: Value = serde_json::from_slice(&original).unwrap();
    record["placement_hint"] = json!("rack-2");
    let with_field = serde_json::to_vec(&record).unwrap();
    record["version"] = json!(alcubierre_control::volumes::VOLUME_RECORD_VERSION + 1);
    let newer = serde_json::to_vec(&record).unwrap();

    let mut written = 0u64;
    let variants: [(&str, Option<Vec<u8>>, u64); 4] = [
        ("a field a newer release added", Some(with_field), 0),
        ("a newer record version", Some(newer), 3),
        ("not JSON", Some(b"{\"id\": \"trunc".to_vec()), 3),
        ("missing, without a deletion request", None, 3),
    ];
    for (what, value, want_held) in variants {
        let unreadable = value.is_some() && want_held > 0;
        match value {
            Some(value) => {
                store.put(&key, value, None).await.unwrap();
            }
            None => {
                assert!(store.delete(&key).await.unwrap());
            }
        }
        // Every node reports what it holds back (or nothing), after a converge pass or two.
        eventually(15, what, || async {
            (held(&apis).await == want_held).then_some(())
        })
        .await;
        // The API's status names a record it cannot read, and why.
        let st = json_call(&apis[1], "GET", "/api/v1/status", "").await;
        let listed = st["unreadable"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["key"] == key.as_str() && u["reason"].is_string());
        assert_eq!(listed, unreadable, "record {what}: status {st}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        for _ in 0..16 {
            c.write(0, written * 3, block(written), 4096)
                .await
                .unwrap_or_else(|e| panic!("record {what}: write {written} failed: {e}"));
            written += 1;
        }
        for i in 0..written {
            assert_eq!(
                c.read(0, i * 3, 1, 4096).await.unwrap(),
                block(i),
                "record {what}: block {i}"
            );
        }
        assert!(image.exists(), "record {what}: the backend image is kept");
    }
    // The record back as it was: nothing is held any more.
    store.put(&key, original, None).await.unwrap();
    eventually(15, "records readable again", || async {
        (held(&apis).await == 0).then_some(())
    })
    .await;

    // A delete through the API: the volume goes, with its data, on every node.
    json_call(&apis[0], "DELETE", &format!("/api/v1/volumes/{id}"), "").await;
    eventually(20, "the backend image deleted", || async {
        (!image.exists()).then_some(())
    })
    .await;
    eventually(20, "the deletion request done by every node", || async {
        store
            .get(&format!("deletions/{id}"))
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        c.write(0, 0, block(0), 4096).await.is_err(),
        "a deleted volume takes no writes"
    );
}

/// One volume that no node can serve stays with that volume: a record whose size is not a
/// multiple of its block size (as a faulty controller could write) fails on every replica
/// node, which report it (the API's status names the volume unavailable, with the reason; a
/// metric per node) and retry with backoff, while a volume created afterwards is exported and
/// takes writes. A size the backend cannot hold is refused at create, naming `size`: the file
/// backend's directory is on ext4 here, whose largest file is 16 TiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_volume_does_not_stall_the_others() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_procs, ready, apis, store, first) =
        three_nodes_and_a_volume(dir.path(), &etcd, "first").await;
    let (st, body) = call(
        &apis[0],
        "POST",
        "/api/v1/volumes",
        &json!({"name": "huge", "size": 100u64 << 40}).to_string(),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["field"], "size", "{e}");
    let (st, _) = call(&apis[0], "GET", "/api/v1/volumes/huge", "").await;
    assert_eq!(st, 404, "a refused volume is not created");

    // A bad record, sorted before every other volume.
    let bad = "00000000-0000-4000-8000-000000000001";
    let mut record: Value = first.clone();
    record["id"] = json!(bad);
    record["name"] = json!("bad");
    record["size"] = json!((16u64 << 20) + 512);
    store
        .put(
            &format!("volumes/{bad}"),
            serde_json::to_vec(&record).unwrap(),
            None,
        )
        .await
        .unwrap();
    store
        .put("volume-names/bad", bad.as_bytes().to_vec(), None)
        .await
        .unwrap();
    let failures = eventually(20, "three nodes report the bad volume", || async {
        let st = json_call(&apis[0], "GET", "/api/v1/status", "").await;
        let f: Vec<Value> = st["failures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["volume"] == bad)
            .cloned()
            .collect();
        (f.len() == 3).then_some((st, f))
    })
    .await;
    let (st, failures) = failures;
    assert!(
        st["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "bad"),
        "{st}"
    );
    for f in &failures {
        assert!(
            f["reason"].as_str().unwrap().contains("size"),
            "the reason names the problem: {f}"
        );
        assert!(f["retries"].as_u64().unwrap() >= 1, "{f}");
    }
    let (_, metrics) = call(&apis[0], "GET", "/metrics", "").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("alcubierre_volume_failed{") && l.contains(bad)),
        "a metric per failing volume"
    );

    // A volume created now is exported and takes writes.
    let v = json_call(
        &apis[1],
        "POST",
        "/api/v1/volumes",
        r#"{"name":"second","size":16777216,"block_size":4096}"#,
    )
    .await;
    let mut c = connect_through(&ready, &v, v["primary"].as_str().unwrap(), 20).await;
    c.write(0, 5, block(5), 4096).await.unwrap();
    assert_eq!(c.read(0, 5, 1, 4096).await.unwrap(), block(5));

    // Deleting the bad volume clears its failures.
    json_call(&apis[0], "DELETE", "/api/v1/volumes/bad", "").await;
    eventually(30, "the failures cleared", || async {
        let st = json_call(&apis[0], "GET", "/api/v1/status", "").await;
        st["failures"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
}
