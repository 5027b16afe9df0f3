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

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use alcubierre_store::testing::EtcdServer;
use common::cluster::{fast_failover_and_activate, json_call, node_config, node_index};

/// The nodes' iSCSI ports on the host's loopback (the guest reaches them on 10.0.2.2).
const PORT_BASE: u16 = 3280;

fn wait_file(p: &Path, secs: u64, vm: &std::thread::JoinHandle<(i32, String)>) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if p.exists() {
            return true;
        }
        if vm.is_finished() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_multipath_survives_a_node_killed_during_io() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut procs = Vec::new();
    let mut apis = Vec::new();
    for i in 1..=3usize {
        let port = PORT_BASE + i as u16;
        let cluster = format!(
            "etcd = [\"{}\"]\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 3000\n\
             api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\"",
            etcd.endpoint
        );
        let tail =
            format!("[iscsi]\nlisten = [\"127.0.0.1:{port}\"]\nadvertise = \"10.0.2.2:{port}\"");
        let cfg = node_config(dir.path(), i, "127.0.0.1:0", &cluster, &tail);
        let (p, ready) =
            common::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
        assert!(
            ready["listening"].is_array(),
            "node-{i} did not start: {ready}"
        );
        apis.push(
            ready["api"]
                .as_str()
                .unwrap()
                .trim_start_matches("http://")
                .to_string(),
        );
        procs.push(Some(p));
    }
    let _store = fast_failover_and_activate(&apis[0], &etcd, 3).await;
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

    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
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
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testing/vm");
    std::fs::copy(
        format!("{here}/iscsi-multipath-guest.sh"),
        share.join("guest.sh"),
    )
    .unwrap();
    let vm = {
        let share = share.clone();
        std::thread::spawn(move || {
            let out = Command::new(format!("{here}/run.sh"))
                .arg(&share)
                .arg("guest.sh")
                .arg("600")
                .output()
                .expect("running testing/vm/run.sh");
            (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    };
    let started = wait_file(&share.join("io-started"), 300, &vm);
    if started {
        // Into the writes, then one path goes: its node dies.
        std::thread::sleep(Duration::from_secs(3));
        drop(procs[victim - 1].take());
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
    drop(procs);
}
