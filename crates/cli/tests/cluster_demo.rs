//! The README's main command, started by a test: three nodes, activated, a volume exported over
//! NVMe/TCP. The test connects with the crate's initiator, writes and reads back, asks the REST
//! API, and stops the demo with SIGTERM (it must exit cleanly).

mod common;

use std::process::Command;

use alcubierre_nvmf::initiator::{HostConfig, HostController};
use bytes::Bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_demo_serves_a_volume() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut demo, ready) =
        common::spawn_ready(&["demo".as_ref(), "--dir".as_ref(), dir.path().as_os_str()]);
    let addr = ready["primary_addr"].as_str().unwrap().parse().unwrap();
    let nqn = ready["nqn"].as_str().unwrap();

    let mut c = HostController::connect(addr, nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    let (nsze, bs) = c.namespace().await.unwrap();
    assert_eq!(nsze * bs as u64, 1 << 30);
    let data = Bytes::from((0..65536u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    c.write(0, 1000, data.clone(), bs).await.unwrap();
    assert_eq!(c.read(0, 1000, 16, bs).await.unwrap(), data);
    drop(c);

    let api = ready["api"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let token = ready["token"].as_str().unwrap().to_string();
    let (status, body) = tokio::task::spawn_blocking({
        let (api, token) = (api.clone(), token.clone());
        move || common::http(&api, "GET", "/api/v1/nodes", &token, "")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["activation"]["state"] == "active" && n["service"] == "available"));
    let (status, _) = tokio::task::spawn_blocking(move || {
        common::http(&api, "GET", "/api/v1/volumes/demo", "wrong", "")
    })
    .await
    .unwrap();
    assert_eq!(status, 401);

    let kill = Command::new("kill")
        .args(["-TERM", &demo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = demo.0.wait().unwrap();
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status:?}"
    );
}
