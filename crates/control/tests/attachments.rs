//! Connection info and attachments through the REST API: every replica node's portals with
//! their access states, attach and detach idempotent, the host registered on the way, the
//! lists per volume and per host, and detaching the last host leaving nobody (not everybody).

mod common;

use std::sync::Arc;
use std::time::Duration;

use alcubierre_control::activation::Licence;
use alcubierre_control::api::{router, ApiState};
use alcubierre_control::model::NvmeIdentity;
use alcubierre_control::registry::{self, Heartbeat};
use alcubierre_store::{MemStore, Store};
use axum::http::StatusCode;
use serde_json::{json, Value};

const T: &str = "secret-token";

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    common::call(app, method, path, body, Some(T)).await
}

/// Three active nodes with NVMe/TCP and iSCSI portals, heartbeating with `timeout`.
async fn cluster(timeout: Duration) -> (Arc<dyn Store>, Vec<Heartbeat>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut beats = Vec::new();
    let mut names = Vec::new();
    for i in 1..=3u32 {
        let mut n = common::node(&format!("node-{i}"));
        n.portals = vec![format!("10.0.0.{i}:4420")];
        n.iscsi_portals = vec![format!("10.0.0.{i}:3260,{i}")];
        n.nvme = Some(NvmeIdentity {
            ana_group: i,
            cntlid_base: i as u16 * 1000,
            cntlid_count: 1000,
        });
        registry::register(&*store, &n).await.unwrap();
        beats.push(
            Heartbeat::start(store.clone(), &n.name, timeout / 5, timeout)
                .await
                .unwrap(),
        );
        names.push(n.name);
    }
    registry::activate(&*store, &names, &Licence::default(), 0)
        .await
        .unwrap();
    for (n, _) in registry::nodes(&*store).await.unwrap().into_values() {
        registry::finish_activation(&*store, &n).await.unwrap();
    }
    (store, beats)
}

