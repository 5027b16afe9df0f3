//! The host agent, `alcubierre-node`, in the QEMU test VM against three `alcubierre serve`
//! nodes on a real etcd, with Linux's initiators: attach over NVMe/TCP gives one namespace with
//! three paths (one ANA optimized) and over iSCSI one dm-multipath map of three ALUA paths;
//! with fio writing with crc32c verification, the volume's primary is killed (kill -9) per
//! protocol, and the longest I/O (the stall) is recorded; a fourth node joins and a replica
//! moves to it (its old node drained): the daemon connects the new node's path within 5 s and
//! drops the old one; the daemon restarted after the paths were torn down (a reboot) attaches
//! them again; detach refuses while the device is open and leaves nothing behind; bad input
//! gets errors naming the cause. `doctor`'s output is printed.
//!
//! Guest half: `testing/vm/host-agent-guest.sh`. The agent's binary is the workspace's
//! (`cargo test --workspace` builds it beside `alcubierre`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{json_call, node_config_nvmf, node_index};
use common::vm::{guest, three_nodes, wait_file};

const NVME_BASE: u16 = 4450;
const ISCSI_BASE: u16 = 3300;

fn nvme_port(i: usize) -> u16 {
    NVME_BASE + i as u16
}

fn nvmf(i: usize) -> String {
    format!("advertise = \"10.0.2.2:{}\"", nvme_port(i))
}

fn iscsi(i: usize) -> String {
    let port = ISCSI_BASE + i as u16;
    format!("[iscsi]\nlisten = [\"127.0.0.1:{port}\"]\nadvertise = \"10.0.2.2:{port}\"")
}

