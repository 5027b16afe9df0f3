//! Partition: three `alcubierre serve` nodes and etcd in network namespaces made by the test,
//! joined by a cluster network and a host network (see `common/netns.rs`). The primary's
//! cluster port is cut: it loses etcd and its followers but hosts still reach it. It must stop
//! serving within its lease (half the heartbeat timeout) — no read or write succeeds on its
//! path after that — while a follower becomes primary and serves the host through the other
//! paths. After healing, the old primary rejoins as an in-sync follower without divergence:
//! once it is back, the new primary is killed and every block still reads as its newest
//! acknowledged value.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alcubierre_control::volumes::Volume;
use alcubierre_nvmf::initiator::HostController;
use alcubierre_store::{EtcdStore, Store};
use bytes::Bytes;
use common::netns::{Net, CLUSTER, HOSTS};

const HEARTBEAT_TIMEOUT_MS: u64 = 2000;
/// A primary serves only while its lease runs: half the heartbeat timeout after the start of
/// its last successful store round trip.
const LEASE: Duration = Duration::from_millis(HEARTBEAT_TIMEOUT_MS / 2);
const BS: u32 = 4096;

fn block(b: u64, round: u64) -> Bytes {
    let mut d = vec![round as u8; BS as usize];
    d[..8].copy_from_slice(&b.to_le_bytes());
    d[8..16].copy_from_slice(&round.to_le_bytes());
    Bytes::from(d)
}

fn start_etcd(ns: &str, dir: &std::path::Path) -> common::Proc {
    let url = format!("http://{CLUSTER}.100:2379");
    let peer = "http://127.0.0.1:2380";
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "etcd", "--name", "t", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
        ])
        .args(["--initial-cluster", &format!("t={peer}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting etcd (Debian's etcd-server)");
    common::Proc(child)
}

fn start_node(ns: &str, dir: &std::path::Path, i: u8) -> common::Proc {
    let cluster = format!(
        "etcd = [\"http://{CLUSTER}.100:2379\"]\nheartbeat_interval_ms = 300\n\
         heartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}\nreplica_listen = \"{CLUSTER}.{i}:7000\"\n\
         api_listen = \"{CLUSTER}.{i}:8080\"\napi_token = \"t0ken-for-tests\""
    );
    let cfg = common::cluster::node_config(
        dir,
        usize::from(i),
        &format!("{HOSTS}.{i}:4420"),
        &cluster,
        "",
    );
    let (p, v) = common::spawn_ready_in(
        Some(ns),
        &["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()],
    );
    assert!(v["listening"].is_array(), "node-{i} did not start: {v}");
    p
}

async fn volume(store: &EtcdStore, id: &str) -> Volume {
    let kv = store.get(&format!("volumes/{id}")).await.unwrap().unwrap();
    serde_json::from_slice(&kv.value).unwrap()
}

fn portal(i: u8) -> SocketAddr {
    format!("{HOSTS}.{i}:4420").parse().unwrap()
}

fn node_number(name: &str) -> u8 {
    name.trim_start_matches("node-").parse().unwrap()
}

/// One I/O with a bound, as a host's I/O timeout.
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, alcubierre_nvmf::initiator::InitiatorError>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in 10 s".into()),
    }
}

