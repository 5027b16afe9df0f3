//! `alcubierre demo`: a whole cluster on this machine. Three nodes in one process share an
//! embedded metadata store; each has a file-backed cache device, a file backend directory and
//! NVMe/TCP and iSCSI listeners on loopback; they register and heartbeat, are activated through
//! the activation rules, and a 1 GiB volume is created through placement. Each node is started
//! as `serve` starts one (`alcubierre_storage_node::Node::start`), from a configuration the
//! demo writes: the volume's primary exports it and replicates every write to the other two
//! nodes' caches before acknowledging it. The REST API serves on loopback with a random token.
//! Runs until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_control::activation::Licence;
use alcubierre_control::api::ApiState;
use alcubierre_control::registry;
use alcubierre_control::volumes::{self, CreateVolume};
use alcubierre_storage_node::config::NodeConfig;
use alcubierre_storage_node::{Api, Node, NodeSpec};
use alcubierre_store::{MemStore, Store};
use alcubierre_types::{ByteSize, VolumeId};
use serde::Serialize;

use crate::demo::demo_dir;

const NODES: usize = 3;
const CACHE: u64 = 256 << 20;
const VOLUME: u64 = 1 << 30;

#[derive(Serialize)]
struct Ready {
    dir: String,
    api: String,
    token: String,
    nodes: Vec<(String, String)>,
    volume: String,
    volume_id: String,
    nqn: String,
    primary: String,
    primary_addr: String,
    /// The demo volume over iSCSI on its primary (libiscsi URL form).
    iscsi_url: String,
    /// The same on every node, the primary's first: one LU, three paths.
    iscsi_urls: Vec<String>,
}

/// The demo's API token: 128 bits from the OS's random source (an error, never a fixed token,
/// when it fails).
fn random_token() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        anyhow::anyhow!("cannot make the API token: the OS random source failed: {e}")
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Node `i`'s configuration: its files under `dir`, the usual ports (4420, 4421, ... and
/// 3260, 3261, ...) on loopback, and the cluster's heartbeat defaults.
fn node_config(i: usize, dir: &Path) -> anyhow::Result<NodeConfig> {
    let name = format!("node-{i}");
    let ndir = dir.join(&name);
    std::fs::create_dir_all(&ndir)?;
    let device = ndir.join("cache.img");
    // A fresh cache each run: the store is new too.
    match std::fs::remove_file(&device) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!("removing {}: {e}", device.display()))
        }
        _ => {}
    }
    let loopback =
        |port: usize| -> anyhow::Result<SocketAddr> { Ok(format!("127.0.0.1:{port}").parse()?) };
    let config = format!(
        "[node]\nname = \"{name}\"\nana_group = {i}\ncntlid_base = {base}\ncntlid_count = 1000\n\
         [cache]\ndevice = {device:?}\ncreate_size = {CACHE}\n\
         [nvmf]\nlisten = [\"{nvme}\"]\n\
         [iscsi]\nlisten = [\"{iscsi}\"]\n\
         [cluster]\netcd = []\n",
        base = i * 1000,
        device = device.display().to_string(),
        nvme = loopback(4419 + i)?,
        iscsi = loopback(3259 + i)?,
    );
    Ok(toml::from_str(&config)?)
}