/// Starts node-`i` of the cluster in `dir` again (its configuration is kept); its API address.
fn start_node(dir: &Path, i: usize, etcd: &str) -> (common::Proc, String) {
    let cfg = dir.join(format!("node-{i}/node.toml"));
    if !cfg.exists() {
        let cluster = format!(
            "etcd = [\"{etcd}\"]\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 3000\n\
             api_listen = \"127.0.0.1:0\"\napi_token = \"t0ken-for-tests\""
        );
        let listen = format!("127.0.0.1:{}", nvme_port(i));
        node_config_nvmf(dir, i, &listen, &nvmf(i), &cluster, &iscsi(i));
    }
    let (p, ready) = common::spawn_ready(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    assert!(
        ready["listening"].is_array(),
        "node-{i} did not start: {ready}"
    );
    let api = ready["api"].as_str().unwrap().trim_start_matches("http://");
    (p, api.to_string())
}

async fn volume(api: &str, name: &str) -> serde_json::Value {
    json_call(api, "GET", &format!("/api/v1/volumes/{name}"), "").await
}

/// Waits until every replica of `name` is in sync.
async fn all_in_sync(api: &str, name: &str, secs: u64) {
    let t0 = Instant::now();
    loop {
        let v = volume(api, name).await;
        let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
        if n("in_sync") == n("replicas") && n("replicas") == 3 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{name} not in sync: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_agent_attaches_with_multipath_follows_failovers_and_new_nodes() {
    let mut c = three_nodes(nvme_port, nvmf, iscsi).await;
    let dir = c.share.parent().unwrap().to_path_buf();
    let etcd = c.etcd.endpoint.clone();
    let mut apis = c.apis.clone();
    for (name, size) in [("hn", 134217728u64), ("hi", 134217728)] {
        json_call(
            &apis[0],
            "POST",
            "/api/v1/volumes",
            &format!(r#"{{"name":"{name}","size":{size}}}"#),
        )
        .await;
    }
    // Let every node export the volumes before the guest attaches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::copy(
        common::workspace_binary("alcubierre-node"),
        c.share.join("alcubierre-node"),
    )
    .unwrap();
    let guest_apis: Vec<String> = apis
        .iter()
        .map(|a| format!("http://10.0.2.2:{}", a.rsplit(':').next().unwrap()))
        .collect();
    std::fs::write(
        c.share.join("params.sh"),
        format!(
            "API={}\nTOKEN=t0ken-for-tests\nNVME_PORTS=\"{} {} {}\"\nISCSI_PORTS=\"{} {} {}\"\n",
            guest_apis.join(","),
            nvme_port(1),
            nvme_port(2),
            nvme_port(3),
            ISCSI_BASE + 1,
            ISCSI_BASE + 2,
            ISCSI_BASE + 3
        ),
    )
    .unwrap();
    let vm = guest(&c.share, "host-agent-guest.sh", 1500);
    let share = c.share.clone();
    let wait = |f: &str, secs: u64| wait_file(&share.join(f), secs, &vm);
    let mut steps = Vec::new();

    // Per protocol: the guest asks for its volume's primary to be killed during its writes,
    // then for the node back.
    for (tag, name) in [("nvme", "hn"), ("iscsi", "hi")] {
        if !wait(&format!("kill-{tag}"), 600) {
            break;
        }
        let api = apis
            .iter()
            .zip(&c.procs)
            .find(|(_, p)| p.is_some())
            .unwrap()
            .0
            .clone();
        let v = volume(&api, name).await;
        let victim = node_index(v["primary"].as_str().unwrap());
        drop(c.procs[victim].take());
        eprintln!(
            "killed node-{}, {name}'s primary, during the {tag} writes",
            victim + 1
        );
        std::fs::write(
            share.join(format!("killed-{tag}")),
            format!("node-{}\n", victim + 1),
        )
        .unwrap();
        if !wait(&format!("restart-{tag}"), 600) {
            break;
        }
        let (p, a) = start_node(&dir, victim + 1, &etcd);
        c.procs[victim] = Some(p);
        apis[victim] = a;
        for v in ["hn", "hi"] {
            all_in_sync(&apis[victim], v, 120).await;
        }
        std::fs::write(share.join(format!("restarted-{tag}")), "").unwrap();
        steps.push(tag);
    }

    // A fourth node joins; a replica of hn moves to it from a drained node.
    if steps.len() == 2 && wait("add-node", 600) {
        let (p4, api4) = start_node(&dir, 4, &etcd);
        c.procs.push(Some(p4));
        apis.push(api4.clone());
        common::cluster::eventually(30, "node-4 registered", || {
            let api = api4.clone();
            async move {
                let (st, _) = common::cluster::call(
                    &api,
                    "POST",
                    "/api/v1/nodes/activate",
                    r#"{"nodes":["node-4"]}"#,
                )
                .await;
                (200..300).contains(&st).then_some(())
            }
        })
        .await;
        alcubierre_control::registry::wait_active(
            &c.store,
            &["node-4".to_string()],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let v = volume(&api4, "hn").await;
        let primary = v["primary"].as_str().unwrap().to_string();
        let drained = ["node-1", "node-2", "node-3"]
            .into_iter()
            .find(|n| *n != primary)
            .unwrap();
        json_call(&api4, "POST", &format!("/api/v1/nodes/{drained}/drain"), "").await;
        let t0 = Instant::now();
        loop {
            let conn = json_call(&api4, "GET", "/api/v1/volumes/hn/connection", "").await;
            let ports: Vec<u64> = conn["nvme"]["portals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
                .collect();
            if ports.contains(&(nvme_port(4) as u64)) {
                eprintln!(
                    "node-4 listed for hn {:.1} s after draining {drained}: ports {ports:?}",
                    t0.elapsed().as_secs_f64()
                );
                let gone = nvme_port(node_index(drained) + 1);
                std::fs::write(
                    share.join("node4-listed"),
                    format!("NEW_PORT={}\nOLD_PORT={gone}\n", nvme_port(4)),
                )
                .unwrap();
                steps.push("node-4");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "hn never moved to node-4: {conn}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Host HA: the guest's agent stops; once the host shows lost, it is fenced, and another
    // host attaches its volume and writes.
    if steps.len() == 3 && wait("host-down", 900) {
        let api = apis[3].clone();
        let t0 = Instant::now();
        loop {
            let h = json_call(&api, "GET", "/api/v1/hosts/vm-guest", "").await;
            if h["liveness"]["alive"] == false {
                eprintln!(
                    "vm-guest shown lost {:.1} s after its agent stopped",
                    t0.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "never lost: {h}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let f = json_call(&api, "POST", "/api/v1/hosts/vm-guest/fence", "").await;
        eprintln!("fence: {f}");
        let detached = f["detached"].as_array().unwrap();
        assert_eq!(detached.len(), 2, "{f}");
        assert!(detached.iter().all(|d| d["fence"] == "done"), "{f}");
        std::fs::write(share.join("fenced"), "").unwrap();
        other_host_writes(&api, "hn").await;
        steps.push("fence");
    }

    let (rc, console) = vm.join().unwrap();
    eprintln!("{console}");
    assert!(
        steps.len() == 4 && rc == 0 && console.contains("HOST-AGENT-OK"),
        "guest failed (exit {rc}, steps done: {steps:?}):\n{console}"
    );
    // The guest is on no volume's access list (its failed attach left nothing either); the
    // other host has hn.
    let api = apis[3].clone();
    for (name, hosts) in [("hn", vec!["compute-2"]), ("hi", vec![])] {
        let v = volume(&api, name).await;
        assert_eq!(v["hosts"], serde_json::json!(hosts), "{v}");
    }
    // The guest's agent reported the host's liveness.
    let h = json_call(&api, "GET", "/api/v1/hosts/vm-guest", "").await;
    assert_eq!(
        h["liveness"]["agent"]
            .as_str()
            .map(|a| a.starts_with("alcubierre-node")),
        Some(true),
        "{h}"
    );
}

/// Another host attaches volume `name` through the API and writes and reads a block through
/// its primary's portal (the test's own NVMe/TCP initiator).
async fn other_host_writes(api: &str, name: &str) {
    use alcubierre_nvmf::initiator::{HostConfig, HostController};
    let nqn = "nqn.2014-08.org.nvmexpress:uuid:a1c0b1e2-0000-4000-8000-000000000002";
    let att = json_call(
        api,
        "PUT",
        &format!("/api/v1/volumes/{name}/attachments/compute-2"),
        &format!(r#"{{"nqn":"{nqn}"}}"#),
    )
    .await;
    let conn = &att["connection"]["nvme"];
    let p = &conn["portals"][0];
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", p["port"]).parse().unwrap();
    let host = HostConfig {
        hostnqn: nqn.into(),
        ..HostConfig::default()
    };
    let subnqn = conn["subsystem_nqn"].as_str().unwrap().to_string();
    let mut c = common::cluster::eventually(20, "compute-2 connected", || {
        let (host, subnqn) = (host.clone(), subnqn.clone());
        async move { HostController::connect(addr, &subnqn, &host, 1).await.ok() }
    })
    .await;
    let (_, bs) = c.namespace().await.unwrap();
    let data = bytes::Bytes::from(vec![0x5a; 4096]);
    c.write(0, 8, data.clone(), bs).await.unwrap();
    assert_eq!(c.read(0, 8, 4096 / bs, bs).await.unwrap(), data);
    eprintln!("compute-2 attached {name} after the fence and wrote through {addr}");
}
