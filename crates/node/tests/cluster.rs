//! Three storage nodes in this process, each started as `serve` starts one
//! (`Node::start`), on an embedded store: they register, are activated, and serve a volume the
//! control plane places on them; a write through a follower's portal (forwarded to the
//! primary) reads back through the primary's.

use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_control::activation::Licence;
use alcubierre_control::registry;
use alcubierre_control::volumes::{self, CreateVolume};
use alcubierre_nvmf::initiator::{HostConfig, HostController};
use alcubierre_storage_node::config::NodeConfig;
use alcubierre_storage_node::{Node, NodeSpec};
use alcubierre_store::{MemStore, Store};
use bytes::Bytes;

fn config(i: u32, dir: &std::path::Path) -> NodeConfig {
    let text = format!(
        "[node]\nname = \"n{i}\"\nana_group = {i}\ncntlid_base = {}\ncntlid_count = 100\n\
         [cache]\ndevice = {:?}\ncreate_size = \"64MiB\"\n\
         [nvmf]\nlisten = [\"127.0.0.1:0\"]\n[cluster]\netcd = []\n",
        i * 100,
        dir.join(format!("n{i}.img")).display().to_string(),
    );
    let c: NodeConfig = toml::from_str(&text).unwrap();
    c.validate(true).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_in_process_serve_a_replicated_volume() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let backend: Arc<dyn Backend> = Arc::new(FileBackend::new(dir.path().join("backend")).unwrap());
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(
            Node::start(NodeSpec {
                config: config(i, dir.path()),
                store: Some(store.clone()),
                backend: Some(backend.clone()),
                any_port_when_taken: false,
            })
            .await
            .unwrap(),
        );
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    registry::activate(&*store, &names, &Licence::default(), 0)
        .await
        .unwrap();
    registry::wait_active(&*store, &names, Duration::from_secs(10))
        .await
        .unwrap();
    // Every node registered the portal it listens on, and its NVMe identity.
    for (n, _) in registry::nodes(&*store).await.unwrap().into_values() {
        let node = nodes.iter().find(|x| x.name == n.name).unwrap();
        assert_eq!(n.portals, vec![node.nvme_addr().to_string()]);
        assert!(n.nvme.is_some());
    }
    let v = volumes::create(
        &*store,
        &CreateVolume {
            name: "v".into(),
            size: 16 << 20,
            block_size: None,
            qos: None,
            hosts: vec![],
            source: None,
        },
        uuid::Uuid::new_v4().to_string(),
        &Licence::default(),
    )
    .await
    .unwrap();
    let nqn = format!("nqn.2014-08.io.alcubierre:vol:{}", v.id);
    let at = |name: &str| nodes.iter().find(|n| n.name == name).unwrap().nvme_addr();
    let follower = v.replicas.iter().find(|r| **r != v.primary).unwrap();
    let data = Bytes::from(vec![0x5a; 8192]);
    // Through the follower (forwarded), once the volume is served.
    let t0 = std::time::Instant::now();
    loop {
        let wrote = async {
            let mut c = HostController::connect(at(follower), &nqn, &HostConfig::default(), 1)
                .await
                .ok()?;
            c.write(0, 8, data.clone(), 512).await.ok()
        }
        .await;
        if wrote.is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = HostController::connect(at(&v.primary), &nqn, &HostConfig::default(), 1)
        .await
        .unwrap();
    assert_eq!(c.read(0, 8, 16, 512).await.unwrap(), data);
    // Attaching another host closes the open volume to the others: the connection this host
    // holds fails (on every node), and it cannot connect again.
    let mut through_follower =
        HostController::connect(at(follower), &nqn, &HostConfig::default(), 1)
            .await
            .unwrap();
    volumes::put_host(
        &*store,
        &volumes::Host {
            name: "h1".into(),
            nqn: Some("nqn.2014-08.org.example:h1".into()),
            iqn: None,
            nvme_hostid: None,
            chap: None,
            target_chap: None,
        },
    )
    .await
    .unwrap();
    alcubierre_control::attachments::attach_host(&*store, &v.id, "h1")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let a = c.read(0, 8, 16, 512).await.is_err();
        let b = through_follower.read(0, 8, 16, 512).await.is_err();
        if a && b {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "still served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &v.replicas {
        assert!(
            HostController::connect(at(n), &nqn, &HostConfig::default(), 1)
                .await
                .is_err(),
            "{n} lets the host in again"
        );
    }
    let h1 = HostConfig {
        hostnqn: "nqn.2014-08.org.example:h1".into(),
        hostid: [9; 16],
        ..HostConfig::default()
    };
    let mut c = HostController::connect(at(&v.primary), &nqn, &h1, 1)
        .await
        .unwrap();
    assert_eq!(c.read(0, 8, 16, 512).await.unwrap(), data);
    drop(c);
    for n in nodes {
        n.stop();
    }
}