/// Runs the cluster demo.
pub fn run(dir: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let (dir, _tmp) = demo_dir(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::new(dir.join("backend"))?);
        let mut nodes: Vec<Node> = Vec::new();
        for i in 1..=NODES {
            nodes.push(
                Node::start(NodeSpec {
                    config: node_config(i, &dir)?,
                    store: Some(store.clone()),
                    backend: Some(backend.clone()),
                    any_port_when_taken: true,
                })
                .await?,
            );
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        registry::activate(&*store, &names, &Licence::default(), 0).await?;
        // Each node's agent finishes its own activation.
        registry::wait_active(&*store, &names, Duration::from_secs(10)).await?;
        let token = random_token()?;
        // One API for the three nodes, with every node's metrics; on 8080 when free.
        let state = |port: u16| -> anyhow::Result<(SocketAddr, ApiState)> {
            Ok((
                SocketAddr::from(([127, 0, 0, 1], port)),
                ApiState {
                    store: store.clone(),
                    token: Arc::new(token.clone()),
                    licence: Licence::default(),
                    now: alcubierre_control::unix_now,
                    node_metrics: Some(alcubierre_storage_node::metrics::renderer(
                        nodes.iter().filter_map(Node::metrics).collect(),
                    )),
                    backend: Some(backend.clone()),
                },
            ))
        };
        let (addr, st) = state(8080)?;
        let api = match Api::serve(addr, None, st).await {
            Ok(a) => a,
            Err(_) => {
                let (addr, st) = state(0)?;
                Api::serve(addr, None, st).await?
            }
        };
        let id = uuid::Uuid::new_v4().to_string();
        let v = volumes::create(
            &*store,
            &CreateVolume {
                name: "demo".into(),
                size: VOLUME,
                block_size: None,
                qos: None,
                hosts: vec![],
                source: None,
            },
            id.clone(),
            &Licence::default(),
        )
        .await?;
        let primary = v.replicas[0].clone();
        let pnode = nodes
            .iter()
            .find(|n| n.name == primary)
            .expect("placed on a demo node");
        let paddr: SocketAddr = pnode.nvme_addr();
        let nqn = alcubierre_nvmf::volume_nqn(VolumeId(id.parse()?));
        // Wait for the primary's reconciler to export it.
        let t0 = std::time::Instant::now();
        loop {
            let d =
                alcubierre_nvmf::initiator::HostController::discover(paddr, &Default::default())
                    .await;
            if d.is_ok_and(|e| e.iter().any(|e| e.subnqn == nqn)) {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "the volume was not exported"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let iqn = alcubierre_iscsi::volume_iqn(VolumeId(id.parse()?));
        let iscsi_url = |a: SocketAddr| format!("iscsi://{a}/{iqn}/0");
        let ready = Ready {
            dir: dir.display().to_string(),
            api: api.url.clone(),
            token: token.clone(),
            nodes: nodes
                .iter()
                .map(|n| (n.name.clone(), n.nvme_addr().to_string()))
                .collect(),
            volume: v.name.clone(),
            volume_id: id.clone(),
            nqn: nqn.clone(),
            primary: primary.to_string(),
            primary_addr: paddr.to_string(),
            iscsi_url: iscsi_url(pnode.iscsi_addr().expect("serves iSCSI")),
            iscsi_urls: std::iter::once(pnode)
                .chain(nodes.iter().filter(|n| n.name != pnode.name))
                .filter_map(|n| n.iscsi_addr().map(iscsi_url))
                .collect(),
        };
        if json {
            println!("{}", serde_json::to_string(&ready)?);
        } else {
            println!(
                "Alcubierre demo: {NODES} nodes, embedded store, files under {}",
                ready.dir
            );
            for (n, a) in &ready.nodes {
                println!(
                    "  {n}: active, NVMe/TCP on {a}, cache {} file",
                    ByteSize(CACHE)
                );
            }
            println!(
                "volume {} ({}), {} replicas on {} (every write durable on all three); primary {primary}",
                v.name,
                id,
                v.replicas.len(),
                v.replicas.join(", ")
            );
            println!("connect a Linux host (modprobe nvme-tcp first):");
            println!(
                "  nvme discover -t tcp -a {} -s {}",
                paddr.ip(),
                paddr.port()
            );
            println!(
                "  nvme connect -t tcp -a {} -s {} -n {nqn}",
                paddr.ip(),
                paddr.port()
            );
            println!(
                "or over iSCSI: iscsiadm -m discovery -t st -p {}; the target is {}",
                pnode.iscsi_addr().expect("serves iSCSI"),
                alcubierre_iscsi::volume_iqn(VolumeId(id.parse()?))
            );
            println!("web console: {}/ (token {token})", ready.api);
            println!("REST API: {} (token {token})", ready.api);
            println!(
                "  curl -H 'Authorization: Bearer {token}' {}/api/v1/nodes",
                ready.api
            );
            println!("  curl {}/metrics", ready.api);
            println!("  alcubierre status --api {} --token {token}", ready.api);
            println!("Ctrl-C stops the demo.");
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(api);
        for n in nodes {
            n.stop();
        }
        if !json {
            println!("stopped");
        }
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
