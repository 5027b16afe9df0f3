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
    let (_procs, id, _, _) = serve_one_volume(dir.path(), &etcd, address).await;
    // The volume's image is in the cluster configuration's backend, and nowhere else.
    assert!(backend.join(format!("{id}.img")).exists());
    assert!(!dir.path().join("backend").exists());
}

/// Saves a cluster configuration naming `backend`, starts three nodes without a `[backend]`
/// section, creates a volume and writes block 3 (0x7e) through NVMe/TCP, reading it back; the
/// nodes, the volume's id, the API's address and the host's controller.
async fn serve_one_volume(
    dir: &std::path::Path,
    etcd: &EtcdServer,
    backend: BackendAddress,
) -> (Vec<common::Proc>, String, String, HostController) {
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
        r#"{"name":"cb","size":16777216}"#,
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
    let mut c = eventually(10, "the volume exported", || async {
        // No keep-alive timeout: the test keeps this host idle while it waits for destage.
        let host = HostConfig {
            kato: std::time::Duration::ZERO,
            ..HostConfig::default()
        };
        HostController::connect(addr, &nqn, &host, 1).await.ok()
    })
    .await;
    let data = bytes::Bytes::from(vec![0x7e; 4096]);
    c.write(0, 3, data.clone(), 4096).await.unwrap();
    assert_eq!(c.read(0, 3, 1, 4096).await.unwrap(), data);
    (procs, id, api, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_open_a_ceph_backend_named_by_the_cluster_configuration() {
    let ceph = alcubierre_rbd::testing::CephCluster::start().unwrap();
    let conf = std::fs::read_to_string(&ceph.conf).unwrap();
    let mon = conf
        .lines()
        .find_map(|l| l.strip_prefix("mon host = "))
        .unwrap()
        .to_string();
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let address = BackendAddress::Rbd {
        monitors: vec![mon],
        pool: ceph.pool.clone(),
        user: None,
        keyring: None,
    };
    let (_procs, id, api, mut c) = serve_one_volume(dir.path(), &etcd, address).await;
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
