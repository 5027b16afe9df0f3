//! Shared test setup: registered nodes with heartbeats on a store.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_control::model::{Activation, CacheDevice, CacheState, Node};
use alcubierre_control::registry::{register, Heartbeat};
use alcubierre_store::Store;

/// A node with one healthy 2 TB cache device.
pub fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        management: String::new(),
        replica: String::new(),
        cache: vec![CacheDevice {
            path: "/dev/nvme0n1".into(),
            size: 2_000_000_000_000,
            state: CacheState::Healthy,
        }],
        activation: Activation::Registered,
        draining: false,
        cpu_threads: None,
        nvme: None,
        portals: Vec::new(),
        iscsi_portals: Vec::new(),
    }
}

/// Registers `node-1..=node-n` and starts their heartbeats (5 s timeout).
#[allow(dead_code)] // not every test binary uses it
pub async fn register_nodes(store: &Arc<dyn Store>, n: usize) -> Vec<Heartbeat> {
    register_nodes_with(store, n, Duration::from_secs(5)).await
}

/// Registers `node-1..=node-n` and starts their heartbeats with `timeout`.
pub async fn register_nodes_with(
    store: &Arc<dyn Store>,
    n: usize,
    timeout: Duration,
) -> Vec<Heartbeat> {
    let mut beats = Vec::new();
    for i in 1..=n {
        let name = format!("node-{i}");
        register(&**store, &node(&name)).await.unwrap();
        beats.push(
            Heartbeat::start(store.clone(), &name, timeout / 5, timeout)
                .await
                .unwrap(),
        );
    }
    beats
}

/// `node-1..=node-n` registered, heartbeating (with `timeout`) and active, on a fresh
/// embedded store.
#[allow(dead_code)] // not every test binary uses it
pub async fn active_cluster(n: usize, timeout: Duration) -> (Arc<dyn Store>, Vec<Heartbeat>) {
    use alcubierre_control::activation::Licence;
    use alcubierre_control::registry::{activate, finish_activation, nodes};
    let store: Arc<dyn Store> = Arc::new(alcubierre_store::MemStore::new());
    let beats = register_nodes_with(&store, n, timeout).await;
    let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
    if n >= 3 {
        activate(&*store, &names, &Licence::default(), 0)
            .await
            .unwrap();
        for (_, (node, _)) in nodes(&*store).await.unwrap() {
            finish_activation(&*store, &node).await.unwrap();
        }
    }
    (store, beats)
}

/// One request to the API router `app` (JSON body, bearer `token`): the status and the body
/// as JSON (a string when it is not JSON).
#[allow(dead_code)] // not every test binary uses it
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut r = axum::http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => r
            .header("content-type", "application/json")
            .body(axum::body::Body::from(b.to_string())),
        None => r.body(axum::body::Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    (status, v)
}
