//! The REST API through its router (every route, authentication, errors as JSON naming the
//! field) and the checked-in OpenAPI document against the router's route table.

mod common;

use std::sync::Arc;

use alcubierre_control::activation::Licence;
use alcubierre_control::api::{router, ApiState, ROUTES};
use alcubierre_control::registry::Heartbeat;
use alcubierre_store::{MemStore, Store};
use axum::http::StatusCode;
use serde_json::{json, Value};

use common::call;

async fn app() -> (axum::Router, Vec<Heartbeat>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let beats = common::register_nodes(&store, 3).await;
    (app_on(store), beats)
}

/// The API on `store`, with the test token.
fn app_on(store: Arc<dyn Store>) -> axum::Router {
    router(ApiState {
        store,
        token: Arc::new("secret-token".into()),
        licence: Licence::default(),
        now: || 0,
        node_metrics: None,
        backend: None,
    })
}

const T: Option<&str> = Some("secret-token");

#[tokio::test]
async fn operator_flow_through_the_api() {
    let (app, _b) = app().await;
    let (s, v) = call(&app, "GET", "/api/v1/nodes", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("bearer"));
    let (s, _) = call(&app, "GET", "/api/v1/nodes", None, Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = call(&app, "GET", "/api/v1/nodes", None, T).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["service"], "available");
    assert_eq!(v[0]["activation"]["state"], "registered");

    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/nodes/activate",
        Some(json!({"nodes": ["node-1", "node-2"]})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"].as_str().unwrap().contains("at least 3 nodes"),
        "{v}"
    );
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/nodes/activate",
        Some(json!({"nodes": ["node-1", "node-2", "node-3"]})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Volumes need active nodes; activation finishes when nodes report it (here: not yet).
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(json!({"name": "v1", "size": 1073741824u64})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(json!({"name": "v1", "size": 1000})),
        T,
    )
    .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("size"))
    );
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/cluster/config",
        Some(json!({"partitions_per_cache_device": 0})),
        T,
    )
    .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("partitions_per_cache_device"))
    );
    // Stored but not applied in this release: refused, naming the field.
    let (s, v) = call(&app, "PUT", "/api/v1/cluster/config", Some(json!({"node_groups": [{"nodes": "node-[1-3]", "subnet": "10.0.0.0/24", "start": "10.0.0.10"}]})), T).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "node_groups", "{v}");
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/cluster/config",
        Some(json!({"data_transport": "rdma"})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "data_transport", "{v}");
    let (_, v) = call(&app, "GET", "/api/v1/cluster/config", None, T).await;
    assert_eq!(v["multipath"]["iscsi"], 4);

    let (s, _) = call(
        &app,
        "PUT",
        "/api/v1/qos/gold",
        Some(json!({"write_iops": 5000, "write_bps": 104857600})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&app, "PUT", "/api/v1/hosts/h1", Some(json!({"name": "h1", "nqn": "nqn.2014-08.org.example:h1", "chap": ["user", "a-secret-1234"]})), T).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = call(&app, "GET", "/api/v1/hosts", None, T).await;
    assert!(
        !v.to_string().contains("a-secret-1234"),
        "secrets are write-only: {v}"
    );
    let (s, v) = call(
        &app,
        "GET",
        "/api/v1/plan?nodes=3&usable_tb=40&cache_disks=2",
        None,
        T,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["cache_tb_per_disk_seed"], 1.6);
    let (s, v) = call(&app, "GET", "/api/v1/plan?nodes=0&usable_tb=40", None, T).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("nodes"))
    );
    let (s, _) = call(&app, "GET", "/api/v1/volumes/nope", None, T).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(&app, "GET", "/api/v1/nothing", None, T).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
    let (s, v) = call(&app, "DELETE", "/api/v1/nodes", None, T).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"].is_string(), "{v}");
    let (s, v) = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v.as_str()
            .unwrap()
            .contains("alcubierre_node_available{node=\"node-1\",activation=\"activating\"} 1"),
        "{v}"
    );
}

