//! The CSI driver when a Kubernetes node dies, with Linux's initiators in the QEMU VM against
//! three `alcubierre serve` nodes on a real etcd. The VM boots twice, as two machines:
//! * node-a: a volume created, published, staged and published to a pod path; 8 MiB written;
//!   the node plugin killed (kill -9) and restarted while fio writes with crc32c verification:
//!   no I/O error, the restarted plugin reports the volume healthy and the kubelet's retried
//!   stage and publish find their work done; then the power is cut mid-write (sysrq `o`).
//! * Here, between the boots: node-a's agent is reported lost once its heartbeats stop.
//! * node-b: publishing the volume is refused (FAILED_PRECONDITION naming node-a) while the dead
//!   node has it; the force-unpublish from node-a that Kubernetes makes once the node is out of
//!   service fences it; the volume is then published, staged and its data verified on node-b
//!   (the takeover's time printed); with one node's portal dropped by a filter the volume's
//!   stats say it is abnormal, naming the portal, and healthy once it is back; it is expanded
//!   online (file system grown, data kept), and torn
//!   down; an iSCSI volume with xfs goes through the same cycle; nothing is left attached.
//!
//! Guest half: `testing/vm/csi-failures-guest.sh`; its client is the csi crate's `csi_call`
//! example. Shown with --nocapture: each boot's console.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::json_call;
use common::vm::{guest, three_nodes};

const NVME_BASE: u16 = 4470;
const ISCSI_BASE: u16 = 3310;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_volume_is_staged_elsewhere_after_a_fenced_unpublish() {
    let port = |i: usize| NVME_BASE + i as u16;
    let c = three_nodes(
        port,
        |i| format!("advertise = \"10.0.2.2:{}\"", port(i)),
        |i| {
            let p = ISCSI_BASE + i as u16;
            format!("[iscsi]\nlisten = [\"127.0.0.1:{p}\"]\nadvertise = \"10.0.2.2:{p}\"")
        },
    )
    .await;
    for (from, name) in [
        (common::workspace_binary("alcubierre-csi"), "alcubierre-csi"),
        (common::workspace_example("csi_call"), "csi_call"),
    ] {
        std::fs::copy(from, c.share.join(name)).unwrap();
    }
    c.write_guest_params();

    // Boot 1: node-a, until its power is cut.
    std::fs::write(c.share.join("phase"), "a").unwrap();
    let (rc, console) = boot(&c.share).await;
    eprintln!("== node-a\n{console}");
    for mark in ["A-WROTE", "PLUGIN-KILLED", "RESTART-KEPT-IO", "A-POWER-CUT"] {
        assert!(console.contains(mark), "node-a: no {mark} (exit {rc})");
    }
    assert_eq!(rc, 125, "node-a's power was cut: it reports no exit code");
    let died = Instant::now();

    // Its agent stops reporting: the cluster sees the host lost.
    let host = loop {
        let h = json_call(&c.apis[0], "GET", "/api/v1/hosts/node-a", "").await;
        if h["liveness"]["alive"] == false {
            break h;
        }
        assert!(
            died.elapsed() < Duration::from_secs(60),
            "node-a still reported alive: {h}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "node-a reported lost {:.1} s after its power cut: {}",
        died.elapsed().as_secs_f64(),
        host["liveness"]
    );
    let agent = host["liveness"]["agent"].as_str().unwrap_or("");
    assert!(agent.starts_with("alcubierre-csi "), "{host}");
    let id = std::fs::read_to_string(c.share.join("vol-id")).unwrap();
    let v = json_call(
        &c.apis[0],
        "GET",
        &format!("/api/v1/volumes/{}", id.trim()),
        "",
    )
    .await;
    assert_eq!(v["hosts"], serde_json::json!(["node-a"]), "{v}");

    // Boot 2: node-b takes the volume over.
    std::fs::write(c.share.join("phase"), "b").unwrap();
    let (rc, console) = boot(&c.share).await;
    eprintln!("== node-b\n{console}");
    for mark in [
        "PUBLISH-REFUSED-WHILE-ON-DEAD-NODE",
        "TAKEOVER-MS",
        "DATA-VERIFIED-ON-B",
        "PATH-LOSS-REPORTED",
        "EXPANDED-ONLINE",
        "NVME-CYCLE-DONE",
        "ISCSI-XFS-EXPANDED",
        "ISCSI-CYCLE-DONE",
        "CSI-FAILURES-DONE",
    ] {
        assert!(console.contains(mark), "node-b: no {mark} (exit {rc})");
    }
    assert_eq!(rc, 0, "node-b's script failed");
    // Both volumes were deleted through the driver.
    let vols = json_call(&c.apis[0], "GET", "/api/v1/volumes", "").await;
    assert_eq!(vols.as_array().map(Vec::len), Some(0), "{vols}");
    drop(c);
}

/// Boots the VM on `share` with the guest script; (exit code, console).
async fn boot(share: &Path) -> (i32, String) {
    let vm = guest(share, "csi-failures-guest.sh", 900);
    tokio::task::spawn_blocking(move || vm.join().unwrap())
        .await
        .unwrap()
}