/// Writes `data` at `b` through `c`, retrying until it succeeds (at most `secs`).
async fn write_until_ok(c: &mut HostController, b: u64, data: Bytes, secs: u64) -> Duration {
    let t0 = Instant::now();
    loop {
        match bounded(c.write(0, b, data.clone(), BS)).await {
            Ok(()) => return t0.elapsed(),
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(secs),
                    "block {b} not written in {secs} s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_stops_serving_within_its_lease_and_rejoins_without_divergence() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut net = Net::new();
    let etcd_ns = net.host("etcd", 100, false);
    let _etcd = start_etcd(&etcd_ns, dir.path());
    let mut procs = Vec::new();
    for i in 1..=3u8 {
        let ns = net.host(&format!("n{i}"), i, true);
        procs.push(Some(start_node(&ns, dir.path(), i)));
    }
    let store = EtcdStore::connect(
        &[format!("http://{CLUSTER}.100:2379")],
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let api = format!("{CLUSTER}.1:8080");
    common::cluster::json_call(
        &api,
        "PUT",
        "/api/v1/cluster/config",
        &format!(
            r#"{{"heartbeat_interval_ms":300,"heartbeat_timeout_ms":{HEARTBEAT_TIMEOUT_MS}}}"#
        ),
    )
    .await;
    common::cluster::activate_all(&api, &store, 3).await;
    let v = common::cluster::json_call(
        &api,
        "POST",
        "/api/v1/volumes",
        r#"{"name":"p","size":16777216,"block_size":4096}"#,
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let old = node_number(&volume(&store, &id).await.primary);
    let others: Vec<u8> = (1..=3).filter(|i| *i != old).collect();
    // The test host runs no keep-alive timer: its controllers ask for none (KATO 0).
    let host = alcubierre_nvmf::initiator::HostConfig {
        kato: Duration::ZERO,
        ..Default::default()
    };
    let mut paths = Vec::new();
    for i in 1..=4u8 {
        // Path 4 is a second connection to the primary, for a write during the partition.
        let i = if i == 4 { old } else { i };
        let t0 = Instant::now();
        let c = loop {
            match HostController::connect(portal(i), &nqn, &host, 1).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(20), "path {i}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        paths.push(c);
    }
    let path = |i: u8| (i - 1) as usize;
    for b in 0..64 {
        write_until_ok(&mut paths[path(old)], b, block(b, 1), 10).await;
    }

    // Cut the primary's cluster port. Its path keeps answering reads only while its lease
    // runs.
    net.cluster_port(old, false);
    let cut = Instant::now();
    let mut writer = paths.pop().expect("the second connection to the primary");
    let write = tokio::spawn(async move {
        // Never acknowledged: the followers are out of reach; it fails once the lease is over.
        let r = bounded(writer.write(0, 200, block(200, 9), BS)).await;
        (r, cut.elapsed())
    });
    let mut last_ok = None;
    let mut first_error = None;
    while cut.elapsed() < LEASE * 3 {
        let b = (cut.elapsed().as_millis() % 64) as u64;
        let t = Instant::now();
        match bounded(paths[path(old)].read(0, b, 1, BS)).await {
            Ok(d) => {
                assert_eq!(d, block(b, 1));
                last_ok = Some(t.duration_since(cut));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (w, failed_after) = write.await.unwrap();
    assert!(w.is_err(), "the isolated primary acknowledged a write");
    eprintln!(
        "partition: a write on the isolated primary failed {failed_after:?} after the cut: {w:?}"
    );
    let last_ok = last_ok.unwrap_or_default();
    eprintln!(
        "partition: the isolated primary node-{old} served its last read {last_ok:?} after the \
         cut (lease {LEASE:?}); then: {}",
        first_error.as_deref().unwrap_or("no error")
    );
    assert!(
        last_ok <= LEASE,
        "the isolated primary served a read {last_ok:?} after the cut, beyond its lease"
    );
    assert!(first_error.is_some(), "the isolated primary kept serving");

    // A follower becomes primary; the other paths serve the host.
    write_until_ok(&mut paths[path(others[0])], 0, block(0, 2), 30).await;
    let took = cut.elapsed();
    let v = volume(&store, &id).await;
    assert_ne!(node_number(&v.primary), old, "{v:?}");
    eprintln!(
        "partition: the new primary {} took a write through another path {took:?} after the cut",
        v.primary
    );
    for b in 1..64 {
        let p = others[(b % 2) as usize];
        write_until_ok(&mut paths[path(p)], b, block(b, 2), 10).await;
    }
    // Nothing is served on the isolated node's path.
    assert!(bounded(paths[path(old)].read(0, 0, 1, BS)).await.is_err());

    // Heal: the old primary rejoins as a follower and catches up.
    net.cluster_port(old, true);
    let healed = Instant::now();
    loop {
        let v = volume(&store, &id).await;
        if v.in_sync.len() == 3 {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "the old primary did not rejoin the in-sync set: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "partition: node-{old} back in sync {:?} after healing",
        healed.elapsed()
    );
    // Its path now forwards to the new primary.
    for b in 0..64 {
        let d = loop {
            if let Ok(d) = bounded(paths[path(old)].read(0, b, 1, BS)).await {
                break d;
            }
            assert!(healed.elapsed() < Duration::from_secs(90));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(d, block(b, 2), "block {b} through the healed node's path");
    }
    // No divergence: without the new primary, the others hold every acknowledged write.
    let new = node_number(&volume(&store, &id).await.primary);
    procs[path(new)].take();
    let survivor = (1..=3).find(|i| *i != new).unwrap();
    let t0 = Instant::now();
    for b in 0..64 {
        let d = loop {
            if let Ok(d) = bounded(paths[path(survivor)].read(0, b, 1, BS)).await {
                break d;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no failover after killing node-{new}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(d, block(b, 2), "block {b} after the second failover");
    }
    let d = bounded(paths[path(survivor)].read(0, 200, 1, BS))
        .await
        .unwrap();
    assert!(
        d == block(200, 9) || d.iter().all(|&x| x == 0),
        "the unacknowledged write is either there or not, never torn"
    );
}