fn app(store: Arc<dyn Store>) -> axum::Router {
    router(ApiState {
        store,
        token: Arc::new(T.into()),
        licence: Licence::default(),
        now: || 0,
        node_metrics: None,
        backend: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_returns_every_path_and_detach_leaves_nobody() {
    let (store, mut beats) = cluster(Duration::from_secs(2)).await;
    let app = app(store.clone());
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(json!({"name": "db", "size": 1 << 30})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["any_host"], true, "a volume naming no hosts is open: {v}");
    let (id, primary) = (v["id"].as_str().unwrap().to_string(), v["primary"].clone());

    // The connection info: every replica node's portals, the primary's first and optimized.
    let (s, c) = call(&app, "GET", "/api/v1/volumes/db/connection", None).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let nvme = &c["nvme"];
    assert_eq!(
        nvme["subsystem_nqn"],
        format!("nqn.2014-08.io.alcubierre:vol:{id}")
    );
    assert_eq!(nvme["uuid"], id);
    assert_eq!(nvme["nguid"], id.replace('-', ""));
    assert_eq!(nvme["namespace_id"], 1);
    assert_eq!(nvme["multipath"], 1, "the cluster's NVMe/TCP default");
    let portals = nvme["portals"].as_array().unwrap();
    assert_eq!(portals.len(), 3, "{c}");
    assert_eq!(portals[0]["node"], primary);
    assert_eq!(portals[0]["state"], "optimized");
    assert!(
        portals[1..].iter().all(|p| p["state"] == "non_optimized"),
        "{c}"
    );
    assert!(portals
        .iter()
        .all(|p| p["port"] == 4420 && p["transport"] == "tcp"));
    let groups: Vec<u64> = portals
        .iter()
        .map(|p| p["ana_group"].as_u64().unwrap())
        .collect();
    assert_eq!(groups.len(), 3);
    let iscsi = &c["iscsi"];
    assert_eq!(
        iscsi["target_iqn"],
        format!("iqn.2014-08.io.alcubierre:vol.{id}")
    );
    assert_eq!(iscsi["lun"], 0);
    assert_eq!(iscsi["multipath"], 4, "the cluster's iSCSI default");
    let ip = iscsi["portals"].as_array().unwrap();
    assert_eq!(ip.len(), 3);
    assert_eq!(ip[0]["node"], primary);
    assert_eq!(ip[0]["port"], 3260);
    assert!(ip.iter().all(|p| p["portal_group_tag"].as_u64().is_some()));

    // Detaching a host that is not attached changes nothing: the volume stays open.
    let (s, d) = call(
        &app,
        "DELETE",
        "/api/v1/volumes/db/attachments/nobody",
        None,
    )
    .await;
    assert_eq!(
        (s, d["was_attached"].clone()),
        (StatusCode::OK, json!(false))
    );
    let (_, v) = call(&app, "GET", "/api/v1/volumes/db", None).await;
    assert_eq!(v["any_host"], true, "{v}");

    // Attaching an unknown host without its names: 404 naming the host, nothing created.
    let (s, e) = call(
        &app,
        "PUT",
        "/api/v1/volumes/db/attachments/h1",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["field"], "host");
    // Attaching to a volume that does not exist registers nothing.
    let (s, _) = call(
        &app,
        "PUT",
        "/api/v1/volumes/nope/attachments/h1",
        Some(json!({"nqn": "nqn.2014-08.org.example:h1"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, hosts) = call(&app, "GET", "/api/v1/hosts", None).await;
    assert_eq!(hosts, json!([]));
    // A field this release does not know: 400 naming it.
    let (s, e) = call(
        &app,
        "PUT",
        "/api/v1/volumes/db/attachments/h1",
        Some(json!({"wwpn": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["field"], "wwpn");

    // Attach: the host is created with its NQN, and only it reaches the volume now.
    let nqn = "nqn.2014-08.org.example:h1";
    let (s, a) = call(
        &app,
        "PUT",
        "/api/v1/volumes/db/attachments/h1",
        Some(json!({"nqn": nqn})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["host"], "h1");
    assert_eq!(a["nqn"], nqn);
    assert_eq!(
        a["connection"]["nvme"]["portals"],
        *nvme.get("portals").unwrap()
    );
    let (_, v) = call(&app, "GET", "/api/v1/volumes/db", None).await;
    assert_eq!(v["hosts"], json!(["h1"]));
    assert_eq!(v["any_host"], false);
    // The record of a closed volume is version 2: a node of a release that reads only version
    // 1 (and would take no hosts for any host) leaves it as it is.
    let record = store.get(&format!("volumes/{id}")).await.unwrap().unwrap();
    let record: Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(
        (record["version"].clone(), record["closed"].clone()),
        (json!(2), json!(true))
    );
    // Again: the same, nothing changes.
    let (s, again) = call(
        &app,
        "PUT",
        "/api/v1/volumes/db/attachments/h1",
        Some(json!({"nqn": nqn})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again, a);
    // A second host with an IQN and CHAP: its iSCSI connection names its CHAP user.
    let (s, _) = call(
        &app,
        "PUT",
        "/api/v1/hosts/h2",
        Some(json!({"iqn": "iqn.1993-08.org.debian:01:h2", "chap": ["h2user", "secret-12345"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, a2) = call(
        &app,
        "PUT",
        "/api/v1/volumes/db/attachments/h2",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a2}");
    assert_eq!(a2["connection"]["iscsi"]["chap_user"], "h2user");
    assert_eq!(a2["iqn"], "iqn.1993-08.org.debian:01:h2");
    let (_, h2) = call(&app, "GET", "/api/v1/hosts", None).await;
    assert!(
        h2.to_string().contains("h2user") && !h2.to_string().contains("secret-12345"),
        "{h2}"
    );

    // The lists.
    let (_, by_volume) = call(
        &app,
        "GET",
        &format!("/api/v1/volumes/{id}/attachments"),
        None,
    )
    .await;
    let hosts: Vec<&str> = by_volume
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["h1", "h2"]);
    let (_, by_host) = call(&app, "GET", "/api/v1/hosts/h1/attachments", None).await;
    assert_eq!(
        by_host,
        json!([{"volume": id, "volume_name": "db", "host": "h1"}])
    );
    let (s, _) = call(&app, "GET", "/api/v1/hosts/nobody/attachments", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Detach is idempotent; the last host leaving leaves nobody, not everybody.
    let (s, d) = call(&app, "DELETE", "/api/v1/volumes/db/attachments/h1", None).await;
    assert_eq!(
        (s, d["was_attached"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (s, d) = call(&app, "DELETE", "/api/v1/volumes/db/attachments/h1", None).await;
    assert_eq!(
        (s, d["was_attached"].clone()),
        (StatusCode::OK, json!(false))
    );
    let (_, _) = call(&app, "DELETE", "/api/v1/volumes/db/attachments/h2", None).await;
    let (_, v) = call(&app, "GET", "/api/v1/volumes/db", None).await;
    assert_eq!(v["hosts"], json!([]));
    assert_eq!(v["any_host"], false, "{v}");
    // An explicit empty list opens it again, as at creation.
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/volumes/db/hosts",
        Some(json!({"hosts": []})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["any_host"], true);
    // Detaching from a volume that does not exist: 404.
    let (s, _) = call(&app, "DELETE", "/api/v1/volumes/nope/attachments/h1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The cluster's multipath defaults are what the connection info hands out.
    let (s, c) = call(
        &app,
        "PATCH",
        "/api/v1/cluster/config",
        Some(json!({"multipath": {"iscsi": 2, "nvme_tcp": 3, "nvme_rdma": 2}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (_, c) = call(&app, "GET", "/api/v1/volumes/db/connection", None).await;
    assert_eq!(
        (
            c["iscsi"]["multipath"].clone(),
            c["nvme"]["multipath"].clone()
        ),
        (json!(2), json!(3))
    );
    let (s, e) = call(
        &app,
        "PATCH",
        "/api/v1/cluster/config",
        Some(json!({"multipath": {"iscsi": 9, "nvme_tcp": 1, "nvme_rdma": 2}})),
    )
    .await;
    assert_eq!(
        (s, e["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("multipath.iscsi")),
        "{e}"
    );

    // A field the configuration does not have: 400 naming it, as PUT answers.
    let (s, e) = call(
        &app,
        "PATCH",
        "/api/v1/cluster/config",
        Some(json!({"multipaths": 2})),
    )
    .await;
    assert_eq!(
        (s, e["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("multipaths")),
        "{e}"
    );

    // A node whose heartbeat stops: its paths are inaccessible in the connection info.
    let follower = portals[2]["node"].as_str().unwrap().to_string();
    let i: usize = follower.trim_start_matches("node-").parse().unwrap();
    drop(beats.remove(i - 1));
    let t0 = std::time::Instant::now();
    loop {
        let (_, c) = call(&app, "GET", "/api/v1/volumes/db/connection", None).await;
        let p = c["nvme"]["portals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == follower.as_str())
            .cloned()
            .unwrap();
        if p["state"] == "inaccessible" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "still {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
