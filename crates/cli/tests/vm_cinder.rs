//! The Cinder driver's connections attached by os-brick in the QEMU test VM, as a compute host
//! attaches them: three `alcubierre serve` nodes on a real etcd; the driver (Cinder's
//! cinder-volume half, `testing/cinder/vm_host.py` in the Cinder virtualenv) makes volumes and
//! connection info for the connector properties the guest's os-brick reports; the guest
//! (`testing/vm/cinder-attach-guest.sh`, Debian's python3-os-brick) connects over NVMe/TCP
//! (native multipath, every node's portal), writes and verifies, sees an online extend and
//! disconnects leaving nothing; then over iSCSI with dm-multipath, writing while the primary's
//! node is killed (kill -9): no I/O error, the data verifies, and the disconnect leaves no
//! session and no map. Shown with --nocapture: the longest write during the failover.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::{json_call, node_index};
use common::vm::{guest, three_nodes, wait_file};

const NVME_BASE: u16 = 4440;
const ISCSI_BASE: u16 = 3290;
const TOKEN: &str = "t0ken-for-tests";

/// The Cinder virtualenv (scripts/setup makes it).
fn venv() -> String {
    std::env::var("ALCUBIERRE_CINDER_VENV").unwrap_or("/var/tmp/alcubierre-cinder".into())
}

/// Runs the driver's step `args` (`vm_host.py`) against the API at `api`, off the runtime.
async fn driver(api: &str, protocol: &str, args: &[&str]) {
    let (api, protocol) = (api.to_string(), protocol.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_driver(&api, &protocol, &args)
    })
    .await
    .unwrap();
}

fn run_driver(api: &str, protocol: &str, args: &[&str]) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(format!("{}/bin/python", venv()))
        .arg(format!("{root}/testing/cinder/vm_host.py"))
        .args([&format!("http://{api}"), TOKEN, protocol])
        .args(args)
        .env("PYTHONPATH", format!("{root}/integrations/cinder"))
        .output()
        .expect("running the Cinder virtualenv's python (scripts/setup makes it)");
    assert!(
        out.status.success(),
        "the driver's {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(share: &Path, name: &str) -> String {
    share.join(name).to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_brick_attaches_the_drivers_volumes_and_survives_the_primary_killed() {
    let nvme = |i: usize| NVME_BASE + i as u16;
    let mut c = three_nodes(
        nvme,
        |i| format!("advertise = \"10.0.2.2:{}\"", nvme(i)),
        |i| {
            let port = ISCSI_BASE + i as u16;
            format!("[iscsi]\nlisten = [\"127.0.0.1:{port}\"]\nadvertise = \"10.0.2.2:{port}\"")
        },
    )
    .await;
    let api = c.apis[0].clone();
    let share = c.share.clone();
    // The guest's os-brick: the Cinder virtualenv's (PyPI) with the libraries it needs.
    // Debian 12's python3-os-brick (6.1) matches NVMe controllers by their sysfs address
    // exactly, and Debian 12's kernel appends src_addr to it: it never finds its own
    // controllers (os-brick fixed this later).
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(format!("{}/bin/python", venv()))
        .arg(format!("{root}/testing/cinder/brick_closure.py"))
        .arg(share.join("pylib"))
        .output()
        .expect("running the Cinder virtualenv's python (scripts/setup makes it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vm = guest(&share, "cinder-attach-guest.sh", 900);
    let connector = path(&share, "connector.json");

    if !wait_file(&share.join("connector.json"), 300, &vm) {
        let (rc, console) = vm.join().unwrap();
        panic!("the guest wrote no connector properties (exit {rc}):\n{console}");
    }
    // NVMe/TCP: create, connect (the guest's NQN joins the access list), extend.
    driver(&api, "nvme-tcp", &["create", "nvme", "1"]).await;
    // Let every node export the volume before the guest connects.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let conn = path(&share, "nvme.json.tmp");
    driver(&api, "nvme-tcp", &["connect", "nvme", &connector, &conn]).await;
    std::fs::rename(&conn, share.join("nvme.json")).unwrap();
    let written = wait_file(&share.join("nvme-written"), 300, &vm);
    if written {
        driver(&api, "nvme-tcp", &["extend", "nvme", "2"]).await;
        std::fs::write(share.join("nvme-extended"), "").unwrap();
    }
    let nvme_done = written && wait_file(&share.join("nvme-done"), 300, &vm);
    if nvme_done {
        driver(&api, "nvme-tcp", &["disconnect", "nvme", &connector]).await;
        // The guest's host left the volume's access list.
        let vols = json_call(&api, "GET", "/api/v1/volumes", "").await;
        let vols = vols.as_array().unwrap();
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0]["hosts"], serde_json::json!([]), "{vols:?}");
    }

    // iSCSI with dm-multipath, the primary killed during the writes.
    let mut started = false;
    if nvme_done {
        driver(&api, "iscsi", &["create", "iscsi", "1"]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let conn = path(&share, "iscsi.json.tmp");
        driver(&api, "iscsi", &["connect", "iscsi", &connector, &conn]).await;
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&conn).unwrap()).unwrap();
        let id = info["data"]["target_iqn"]
            .as_str()
            .unwrap()
            .rsplit("vol.")
            .next()
            .unwrap()
            .to_string();
        let v = json_call(&api, "GET", &format!("/api/v1/volumes/{id}"), "").await;
        let victim = node_index(v["primary"].as_str().unwrap());
        std::fs::rename(&conn, share.join("iscsi.json")).unwrap();
        started = wait_file(&share.join("io-started"), 300, &vm);
        if started {
            std::thread::sleep(Duration::from_secs(3));
            drop(c.procs[victim].take());
            std::fs::write(share.join("path-dropped"), format!("node-{}\n", victim + 1)).unwrap();
            eprintln!(
                "killed node-{}, the iSCSI volume's primary, during the writes",
                victim + 1
            );
        }
    }
    let (rc, console) = vm.join().unwrap();
    eprintln!("{console}");
    assert!(
        nvme_done && started && rc == 0 && console.contains("CINDER-ATTACH-OK"),
        "guest failed (exit {rc}, NVMe done: {nvme_done}, iSCSI writes started: {started}):\n{console}"
    );
    // The driver detaches and deletes through a surviving node.
    let alive = c
        .procs
        .iter()
        .position(Option::is_some)
        .expect("two nodes live");
    let api = c.apis[alive].clone();
    driver(&api, "iscsi", &["disconnect", "iscsi", &connector]).await;
    for (protocol, name) in [("iscsi", "iscsi"), ("nvme-tcp", "nvme")] {
        driver(&api, protocol, &["delete", name]).await;
    }
    let vols = json_call(&api, "GET", "/api/v1/volumes", "").await;
    assert_eq!(vols.as_array().map(Vec::len), Some(0), "{vols}");
}
