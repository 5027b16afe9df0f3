//! The cluster configuration's backend connectivity test against a real Ceph (a throwaway
//! monitor and memstore OSD): a good pool passes; a missing pool, a pool not enabled for RBD
//! and monitors that do not answer are each refused, naming the field and why; with cephx on, a
//! keyring without the user's key is refused naming the keyring.

use std::time::Duration;

use alcubierre_control::cluster::{probe_backend, BackendAddress};
use alcubierre_rbd::testing::CephCluster;

fn monitor(ceph: &CephCluster) -> String {
    // The throwaway cluster's conf has `mon host = v2:127.0.0.1:PORT`.
    let conf = std::fs::read_to_string(&ceph.conf).unwrap();
    let line = conf.lines().find(|l| l.starts_with("mon host")).unwrap();
    line.rsplit("v2:").next().unwrap().trim().to_string()
}

fn rbd(mon: &str, pool: &str, user: Option<&str>) -> BackendAddress {
    BackendAddress::Rbd {
        monitors: vec![mon.to_string()],
        pool: pool.into(),
        user: user.map(String::from),
        keyring: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_names_what_is_wrong_with_a_ceph_backend() {
    let ceph = CephCluster::start().unwrap();
    let mon = monitor(&ceph);
    let t = Duration::from_secs(3);
    probe_backend(&rbd(&mon, "rbd", None), t).await.unwrap();
    probe_backend(&rbd(&format!("v2:{mon}"), "rbd", None), t)
        .await
        .unwrap();

    let e = probe_backend(&rbd(&mon, "missing", None), t)
        .await
        .unwrap_err();
    assert_eq!(e.field, "backend.pool", "{e}");
    assert!(e.reason.contains("does not exist"), "{e}");

    ceph.ceph(&["osd", "pool", "create", "plain", "8"]).unwrap();
    let e = probe_backend(&rbd(&mon, "plain", None), t)
        .await
        .unwrap_err();
    assert_eq!(e.field, "backend.pool", "{e}");
    assert!(e.reason.contains("not enabled for RBD"), "{e}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let e = probe_backend(&rbd(&closed, "rbd", None), t)
        .await
        .unwrap_err();
    assert_eq!(e.field, "backend.monitors", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_names_a_keyring_that_cephx_refuses() {
    let ceph = CephCluster::start_cephx().unwrap();
    let mon = monitor(&ceph);
    let t = Duration::from_secs(5);
    let with = |keyring: &std::path::Path| BackendAddress::Rbd {
        monitors: vec![mon.clone()],
        pool: "rbd".into(),
        user: Some("admin".into()),
        keyring: Some(keyring.display().to_string()),
    };
    probe_backend(&with(&ceph.keyring()), t).await.unwrap();

    // A key for client.admin, but not the cluster's.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.keyring");
    let made = std::process::Command::new("ceph-authtool")
        .arg("--create-keyring")
        .arg(&wrong)
        .args(["--gen-key", "-n", "client.admin"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let e = probe_backend(&with(&wrong), t).await.unwrap_err();
    assert_eq!(e.field, "backend.keyring", "{e}");
    assert!(e.reason.contains("client.admin allowed"), "{e}");
}
