//! Linux's dm-multipath over open-iscsi against a three-node cluster (`alcubierre serve` on a
//! real etcd, each node an iSCSI portal of the same volume), in the QEMU test VM: SendTargets
//! on one node lists every node's portal with its own portal group tag; the guest logs in to
//! all three and builds one multipath map whose ALUA groups put the primary's path first; the
//! primary's node is killed (kill -9) while fio writes through the map with crc32c
//! verification: the path carrying the I/O drops, the cluster promotes a follower, dm-multipath
//! moves to the other group, and the writes finish without an error and verify on the
//! remaining paths.
//!
//! Guest half: `testing/vm/iscsi-multipath-guest.sh`. Needs QEMU and the guest image
//! (`scripts/setup`), like `vm_iscsi`.

mod common;

use std::time::Duration;

use common::cluster::{json_call, node_index};
use common::vm::{guest, three_nodes, wait_file};

/// The nodes' iSCSI ports on the host's loopback (the guest reaches them on 10.0.2.2).
const PORT_BASE: u16 = 3280;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_multipath_survives_a_node_killed_during_io() {
    let mut c = three_nodes(
        |_| 0,
        |_| String::new(),
        |i| {
            let port = PORT_BASE + i as u16;
            format!("[iscsi]\nlisten = [\"127.0.0.1:{port}\"]\nadvertise = \"10.0.2.2:{port}\"")
        },
    )
    .await;
    let apis = c.apis.clone();
    let v = json_call(
        &apis[0],
        "POST",
        "/api/v1/volumes",
        r#"{"name":"mp","size":67108864}"#,
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let iqn = alcubierre_iscsi::volume_iqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let primary = v["primary"].as_str().unwrap().to_string();
    let p = node_index(&primary) + 1;
    let victim = p;
    // Let every node export the volume before the guest looks (the agents reconcile the new
    // volume within a heartbeat or two).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let share = c.share.clone();
    let portals: Vec<String> = [p]
        .into_iter()
        .chain((1..=3).filter(|&i| i != p))
        .map(|i| format!("10.0.2.2:{},{i}", PORT_BASE + i as u16))
        .collect();
    std::fs::write(
        share.join("params.sh"),
        format!(
            "IQN={iqn}\nFIRST=10.0.2.2:{}\nPORTALS=\"{}\"\n",
            PORT_BASE + p as u16,
            portals.join(" ")
        ),
    )
    .unwrap();
    let vm = guest(&share, "iscsi-multipath-guest.sh", 600);
    let started = wait_file(&share.join("io-started"), 300, &vm);
    if started {
        // Into the writes, then one path goes: its node dies.
        std::thread::sleep(Duration::from_secs(3));
        drop(c.procs[victim - 1].take());
        std::fs::write(share.join("path-dropped"), format!("node-{victim}\n")).unwrap();
        eprintln!("killed node-{victim}, the primary, during the writes");
    }
    let (rc, console) = vm.join().unwrap();
    // Shown with --nocapture: the multipath maps before and after, fio's reports.
    eprintln!("{console}");
    assert!(
        started && rc == 0 && console.contains("ISCSI-MULTIPATH-OK"),
        "guest failed (exit {rc}, writes started: {started}):\n{console}"
    );
    // The cluster failed over: another node is the volume's primary now.
    let alive = (1..=3).find(|&i| i != victim).unwrap();
    let after = json_call(
        &apis[alive - 1],
        "GET",
        &format!("/api/v1/volumes/{id}"),
        "",
    )
    .await;
    assert_ne!(after["primary"], primary, "{after}");
}
