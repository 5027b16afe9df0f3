//! Linux's native NVMe multipath against a three-node cluster (`alcubierre serve` on a real
//! etcd, each node an NVMe/TCP portal of the same volume), in the QEMU test VM: the host is told
//! one node's address, and `nvme connect-all` there finds every replica node's portal in the
//! discovery log and connects all three, the primary's path ANA optimized and the others
//! non-optimized; the primary's node is killed (kill -9) while fio writes through the
//! multipath namespace with crc32c verification, and the writes finish without an error and
//! verify through the promoted primary.
//!
//! Guest half: `testing/vm/nvme-multipath-guest.sh`. Needs QEMU and the guest image
//! (`scripts/setup`), like `vm_nvmf`.

mod common;

use std::time::Duration;

use common::cluster::{json_call, node_index};
use common::vm::{guest, three_nodes, wait_file};

/// The nodes' NVMe/TCP ports on the host's loopback (the guest reaches them on 10.0.2.2).
const PORT_BASE: u16 = 4430;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_all_through_one_node_gets_every_path_and_survives_the_primary_killed() {
    let port = |i: usize| PORT_BASE + i as u16;
    let mut c = three_nodes(
        port,
        |i| format!("advertise = \"10.0.2.2:{}\"", port(i)),
        |_| String::new(),
    )
    .await;
    let v = json_call(
        &c.apis[0],
        "POST",
        "/api/v1/volumes",
        r#"{"name":"nmp","size":67108864}"#,
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let nqn = alcubierre_nvmf::volume_nqn(alcubierre_types::VolumeId(id.parse().unwrap()));
    let primary = v["primary"].as_str().unwrap().to_string();
    let victim = node_index(&primary) + 1;
    // The host is told a node that is not the primary: the others' paths come from discovery.
    let first = (1..=3).find(|&i| i != victim).unwrap();
    // Let every node export the volume before the guest looks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ports: Vec<String> = (1..=3).map(|i| port(i).to_string()).collect();
    std::fs::write(
        c.share.join("params.sh"),
        format!(
            "NQN={nqn}\nFIRST_PORT={}\nPORTS=\"{}\"\nPRIMARY_PORT={}\n",
            port(first),
            ports.join(" "),
            port(victim)
        ),
    )
    .unwrap();
    let vm = guest(&c.share, "nvme-multipath-guest.sh", 600);
    let started = wait_file(&c.share.join("io-started"), 300, &vm);
    if started {
        std::thread::sleep(Duration::from_secs(3));
        drop(c.procs[victim - 1].take());
        std::fs::write(c.share.join("path-dropped"), format!("node-{victim}\n")).unwrap();
        eprintln!("killed node-{victim}, the primary, during the writes");
    }
    let (rc, console) = vm.join().unwrap();
    eprintln!("{console}");
    assert!(
        started && rc == 0 && console.contains("NVME-MULTIPATH-OK"),
        "guest failed (exit {rc}, writes started: {started}):\n{console}"
    );
    let after = json_call(
        &c.apis[first - 1],
        "GET",
        &format!("/api/v1/volumes/{id}"),
        "",
    )
    .await;
    assert_ne!(after["primary"], primary, "{after}");
}