#[test]
fn openapi_document_matches_the_routes() {
    let documented = alcubierre_api::routes();
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_route_is_served() {
    let (app, _b) = app().await;
    for (m, p) in ROUTES {
        let path = p.replace("{name}", "x").replace("{id}", "x");
        let path = if path.ends_with("/plan") {
            format!("{path}?nodes=3&usable_tb=1")
        } else {
            path
        };
        let body = matches!(*m, "POST" | "PUT").then(|| json!({}));
        let (s, _) = call(&app, m, &path, body, T).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
        assert!(
            s != StatusCode::NOT_FOUND || p.contains('{'),
            "{m} {p} -> {s}"
        );
        assert!(
            !s.is_server_error() || s == StatusCode::SERVICE_UNAVAILABLE,
            "{m} {p} -> {s}"
        );
    }
}

#[tokio::test]
async fn bad_bodies_get_json_errors_naming_the_field() {
    let (app, _b) = app().await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(json!({"size": 4096})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "name", "{v}");
    assert_eq!(v["error"], "name: required", "{v}");
    // A wrong type names the field and the rule, not the JSON library's words.
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(json!({"name": "v", "size": "10GiB"})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "size", "{v}");
    assert_eq!(
        v["error"], "size: must be a whole number (at least 0), not a string",
        "{v}"
    );
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/cluster/config",
        Some(json!({"heartbeat_interval_ms": 50})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "heartbeat_interval_ms", "{v}");
    let (s, v) = call(&app, "GET", "/api/v1/plan?nodes=x", None, T).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].is_string(), "{v}");
    // Stored records tolerate fields a newer release adds; a request with a field this release
    // does not know is refused, naming it, not stored to do nothing.
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/hosts/h1",
        Some(json!({"nqn": "nqn.2014-08.org.example:h1", "chap_secret": "x"})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "chap_secret", "{v}");
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/qos/gold",
        Some(json!({"write_iops": 5000, "write_MiB_sec": 100})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "write_MiB_sec", "{v}");
    // Bursts need their sustained limit and must reach above it; a burst lasts 1-3600 s.
    for (body, field) in [
        (json!({"total_iops_max": 900}), "total_iops_max"),
        (
            json!({"read_bps": 1000, "read_bps_max": 999}),
            "read_bps_max",
        ),
        (json!({"total_bps": 0}), "total_bps"),
        (
            json!({"write_iops": 9, "burst_seconds": 0}),
            "burst_seconds",
        ),
    ] {
        let (s, v) = call(&app, "PUT", "/api/v1/qos/gold", Some(body), T).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let burst = json!({"total_iops": 100, "total_iops_max": 1000, "write_bps": 1 << 20,
        "write_bps_max": 4 << 20, "burst_seconds": 10});
    let (s, v) = call(&app, "PUT", "/api/v1/qos/burst", Some(burst.clone()), T).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, all) = call(&app, "GET", "/api/v1/qos", None, T).await;
    for (k, want) in burst.as_object().unwrap() {
        assert_eq!(&all["burst"][k], want, "{k}: {all}");
    }
    assert_eq!(
        call(&app, "DELETE", "/api/v1/qos/burst", None, T).await.0,
        StatusCode::NO_CONTENT
    );
    // A stored record's type names the field of a wrong value too.
    let (s, v) = call(
        &app,
        "PUT",
        "/api/v1/qos/gold",
        Some(json!({"write_iops": "many"})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "write_iops", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("write_iops: must be"),
        "{v}"
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(
            json!({"name": "c", "size": 4096, "source": {"volume": "a", "snapshot": "s", "at": 1}}),
        ),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "source.at", "{v}");
}

#[tokio::test]
async fn status_drain_and_console() {
    let (app, _b) = app().await;
    let (s, v) = call(&app, "GET", "/api/v1/status", None, T).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["active"], 0);
    assert_eq!(v["available"], 3);
    assert_eq!(v["leader"], Value::Null);
    // Only an active node can be drained.
    let (s, v) = call(&app, "POST", "/api/v1/nodes/node-1/drain", None, T).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("registered"), "{v}");
    let (s, v) = call(&app, "POST", "/api/v1/nodes/node-9/undrain", None, T).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // The console needs no token (it asks for one) and is HTML.
    let (s, v) = call(&app, "GET", "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("/api/v1/status"));
}

/// QoS policies and hosts can be deleted, but not while a volume uses them (409 naming the
/// field and the volumes); a duplicate snapshot is a conflict as a duplicate volume is; the
/// API serves its own OpenAPI document, and an unknown path points to it, not to a file.
#[tokio::test]
async fn deletes_conflicts_and_the_served_document() {
    let (store, _b) = common::active_cluster(3, std::time::Duration::from_secs(5)).await;
    let app = app_on(store);
    let put = |path: &str, body: Value| {
        let (app, path) = (app.clone(), path.to_string());
        async move { call(&app, "PUT", &path, Some(body), T).await }
    };
    assert_eq!(
        put("/api/v1/qos/gold", json!({"write_iops": 5000})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        put(
            "/api/v1/hosts/h1",
            json!({"nqn": "nqn.2014-08.org.example:h1"})
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, v) = call(
        &app,
        "POST",
        "/api/v1/volumes",
        Some(json!({"name": "v", "size": 1 << 30, "qos": "gold", "hosts": ["h1"]})),
        T,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, e) = call(&app, "DELETE", "/api/v1/qos/gold", None, T).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["field"], "qos", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("in use by volume(s) v"),
        "{e}"
    );
    let (s, e) = call(&app, "DELETE", "/api/v1/hosts/h1", None, T).await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::CONFLICT, Some("hosts")),
        "{e}"
    );

    let snap = json!({"name": "s1"});
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/volumes/v/snapshots",
        Some(snap.clone()),
        T,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::ACCEPTED,
        "a snapshot is taken by the primary"
    );
    let (s, e) = call(&app, "POST", "/api/v1/volumes/v/snapshots", Some(snap), T).await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::CONFLICT, Some("name")),
        "{e}"
    );

    let (s, _) = call(&app, "DELETE", "/api/v1/volumes/v", None, T).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        call(&app, "DELETE", "/api/v1/qos/gold", None, T).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "DELETE", "/api/v1/hosts/h1", None, T).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "DELETE", "/api/v1/qos/gold", None, T).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, q) = call(&app, "GET", "/api/v1/qos", None, T).await;
    assert_eq!(q, json!({}));

    let (s, doc) = call(&app, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["paths"]["/api/v1/qos/{name}"]["delete"].is_object(),
        "{doc}"
    );
    let (s, e) = call(&app, "GET", "/api/v1/nope", None, T).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let m = e["error"].as_str().unwrap();
    assert!(
        m.contains("/api/v1/openapi.json") && !m.contains("docs/"),
        "{m}"
    );
}
