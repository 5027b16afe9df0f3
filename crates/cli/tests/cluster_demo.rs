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
    assert_eq!(
        bs, 512,
        "the demo's volume is made on the defaults: 512-byte blocks"
    );
    let data = Bytes::from((0..65536u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    c.write(0, 1000, data.clone(), bs).await.unwrap();
    assert_eq!(c.read(0, 1000, 65536 / bs, bs).await.unwrap(), data);
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
    // `plan --check` grades the live cluster: the demo's small cache files are far below what
    // 40 TB usable needs (a failed rule, exit 1) and fit a tiny capacity.
    let plan_check = |tb: &str| {
        Command::new(env!("CARGO_BIN_EXE_alcubierre"))
            .args(["--json", "plan", "--check", "--usable-tb", tb, "--api"])
            .arg(format!("http://{api}"))
            .args(["--token", &token])
            .output()
            .unwrap()
    };
    let big = plan_check("40");
    assert!(!big.status.success());
    let report: serde_json::Value = serde_json::from_slice(&big.stdout).unwrap();
    let size = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "cache disk size")
        .unwrap();
    assert_eq!(size["level"], "fail", "{report}");
    assert!(String::from_utf8_lossy(&big.stderr).contains("1 planning rule(s) failed"));
    let tiny = plan_check("0.0001");
    assert!(
        tiny.status.success(),
        "{}",
        String::from_utf8_lossy(&tiny.stdout)
    );
    let (status, _) = tokio::task::spawn_blocking({
        let api = api.clone();
        move || common::http(&api, "GET", "/api/v1/volumes/demo", "wrong", "")
    })
    .await
    .unwrap();
    assert_eq!(status, 401);

    // Attach a host through the API: the connection info it returns reaches the volume on
    // every node (the followers forward to the primary), for that host only.
    let h1 = "nqn.2014-08.org.example:h1";
    let (status, body) = tokio::task::spawn_blocking({
        let (api, token) = (api.clone(), token.clone());
        let body = format!("{{\"nqn\": \"{h1}\"}}");
        move || {
            common::http(
                &api,
                "PUT",
                "/api/v1/volumes/demo/attachments/h1",
                &token,
                &body,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let att: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conn = &att["connection"]["nvme"];
    assert_eq!(conn["subsystem_nqn"], nqn);
    let portals = conn["portals"].as_array().unwrap();
    assert_eq!(portals.len(), 3, "{att}");
    assert_eq!(portals[0]["state"], "optimized");
    let host = |nqn: &str| HostConfig {
        hostnqn: nqn.into(),
        ..HostConfig::default()
    };
    let other = "nqn.2014-08.org.example:h2";
    let t0 = std::time::Instant::now();
    'applied: loop {
        // Every node applies the new access list on its own.
        let mut all = true;
        for p in portals {
            let a = format!("{}:{}", p["address"].as_str().unwrap(), p["port"]);
            let a: std::net::SocketAddr = a.parse().unwrap();
            let refused = HostController::connect(a, nqn, &host(other), 1)
                .await
                .is_err();
            all &= refused;
        }
        if all {
            break 'applied;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "a host that is not attached still connects"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for p in portals {
        let a = format!("{}:{}", p["address"].as_str().unwrap(), p["port"]);
        let mut c = HostController::connect(a.parse().unwrap(), nqn, &host(h1), 1)
            .await
            .unwrap_or_else(|e| panic!("the attached host connects through {p}: {e}"));
        assert_eq!(
            c.read(0, 1000, 65536 / bs, bs).await.unwrap(),
            data,
            "through {p}"
        );
    }

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
