//! The CSI driver's node service with Linux's initiators: kubernetes-csi's csi-sanity runs in
//! the QEMU test VM against `alcubierre-csi` there (controller and node), which stages volumes
//! of three `alcubierre serve` nodes on a real etcd through the host agent's library; every
//! spec passes in mount mode (ext4) and in block mode, and nothing stays attached.
//!
//! Guest half: `testing/vm/csi-node-guest.sh`. Shown with --nocapture: csi-sanity's summaries.

mod common;

use std::path::Path;

use common::vm::{guest, three_nodes};

const NVME_BASE: u16 = 4460;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_sanity_passes_with_the_node_service_in_the_vm() {
    let port = |i: usize| NVME_BASE + i as u16;
    let c = three_nodes(
        port,
        |i| format!("advertise = \"10.0.2.2:{}\"", port(i)),
        |_| String::new(),
    )
    .await;
    let dir = std::env::var("ALCUBIERRE_GO_BIN").unwrap_or("/var/tmp/alcubierre-go/bin".into());
    std::fs::copy(
        Path::new(&dir).join("csi-sanity"),
        c.share.join("csi-sanity"),
    )
    .unwrap();
    std::fs::copy(
        common::workspace_binary("alcubierre-csi"),
        c.share.join("alcubierre-csi"),
    )
    .unwrap();
    c.write_guest_params();
    let vm = guest(&c.share, "csi-node-guest.sh", 1500);
    let (rc, console) = tokio::task::spawn_blocking(move || vm.join().unwrap())
        .await
        .unwrap();
    eprintln!("{console}");
    assert!(
        rc == 0 && console.contains("CSI-VM-DONE"),
        "guest failed (exit {rc})"
    );
    for mode in ["mount", "block"] {
        let line = console
            .lines()
            .find(|l| l.starts_with(&format!("SANITY {mode}:")))
            .unwrap_or_else(|| panic!("no {mode} summary"));
        assert!(line.contains(" 0 Failed"), "{line}");
        // Every spec that applies ran: not a run that skipped them.
        let passed: u32 = line
            .split(" Passed")
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(passed >= 80, "{mode}: {passed} passed: {line}");
    }
    drop(c);
}
