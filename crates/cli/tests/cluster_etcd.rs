//! Nodes joining a cluster on a real etcd: three `alcubierre serve` processes register and
//! heartbeat; the cluster configuration changes their heartbeat timeout while they run; one is
//! killed with SIGKILL and its service state flips to unavailable within the new timeout, while
//! the others stay available; activation then refuses it. A four-node cluster serves, grows,
//! protects and heals a volume.

mod common;

use common::cluster::*;

use std::time::{Duration, Instant};

use alcubierre_nvmf::initiator::InitiatorError;

use alcubierre_control::activation::{ActivationError, Licence};
use alcubierre_control::model::Service;
use alcubierre_control::registry::{activate, service_states, RegistryError};
use alcubierre_store::testing::EtcdServer;
use alcubierre_store::Store;

fn start_node(dir: &std::path::Path, i: usize, etcd: &str) -> common::Proc {
    start_node_with(dir, i, etcd, "").0
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

    // The cluster configuration shortens the heartbeat timeout from the nodes' 3 s to 2 s (etcd's
    // shortest lease with its default election timeout); the running nodes apply it (a new
    // lease) without a restart.
    let lease_before = store.get("alive/node-2").await.unwrap().unwrap().lease;
    alcubierre_control::cluster::save(
        &store,
        &alcubierre_control::cluster::ClusterConfig {
            heartbeat_interval_ms: 300,
            heartbeat_timeout_ms: 2000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    while store.get("alive/node-2").await.unwrap().unwrap().lease == lease_before {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "new heartbeat timing not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    eprintln!("node-2 unavailable {took:?} after SIGKILL (timeout 2 s, applied while running)");
    assert!(took >= Duration::from_millis(1000), "too early: {took:?}");
    assert!(
        took < Duration::from_millis(2900),
        "the 3 s timeout still applies: {took:?}"
    );

    let names: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let e = activate(&store, &names, &Licence::default(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Activation(ActivationError::Unavailable { ref node }) if node == "node-2"),
        "{e}"
    );
}

/// Starts node-1..=node-n, each serving the API with the test token; returns the processes,
/// their ready lines and their API addresses.
/// Four `alcubierre serve` processes on a real etcd, each serving the API: activation through
/// the API, a placed volume exported by its primary, online growth seen by the host, per-volume
/// metrics, host access lists, a replica moved off a killed node by the leader, and delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_processes_form_a_cluster_that_serves_and_heals_volumes() {
    use alcubierre_nvmf::initiator::{HostConfig, HostController};
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut procs, ready, apis) = start_api_nodes(dir.path(), 4, &etcd.endpoint);
    let api = apis[0].clone();
    // The web console is served at the root.
    let (st, html) = call(&api, "GET", "/", "").await;
    assert_eq!(st, 200);
    assert!(html.contains("<title>Alcubierre console</title>"), "{html}");
    // The cluster configuration: a short migration delay (applied by the running leader).
    let cfg = json_call(
        &api,
        "PUT",
        "/api/v1/cluster/config",
        r#"{"migration_delay_s":1,"heartbeat_interval_ms":300,"heartbeat_timeout_ms":2000}"#,
    )
    .await;
    assert_eq!(cfg["migration_delay_s"], 1);
    // A backend that does not answer is refused before it is saved, naming the field.
    let (st, body) = call(
        &api,
        "PUT",
        "/api/v1/cluster/config",
        r#"{"backend":{"kind":"rbd","monitors":["127.0.0.1:9"],"pool":"rbd"}}"#,
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("backend.monitors"), "{body}");
    // Activation through the API; each node's agent finishes its own activation.
    let store = etcd.connect().await;
    activate_all(&api, &store, 4).await;
    let names: Vec<String> = (1..=4).map(|i| format!("node-{i}")).collect();
    let leader = eventually(10, "a leader", || async {
        let st = json_call(&api, "GET", "/api/v1/status", "").await;
        st["leader"].as_str().map(str::to_string)
    })
    .await;
    eprintln!("leader: {leader}");

    // A host and a volume only it may attach.
    let host_nqn = "nqn.2014-08.org.example:host-a";
    json_call(
        &api,
        "PUT",
        "/api/v1/hosts/host-a",
        &format!(r#"{{"nqn":"{host_nqn}"}}"#),
    )
    .await;
    let (st, body) = call(
        &api,
        "POST",
        "/api/v1/volumes",
        r#"{"name":"shared","size":33554432,"block_size":4096,"hosts":["host-a"]}"#,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let primary = v["primary"].as_str().unwrap().to_string();
    assert_eq!(v["replicas"][0], v["primary"]);
    let pidx = node_index(&primary);
    let addr: std::net::SocketAddr = ready[pidx]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let host = HostConfig {
        hostnqn: host_nqn.into(),
        ..HostConfig::default()
    };
    let mut c = eventually(10, "the volume exported", || async {
        HostController::connect(addr, &nqn, &host, 1).await.ok()
    })
    .await;
    // Another host is refused.
    let e = HostController::connect(addr, &nqn, &HostConfig::default(), 1)
        .await
        .err()
        .expect("a host not on the access list must be refused");
    // Connect Invalid Host (command specific status 84h).
    assert!(e.to_string().contains("sc=0x84"), "{e}");
    let data = bytes::Bytes::from(vec![0x3c; 8192]);
    c.write(0, 7, data.clone(), 4096).await.unwrap();
    assert_eq!(c.read(0, 7, 2, 4096).await.unwrap(), data);
    assert_eq!(c.namespace().await.unwrap(), (8192, 4096));

    // Opening the volume to any host applies to the live export.
    let opened = json_call(
        &api,
        "PUT",
        &format!("/api/v1/volumes/{id}/hosts"),
        r#"{"hosts":[]}"#,
    )
    .await;
    assert_eq!(opened["hosts"], serde_json::json!([]));
    let other = eventually(10, "any host admitted", || async {
        HostController::connect(addr, &nqn, &HostConfig::default(), 1)
            .await
            .ok()
    })
    .await;
    drop(other);
    let (st, body) = call(
        &api,
        "PUT",
        &format!("/api/v1/volumes/{id}/hosts"),
        r#"{"hosts":["nobody"]}"#,
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\"field\":\"hosts\""), "{body}");

    // A QoS policy on the volume is applied by the exporting node, and so is a change to it.
    json_call(&api, "PUT", "/api/v1/qos/gold", r#"{"write_iops":500}"#).await;
    json_call(
        &api,
        "PUT",
        &format!("/api/v1/volumes/{id}/qos"),
        r#"{"qos":"gold"}"#,
    )
    .await;
    let limit = |n: u32| {
        format!(
            "alcubierre_volume_qos_limit{{node=\"{primary}\",volume=\"{id}\",name=\"shared\",limit=\"write_iops\"}} {n}\n"
        )
    };
    let want = limit(500);
    eventually(10, "the QoS policy applied", || async {
        let (_, m) = call(&apis[pidx], "GET", "/metrics", "").await;
        m.contains(&want).then_some(())
    })
    .await;
    json_call(&api, "PUT", "/api/v1/qos/gold", r#"{"write_iops":1000}"#).await;
    let want = limit(1000);
    eventually(10, "the changed QoS policy applied", || async {
        let (_, m) = call(&apis[pidx], "GET", "/metrics", "").await;
        m.contains(&want).then_some(())
    })
    .await;

    // The primary's /metrics counts the volume's I/O.
    let (st, m) = call(&apis[pidx], "GET", "/metrics", "").await;
    assert_eq!(st, 200);
    let line = |op: &str, what: &str| {
        format!(
            "alcubierre_volume_{what}_total{{node=\"{primary}\",volume=\"{id}\",name=\"shared\",op=\"{op}\"}}"
        )
    };
    assert!(m.contains(&format!("{} 1\n", line("write", "ops"))), "{m}");
    assert!(
        m.contains(&format!("{} 8192\n", line("write", "bytes"))),
        "{m}"
    );
    assert!(m.contains(&format!("{} 1\n", line("read", "ops"))), "{m}");
    assert!(
        m.contains("alcubierre_volume_latency_seconds_bucket{"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "alcubierre_cache_dirty_bytes{{node=\"{primary}\"}}"
        )),
        "{m}"
    );
    // The default destage share: 50 MB/s per node.
    assert!(
        m.contains(&format!(
            "alcubierre_cache_destage_rate_limit_bytes{{node=\"{primary}\"}} 50000000"
        )),
        "{m}"
    );
    // A new destage rate is applied to running nodes: 4 active nodes share 80 MB/s.
    json_call(
        &api,
        "PUT",
        "/api/v1/cluster/config",
        r#"{"migration_delay_s":1,"heartbeat_interval_ms":300,"heartbeat_timeout_ms":2000,"destage_rate":80000000}"#,
    )
    .await;
    let want = format!("alcubierre_cache_destage_rate_limit_bytes{{node=\"{primary}\"}} 20000000");
    eventually(10, "the new destage rate applied", || async {
        let (_, m) = call(&apis[pidx], "GET", "/metrics", "").await;
        m.contains(&want).then_some(())
    })
    .await;

    // Online growth: the host sees the new size on the same connection, and a controller on
    // a follower's path is told too (Namespace Attribute Changed): the namespace is one across
    // the nodes.
    let follower = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| **r != v["primary"])
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let faddr: std::net::SocketAddr = ready[node_index(&follower)]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut f = HostController::connect(faddr, &nqn, &host, 1)
        .await
        .unwrap();
    let aec = alcubierre_nvmf::initiator::cmd::set_features(
        alcubierre_nvmf::spec::feat::ASYNC_EVENT,
        1 << 8,
    );
    f.admin.execute(aec, None, 0).await.unwrap().ok().unwrap();
    let aer = alcubierre_nvmf::initiator::cmd::new(alcubierre_nvmf::spec::admin_op::ASYNC_EVENT, 0);
    let aer = f.admin.submit(aer, None, 0);
    f.admin.flush().await.unwrap();
    json_call(
        &api,
        "POST",
        &format!("/api/v1/volumes/{id}/resize"),
        r#"{"size":67108864}"#,
    )
    .await;
    let (cid, notice) = tokio::time::timeout(Duration::from_secs(10), f.admin.next())
        .await
        .expect("the follower's controller told of the new size within 10 s")
        .unwrap();
    assert_eq!(cid, aer);
    assert_eq!(
        notice.cqe.dw0, 0x0004_0002,
        "Namespace Attribute Changed, log page 04h"
    );
    assert_eq!(f.namespace().await.unwrap().0, 16384);
    drop(f);
    let t0 = Instant::now();
    while c.namespace().await.unwrap().0 != 16384 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the namespace did not grow"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.write(0, 16383, bytes::Bytes::from(vec![9u8; 4096]), 4096)
        .await
        .unwrap();

    // A secondary is killed: after the heartbeat timeout and the migration delay, the leader
    // moves its replica to the fourth node; the primary keeps serving meanwhile.
    let secondary = v["replicas"][1].as_str().unwrap().to_string();
    let spare = names
        .iter()
        .find(|n| !v["replicas"].as_array().unwrap().iter().any(|r| r == *n))
        .unwrap()
        .clone();
    let sidx = node_index(&secondary);
    procs[sidx].0.kill().unwrap();
    procs[sidx].0.wait().unwrap();
    let killed = Instant::now();
    // Ask a node that is still up.
    let live_api = apis[(0..4).find(|i| *i != sidx).unwrap()].clone();
    // The primary reports the lost follower: in its metrics, and as replication progress.
    let papi = apis[node_index(&primary)].clone();
    eventually(10, "the primary reports the follower disconnected", || async {
        let (_, m) = call(&papi, "GET", "/metrics", "").await;
        let line = format!(
            "alcubierre_replica_connected{{node=\"{primary}\",volume=\"{id}\",name=\"shared\",follower=\"{secondary}\"}} 0"
        );
        m.contains(&line).then_some(())
    })
    .await;
    let lagging = eventually(10, "replication progress published", || async {
        let r = json_call(&live_api, "GET", "/api/v1/replication", "").await;
        let p = r
            .as_array()?
            .iter()
            .find(|p| p["volume"] == id.as_str())?
            .clone();
        let f = p["followers"]
            .as_array()?
            .iter()
            .find(|f| f["node"] == secondary.as_str())?
            .clone();
        (f["connected"] == false).then_some(p)
    })
    .await;
    assert_eq!(
        lagging["primary"].as_str(),
        Some(primary.as_str()),
        "{lagging}"
    );
    let healed = eventually(20, "the lost replica moved", || async {
        let v = json_call(&live_api, "GET", &format!("/api/v1/volumes/{id}"), "").await;
        let r = v["replicas"].as_array().unwrap();
        (!r.iter().any(|x| x == secondary.as_str())).then_some(v)
    })
    .await;
    eprintln!(
        "replica moved {:?} after SIGKILL: {healed}",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "before the timeout and delay"
    );
    assert_eq!(healed["primary"].as_str(), Some(primary.as_str()));
    assert!(
        healed["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == spare.as_str()),
        "{healed}"
    );
    assert!(healed["epoch"].as_u64().unwrap() > v["epoch"].as_u64().unwrap());
    // I/O continues. A path status is retried, as a host's multipath does: the primary's node
    // may learn the new epoch from the store after a follower did, and serves nothing until it
    // has (it stays the primary; it must not stay demoted).
    let read = Instant::now();
    let got = loop {
        match c.read(0, 7, 2, 4096).await {
            Err(InitiatorError::Status { status, .. })
                if status.sct == 3 && read.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(got, data, "I/O continues");
    // Once the new replica is rebuilt into the in-sync set, nothing is catching up.
    eventually(
        20,
        "the new replica rebuilt and the progress record gone",
        || async {
            let v = json_call(&live_api, "GET", &format!("/api/v1/volumes/{id}"), "").await;
            let r = json_call(&live_api, "GET", "/api/v1/replication", "").await;
            (v["in_sync"].as_array()?.len() == 3 && r.as_array()?.is_empty()).then_some(())
        },
    )
    .await;

    // The primary counted bringing the new replica up to date (a rebuild from the destage
    // point, or a resync from the start when nothing had been destaged yet).
    let (_, m) = call(&papi, "GET", "/metrics", "").await;
    let count = |metric: &str| -> u64 {
        let prefix = format!("{metric}{{node=\"{primary}\",volume=\"{id}\",name=\"shared\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("{metric} missing:\n{m}"))
    };
    assert!(
        count("alcubierre_replica_rebuilds_total") + count("alcubierre_replica_resyncs_total") >= 1,
        "{m}"
    );

    // Delete: the primary stops exporting it.
    json_call(&live_api, "DELETE", &format!("/api/v1/volumes/{id}"), "").await;
    eventually(10, "the volume unexported", || async {
        HostController::connect(addr, &nqn, &host, 1)
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

/// The API over TLS: the CLI verifies the node's certificate against `--ca-cert`; a client that
/// does not trust it, or speaks plain HTTP, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_tls() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // A private CA and a node certificate it signs for 127.0.0.1, as an operator would make.
    let d = dir.path();
    let (ca, cert, key) = (d.join("ca.crt"), d.join("api.crt"), d.join("api.key"));
    common::certs::make_certs(d);
    let extra = format!(
        "api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"\napi_tls_cert = \"{}\"\napi_tls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let (_p, ready) = start_node_with(dir.path(), 1, &etcd.endpoint, &extra);
    let api = ready["api"].as_str().unwrap().to_string();
    assert!(api.starts_with("https://127.0.0.1:"), "{api}");
    // `alcubierre [--json] node <API options> list`
    let cli = |args: &[&str]| {
        let (head, sub) = args.split_at(args.len() - 1);
        std::process::Command::new(env!("CARGO_BIN_EXE_alcubierre"))
            .args(head)
            .args(["--api", &api, "--token", "t0ken-for-tests"])
            .args(sub)
            .env_remove("ALCUBIERRE_CA_CERT")
            .output()
            .unwrap()
    };
    let out = cli(&["--json", "node", "--ca-cert", ca.to_str().unwrap(), "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes[0]["name"], "node-1", "{nodes}");
    // The system CAs do not vouch for the private CA.
    let out = cli(&["node", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let hostport = api.trim_start_matches("https://").to_string();
    let r = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&hostport).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(!r.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&r));
}

/// Replication across processes: three `serve` nodes on etcd; a host writes through the
/// primary; the primary is killed with SIGKILL; the leader promotes an in-sync follower, which
/// exports the volume with every acknowledged write. Prints the failover time (kill to the first
/// successful write on the new primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_with_every_acknowledged_write() {
    use alcubierre_nvmf::initiator::HostController;
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut procs, ready, apis, _store, v) =
        three_nodes_and_a_volume(dir.path(), &etcd, "r").await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["in_sync"].as_array().unwrap().len(), 3);
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let portal = |name: &str| -> std::net::SocketAddr {
        ready[node_index(name)]["listening"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let primary = v["primary"].as_str().unwrap().to_string();
    let pidx = node_index(&primary);
    // The host has two paths: the primary's and another replica's (which survives).
    let other = (1..=3)
        .map(|i| format!("node-{i}"))
        .find(|n| *n != primary)
        .unwrap();
    let connect = |name: String| {
        let addr = portal(&name);
        let nqn = nqn.clone();
        async move {
            eventually(10, "the volume exported", || async {
                HostController::connect(addr, &nqn, &Default::default(), 1)
                    .await
                    .ok()
            })
            .await
        }
    };
    let mut c = connect(primary.clone()).await;
    let mut c2 = connect(other.clone()).await;
    assert_eq!(
        ana_state(&mut c).await,
        1,
        "the primary's path is optimized"
    );
    assert_eq!(
        ana_state(&mut c2).await,
        2,
        "a follower's path is non-optimized"
    );
    let block = |i: u64| {
        let mut d = vec![(i % 251) as u8; 4096];
        d[..8].copy_from_slice(&i.to_le_bytes());
        bytes::Bytes::from(d)
    };
    // Writes on both paths; the follower's are forwarded to the primary.
    for i in 0..64 {
        let path = if i % 2 == 0 { &mut c } else { &mut c2 };
        path.write(0, i * 7, block(i), 4096).await.unwrap();
    }
    for i in 0..64 {
        assert_eq!(c2.read(0, i * 7, 1, 4096).await.unwrap(), block(i));
    }
    drop(c);

    procs[pidx].0.kill().unwrap();
    procs[pidx].0.wait().unwrap();
    let killed = Instant::now();
    // I/O on the surviving path fails with a path error until the failover, then succeeds
    // without reconnecting.
    let mut failures = 0;
    loop {
        // The failing writes keep the controller alive (Traffic Based Keep Alive); no Keep
        // Alive command is needed.
        match c2.write(0, 1000, block(1000), 4096).await {
            Ok(_) => break,
            Err(e) => {
                failures += 1;
                assert!(
                    killed.elapsed() < Duration::from_secs(20),
                    "no failover on the surviving path: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let failover = killed.elapsed();
    let live = apis[(0..3).find(|i| *i != pidx).unwrap()].clone();
    let v = json_call(&live, "GET", &format!("/api/v1/volumes/{id}"), "").await;
    let new_primary = v["primary"].as_str().unwrap().to_string();
    assert_ne!(new_primary, primary);
    eprintln!(
        "failover: primary {primary} killed; the path on {other} took a write after \
         {failover:?} ({failures} failed attempts); new primary {new_primary}"
    );
    for i in 0..64 {
        assert_eq!(
            c2.read(0, i * 7, 1, 4096).await.unwrap(),
            block(i),
            "block {i}"
        );
    }
    assert_eq!(c2.read(0, 1000, 1, 4096).await.unwrap(), block(1000));
    let want = if new_primary == other { 1 } else { 2 };
    assert_eq!(
        ana_state(&mut c2).await,
        want,
        "the surviving path's ANA state follows its role"
    );
    let v = json_call(&live, "GET", &format!("/api/v1/volumes/{id}"), "").await;
    assert!(
        !v["in_sync"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == primary.as_str()),
        "{v}"
    );
}

/// Every node of a cluster must use the cluster's one backend: a node whose backend lacks the
/// marker the first node recorded refuses to join, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_backend_refuses_to_join() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let _first = start_node(dir.path(), 1, &etcd.endpoint);
    // Node 2's files, and so its backend directory, live elsewhere.
    let other = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cluster = format!(
        "etcd = [\"{}\"]\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 3000",
        etcd.endpoint
    );
    let cfg = node_config(other.path(), 2, "127.0.0.1:0", &cluster, "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a node with its own backend joined the cluster");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("lacks this cluster's marker"), "{err}");
    // With the shared backend it joins.
    let (_second, ready) = start_node_with(dir.path(), 2, &etcd.endpoint, "");
    assert!(ready["listening"].is_array());
}
