//! A cluster node without a `[backend]` section opens the backend the cluster configuration
//! names: with none named it refuses to start and says why; with one named (a directory, or a
//! throwaway Ceph), three such nodes serve a replicated volume whose image lives in that
//! backend, and a write reaches the RBD image; on Ceph, a volume snapshot is an RBD snapshot
//! and a clone from it a flattened RBD image.

mod common;

use common::cluster::*;

use alcubierre_control::cluster::{self, BackendAddress, ClusterConfig};
use alcubierre_nvmf::initiator::{HostConfig, HostController};
use alcubierre_store::testing::EtcdServer;

/// Node-i's configuration without its `[backend]` section (and with the test API).
fn config_without_backend(dir: &std::path::Path, i: usize, etcd: &str) -> std::path::PathBuf {
    let cluster = format!(
        "etcd = [\"{etcd}\"]\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 3000\n\
         api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\""
    );
    let cfg = node_config(dir, i, "127.0.0.1:0", &cluster, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| *l != "[backend]" && *l != "kind = \"file\"" && !l.starts_with("dir = "))
        .collect();
    assert!(!kept.iter().any(|l| l.contains("backend")), "{kept:?}");
    std::fs::write(&cfg, kept.join("\n")).unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_a_backend_section_use_the_cluster_configurations() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Connecting waits until etcd answers.
    let _store = etcd.connect().await;

    // No backend anywhere: the node refuses to start, naming what to set.
    let cfg = config_without_backend(dir.path(), 1, &etcd.endpoint);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alcubierre"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names no backend"),
        "the refusal says why: {err}"
    );

    // The cluster configuration names a backend: the nodes open it.
    let backend = dir.path().join("cluster-backend");
    std::fs::create_dir_all(&backend).unwrap();
    let address = BackendAddress::File {
        path: backend.display().to_string(),
    };
    let (_procs, _, id, _, _) = serve_one_volume(dir.path(), &etcd, address).await;
    // The volume's image is in the cluster configuration's backend, and nowhere else.
    assert!(backend.join(format!("{id}.img")).exists());
    assert!(!dir.path().join("backend").exists());
}

