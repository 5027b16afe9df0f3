//! Nodes joining a cluster on a real etcd: three `alcubierre serve` processes register and
//! heartbeat; one is killed with SIGKILL and its service state flips to unavailable within the
//! configured heartbeat timeout, while the others stay available; activation then refuses it.

mod common;

use std::time::{Duration, Instant};

use alcubierre_control::activation::{ActivationError, Licence};
use alcubierre_control::model::Service;
use alcubierre_control::registry::{activate, service_states, RegistryError};
use alcubierre_store::testing::EtcdServer;

fn start_node(dir: &std::path::Path, i: usize, etcd: &str) -> common::Proc {
    start_node_with(dir, i, etcd, "").0
}

/// Starts node-i with `extra` lines in its [cluster] section; returns it and its ready line.
fn start_node_with(
    dir: &std::path::Path,
    i: usize,
    etcd: &str,
    extra: &str,
) -> (common::Proc, serde_json::Value) {
    let d = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(&d).unwrap();
    let cfg = d.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[node]
name = "node-{i}"
threads = 1
[cache]
device = "{d}/cache.img"
create_size = "64MiB"
[backend]
kind = "file"
dir = "{d}/backend"
[nvmf]
listen = ["127.0.0.1:0"]
[cluster]
etcd = ["{etcd}"]
heartbeat_interval_ms = 300
heartbeat_timeout_ms = 2000
{extra}
[[volume]]
name = "v{i}"
size = "64MiB"
hosts = ["*"]
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let (p, v) = common::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert!(v["listening"].is_array(), "node-{i} did not start: {v}");
    (p, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_becomes_unavailable_within_the_timeout() {
    let etcd = EtcdServer::start().unwrap();
    let store = etcd.connect().await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut nodes: Vec<common::Proc> = (1..=3)
        .map(|i| start_node(dir.path(), i, &etcd.endpoint))
        .collect();
    let st = service_states(&store).await.unwrap();
    assert_eq!(st.len(), 3, "{st:?}");
    assert!(st.values().all(|s| *s == Service::Available), "{st:?}");

    let killed = Instant::now();
    nodes[1].0.kill().unwrap();
    nodes[1].0.wait().unwrap();
    loop {
        let st = service_states(&store).await.unwrap();
        if st["node-2"] == Service::Unavailable {
            assert_eq!(st["node-1"], Service::Available);
            assert_eq!(st["node-3"], Service::Available);
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "node-2 still available: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!("node-2 unavailable {took:?} after SIGKILL (timeout 2 s)");
    assert!(took >= Duration::from_millis(1000), "too early: {took:?}");

    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let e = activate(&store, &names, &Licence::default(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Activation(ActivationError::Unavailable { ref node }) if node == "node-2"),
        "{e}"
    );
}

/// POST with the test token, off the async workers.
async fn post(api: &str, path: &'static str, body: &'static str) -> (u16, String) {
    let api = api.to_string();
    tokio::task::spawn_blocking(move || common::http(&api, "POST", path, "t0ken-for-tests", body))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_processes_form_a_cluster_and_export_a_placed_volume() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let api_extra = "api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"";
    let mut procs = Vec::new();
    let mut ready = Vec::new();
    for i in 1..=3 {
        let (p, r) = start_node_with(
            dir.path(),
            i,
            &etcd.endpoint,
            if i == 1 { api_extra } else { "" },
        );
        procs.push(p);
        ready.push(r);
    }
    let api = ready[0]["api"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    // Activate through the API; each node's agent finishes its own activation.
    let (st, body) = post(
        &api,
        "/api/v1/nodes/activate",
        r#"{"nodes":["node-1","node-2","node-3"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let store = etcd.connect().await;
    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    alcubierre_control::registry::wait_active(&store, &names, Duration::from_secs(10))
        .await
        .unwrap();
    // Create a volume; its first replica's node exports it.
    let (st, body) = post(
        &api,
        "/api/v1/volumes",
        r#"{"name":"shared","size":33554432}"#,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let primary = v["replicas"][0].as_str().unwrap();
    let idx: usize = primary
        .trim_start_matches("node-")
        .parse::<usize>()
        .unwrap()
        - 1;
    let addr: std::net::SocketAddr = ready[idx]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(
        v["id"].as_str().unwrap().parse().unwrap(),
    ));
    let t0 = Instant::now();
    let mut c = loop {
        match alcubierre_nvmf::initiator::HostController::connect(
            addr,
            &nqn,
            &Default::default(),
            1,
        )
        .await
        {
            Ok(c) => break c,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(10), "not exported: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let data = bytes::Bytes::from(vec![0x3c; 8192]);
    c.write(0, 7, data.clone(), 4096).await.unwrap();
    assert_eq!(c.read(0, 7, 2, 4096).await.unwrap(), data);
}