/// Saves a cluster configuration naming `backend`, starts three nodes without a `[backend]`
/// section, creates a volume and writes block 3 (0x7e) through NVMe/TCP, reading it back; the
/// nodes and their ready lines, the volume's id, the first node's API address and the host's
/// controller.
async fn serve_one_volume(
    dir: &std::path::Path,
    etcd: &EtcdServer,
    backend: BackendAddress,
) -> (
    Vec<common::Proc>,
    Vec<serde_json::Value>,
    String,
    String,
    HostController,
) {
    let store = etcd.connect().await;
    let config = ClusterConfig {
        backend: Some(backend),
        ..ClusterConfig::default()
    };
    cluster::save(&store, &config).await.unwrap();
    let (procs, ready): (Vec<_>, Vec<_>) = (1..=3)
        .map(|i| {
            let cfg = config_without_backend(dir, i, &etcd.endpoint);
            common::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()])
        })
        .unzip();
    let api = ready[0]["api"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    activate_all(&api, &store, 3).await;
    let v = json_call(
        &api,
        "POST",
        "/api/v1/volumes",
        r#"{"name":"cb","size":16777216,"block_size":4096}"#,
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let primary = v["primary"].as_str().unwrap();
    let addr: std::net::SocketAddr = ready[node_index(primary)]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let mut c = connect(addr, &nqn).await;
    let data = bytes::Bytes::from(vec![0x7e; 4096]);
    c.write(0, 3, data.clone(), 4096).await.unwrap();
    assert_eq!(c.read(0, 3, 1, 4096).await.unwrap(), data);
    (procs, ready, id, api, c)
}

/// A host controller on the volume `nqn` at `addr`, once the node serves it there: exported
/// and its path ANA optimized (a path is inaccessible while its node starts to serve the
/// volume, and a host would retry its I/O on another one).
async fn connect(addr: std::net::SocketAddr, nqn: &str) -> HostController {
    eventually(10, "the volume served", || async {
        // No keep-alive timeout: the test keeps this host idle while it waits for destage.
        let host = HostConfig {
            kato: std::time::Duration::ZERO,
            ..HostConfig::default()
        };
        let mut c = HostController::connect(addr, nqn, &host, 1).await.ok()?;
        (ana_state(&mut c).await == alcubierre_nvmf::AnaState::Optimized as u8).then_some(c)
    })
    .await
}

/// The RBD backend address of a throwaway Ceph.
fn rbd_address(ceph: &alcubierre_rbd::testing::CephCluster) -> BackendAddress {
    let conf = std::fs::read_to_string(&ceph.conf).unwrap();
    let mon = conf
        .lines()
        .find_map(|l| l.strip_prefix("mon host = "))
        .unwrap()
        .to_string();
    BackendAddress::Rbd {
        monitors: vec![mon],
        pool: ceph.pool.clone(),
        user: None,
        keyring: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_open_a_ceph_backend_named_by_the_cluster_configuration() {
    let ceph = alcubierre_rbd::testing::CephCluster::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_procs, _, id, api, mut c) = serve_one_volume(dir.path(), &etcd, rbd_address(&ceph)).await;
    // The image is in Ceph, and the write reaches it once destaged.
    let image = alcubierre_rbd::image_name(alcubierre_types::VolumeId(id.parse().unwrap()));
    let info = ceph.rbd(&["info", &image]).unwrap();
    assert!(info.contains("size 16 MiB"), "{info}");
    let out = dir.path().join("export");
    let exported = eventually(60, "the write destaged into the image", || {
        let _ = std::fs::remove_file(&out);
        let got = ceph
            .rbd(&["export", &image, out.to_str().unwrap()])
            .ok()
            .and_then(|_| std::fs::read(&out).ok())
            .filter(|b| b.len() == 16 << 20 && b[3 * 4096..4 * 4096].iter().all(|&x| x == 0x7e));
        async move { got }
    })
    .await;
    assert!(exported[..3 * 4096].iter().all(|&x| x == 0));
    assert!(!dir.path().join("backend").exists());

    // A snapshot is an RBD snapshot of the image, taken by the primary after destaging (the
    // file backend's test in snapshots.rs shows that writes only in the cache are in it).
    c.write(0, 7, bytes::Bytes::from(vec![0x5a; 4096]), 4096)
        .await
        .unwrap();
    let (status, body) = call(
        &api,
        "POST",
        &format!("/api/v1/volumes/{id}/snapshots"),
        r#"{"name":"before-upgrade"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually(60, "the snapshot ready", || async {
        let s = json_call(
            &api,
            "GET",
            &format!("/api/v1/volumes/{id}/snapshots/before-upgrade"),
            "",
        )
        .await;
        (s["state"] == "ready").then_some(())
    })
    .await;
    let snaps = ceph.rbd(&["snap", "ls", &image]).unwrap();
    assert!(snaps.contains("before-upgrade"), "{snaps}");
    // A clone is a new image, flattened: independent of the snapshot.
    let clone = json_call(
        &api,
        "POST",
        "/api/v1/volumes",
        r#"{"name":"cb-clone","size":33554432,"source":{"volume":"cb","snapshot":"before-upgrade"}}"#,
    )
    .await;
    let clone_image = alcubierre_rbd::image_name(alcubierre_types::VolumeId(
        clone["id"].as_str().unwrap().parse().unwrap(),
    ));
    let info = ceph.rbd(&["info", &clone_image]).unwrap();
    assert!(
        info.contains("size 32 MiB") && !info.contains("parent"),
        "{info}"
    );
    let (status, body) = call(
        &api,
        "DELETE",
        &format!("/api/v1/volumes/{id}/snapshots/before-upgrade"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ceph.rbd(&["snap", "ls", &image]).unwrap(), "");
    let _ = std::fs::remove_file(&out);
    ceph.rbd(&["export", &clone_image, out.to_str().unwrap()])
        .unwrap();
    let cloned = std::fs::read(&out).unwrap();
    assert_eq!(cloned.len(), 32 << 20);
    assert!(cloned[3 * 4096..4 * 4096].iter().all(|&x| x == 0x7e));
    assert!(cloned[7 * 4096..8 * 4096].iter().all(|&x| x == 0x5a));
    assert!(cloned[16 << 20..].iter().all(|&x| x == 0));
}

/// Block `block`'s first byte in the RBD image, read with Ceph's own tool.
fn image_byte(ceph: &alcubierre_rbd::testing::CephCluster, image: &str, block: u64) -> Option<u8> {
    let out = std::env::temp_dir().join(format!("{image}-export"));
    let _ = std::fs::remove_file(&out);
    ceph.rbd(&["export", image, out.to_str().unwrap()]).ok()?;
    let b = std::fs::read(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    let at = block as usize * 4096;
    let blk = b.get(at..at + 4096)?;
    blk.iter().all(|&x| x == blk[0]).then_some(blk[0])
}

/// The image's locks (`rbd lock ls`): each one's id, locker (`client.N`) and address.
fn locks(ceph: &alcubierre_rbd::testing::CephCluster, image: &str) -> Vec<[String; 3]> {
    let out = ceph
        .rbd(&["lock", "ls", "--format", "json", image])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let all: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(m) => m.values().collect(),
        _ => Vec::new(),
    };
    all.iter()
        .filter_map(|l| {
            let f = |k: &str| l[k].as_str().map(str::to_string);
            Some([f("id")?, f("locker")?, f("address")?])
        })
        .collect()
}

/// The addresses of the clients holding the image's lock.
fn lockers(ceph: &alcubierre_rbd::testing::CephCluster, image: &str) -> Vec<String> {
    locks(ceph, image).into_iter().map(|[_, _, a]| a).collect()
}

/// Waits up to `secs` until block `block` of the image holds `byte` throughout.
async fn image_holds(
    ceph: &alcubierre_rbd::testing::CephCluster,
    image: &str,
    block: u64,
    byte: u8,
    secs: u64,
) {
    eventually(secs, &format!("block {block} destaged"), || {
        let b = image_byte(ceph, image, block);
        async move { (b == Some(byte)).then_some(()) }
    })
    .await;
}

/// Waits up to 30 s until the volume at `path` (asked through `api`) has a primary other than
/// `not`; its name.
async fn primary_other_than(api: &str, path: &str, not: &str) -> String {
    eventually(30, &format!("a primary other than {not}"), || async {
        let v = json_call(api, "GET", path, "").await;
        let p = v["primary"].as_str()?.to_string();
        (p != not).then_some(p)
    })
    .await
}

/// Writes block `block` full of `byte`, again while the paths refuse it (a primary waiting for
/// its epoch), as a host would, for at most 60 s.
async fn write_until_accepted(c: &mut HostController, block: u64, byte: u8) {
    let t0 = std::time::Instant::now();
    while c
        .write(0, block, bytes::Bytes::from(vec![byte; 4096]), 4096)
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "write refused for 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn signal(p: &common::Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The old primary stalls (SIGSTOP) with the volume's RBD image claimed. The new primary
/// claims the image: Ceph blocklists the old one, whose writes can then never land over the
/// new primary's. When the old primary resumes, it follows and catches up, and the image holds
/// every write (docs/design/replication.md, "Backend fencing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_is_fenced_off_the_rbd_image_by_the_new_primary() {
    let ceph = alcubierre_rbd::testing::CephCluster::start().unwrap();
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (procs, ready, id, _, _c) = serve_one_volume(dir.path(), &etcd, rbd_address(&ceph)).await;
    let api = |i: usize| {
        ready[i]["api"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string()
    };
    let path = format!("/api/v1/volumes/{id}");
    let v = json_call(&api(0), "GET", &path, "").await;
    let old_name = v["primary"].as_str().unwrap().to_string();
    let old = node_index(&old_name);
    let image = alcubierre_rbd::image_name(alcubierre_types::VolumeId(id.parse().unwrap()));

    // Destaged by the primary, which holds the image's lock.
    image_holds(&ceph, &image, 3, 0x7e, 60).await;
    let held = lockers(&ceph, &image);
    assert_eq!(held.len(), 1, "{held:?}");
    let old_addr = held[0].clone();

    // The primary stalls; another node is made primary.
    signal(&procs[old], "-STOP");
    let other = (old + 1) % 3;
    let new_name = primary_other_than(&api(other), &path, &old_name).await;
    let new = node_index(&new_name);
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let addr = ready[new]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut c = connect(addr, &nqn).await;
    c.write(0, 4, bytes::Bytes::from(vec![0x44; 4096]), 4096)
        .await
        .unwrap();

    // The new primary claims the image before destaging: it holds the lock, and the old
    // primary's client is blocklisted.
    image_holds(&ceph, &image, 4, 0x44, 90).await;
    let held = lockers(&ceph, &image);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_ne!(held[0], old_addr, "the lock moved");
    let blocklist = ceph.ceph(&["osd", "blocklist", "ls"]).unwrap();
    assert!(
        blocklist.contains(&old_addr),
        "{old_addr} not in {blocklist}"
    );

    // The old primary resumes: it follows the new one and catches up.
    signal(&procs[old], "-CONT");
    eventually(60, "the old primary back in the in-sync set", || {
        let (api, path, old_name) = (api(new), path.clone(), old_name.clone());
        async move {
            let v = json_call(&api, "GET", &path, "").await;
            let in_sync: Vec<&str> = v["in_sync"]
                .as_array()?
                .iter()
                .filter_map(|x| x.as_str())
                .collect();
            (in_sync.len() == 3 && in_sync.contains(&old_name.as_str())).then_some(())
        }
    })
    .await;
    c.write(0, 5, bytes::Bytes::from(vec![0x55; 4096]), 4096)
        .await
        .unwrap();
    image_holds(&ceph, &image, 5, 0x55, 60).await;
    assert_eq!(image_byte(&ceph, &image, 3), Some(0x7e));
    assert_eq!(image_byte(&ceph, &image, 4), Some(0x44));
    assert_eq!(
        held,
        lockers(&ceph, &image),
        "the new primary kept the lock"
    );

    // An operator breaks the primary's lock (`rbd lock rm`, which blocklists it) while the
    // store still names it primary: its next destage is fenced, it stops serving and asks for
    // a new epoch, then serves again under it and claims the image anew (a new client).
    let epoch = json_call(&api(new), "GET", &path, "").await["epoch"]
        .as_u64()
        .unwrap();
    let [lock_id, locker, addr_before] = locks(&ceph, &image).remove(0);
    ceph.rbd(&["lock", "rm", &image, &lock_id, &locker])
        .unwrap();
    // A write after the break: the primary's destage of it meets the fence. (The host's write
    // may be refused while the primary waits for its new epoch: it retries, as a host would.)
    write_until_accepted(&mut c, 6, 0x66).await;
    eventually(120, "block 6 destaged under a new epoch", || {
        let (api, path) = (api(new), path.clone());
        let b = image_byte(&ceph, &image, 6);
        async move {
            let v = json_call(&api, "GET", &path, "").await;
            (b == Some(0x66) && v["epoch"].as_u64()? > epoch).then_some(())
        }
    })
    .await;
    let v = json_call(&api(new), "GET", &path, "").await;
    assert_eq!(v["primary"].as_str(), Some(new_name.as_str()), "{v}");
    // The node's metrics count both claims (at promotion and after the new epoch) and the
    // lost one.
    let (_, m) = call(&api(new), "GET", "/metrics", "").await;
    let metric = |name: &str| {
        m.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {m}"))
    };
    assert_eq!(metric("alcubierre_cache_backend_claims_total"), 2);
    assert_eq!(metric("alcubierre_cache_backend_claims_lost_total"), 1);
    let held = lockers(&ceph, &image);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_ne!(held[0], addr_before, "claimed by the node's new client");
    for (block, byte) in [(3, 0x7e), (4, 0x44), (5, 0x55)] {
        assert_eq!(
            image_byte(&ceph, &image, block),
            Some(byte),
            "block {block}"
        );
    }

    // A primary that moves away in order (its node is drained) gives its claim up: the next
    // primary's claim blocklists nobody.
    let blocklisted = ceph.ceph(&["osd", "blocklist", "ls"]).unwrap();
    let addr_drained = held[0].clone();
    json_call(
        &api(new),
        "POST",
        &format!("/api/v1/nodes/{new_name}/drain"),
        "",
    )
    .await;
    let third = primary_other_than(&api(old), &path, &new_name).await;
    // Written through the drained node's path, which forwards to the new primary.
    write_until_accepted(&mut c, 7, 0x77).await;
    image_holds(&ceph, &image, 7, 0x77, 90).await;
    let held = lockers(&ceph, &image);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_ne!(held[0], addr_drained, "{third} holds the lock");
    let now = ceph.ceph(&["osd", "blocklist", "ls"]).unwrap();
    assert!(
        !now.contains(&addr_drained),
        "the drained node was blocklisted: {now}"
    );
    assert_eq!(
        now.lines().filter(|l| l.contains(':')).count(),
        blocklisted.lines().filter(|l| l.contains(':')).count(),
        "nobody new blocklisted: {now}"
    );
}
