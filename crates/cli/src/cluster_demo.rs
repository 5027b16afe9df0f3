//! `alcubierre demo`: a whole cluster on this machine. Three nodes in one process share an
//! embedded metadata store; each has a file-backed cache device, a file backend directory and an
//! NVMe/TCP listener on loopback; they register and heartbeat, are activated through the
//! activation rules, and a 1 GiB volume is created through placement. Each node runs the same
//! agent as `serve` in a cluster (`agent.rs`) and a replica listener: the volume's primary
//! exports it and replicates every write to the other two nodes' caches before acknowledging it.
//! The REST API serves on loopback with a random token. Runs until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{Backend, FileBackend};
use alcubierre_cache::{CacheService, Engine, FormatOptions, ServiceConfig};
use alcubierre_control::activation::Licence;
use alcubierre_control::api::{router, ApiState};
use alcubierre_control::model::{Activation, CacheDevice, CacheState, Node};
use alcubierre_control::registry::{self, Heartbeat};
use alcubierre_control::volumes::{self, CreateVolume};
use alcubierre_io::{DirectFile, Medium};
use alcubierre_nvmf::{Listener, Target, TargetConfig};
use alcubierre_store::{MemStore, Store};
use alcubierre_types::{ByteSize, VolumeId};
use anyhow::Context;
use serde::Serialize;

use crate::agent::{Agent, NodeParts};
use crate::demo::demo_dir;

const NODES: usize = 3;
const CACHE: u64 = 256 << 20;
const VOLUME: u64 = 1 << 30;

struct DemoNode {
    name: String,
    listener: Listener,
    iscsi: (SocketAddr, tokio::task::JoinHandle<()>),
    service: CacheService,
    metrics: Option<crate::metrics::NodeSources>,
    _agent: Agent,
    leader: tokio::task::JoinHandle<()>,
}

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

async fn start_node(
    i: usize,
    dir: &Path,
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
) -> anyhow::Result<DemoNode> {
    let name = format!("node-{i}");
    let ndir = dir.join(&name);
    std::fs::create_dir_all(&ndir)?;
    let cache_path = ndir.join("cache.img");
    let m = DirectFile::create_file(&cache_path, CACHE)
        .with_context(|| format!("creating {}", cache_path.display()))?;
    Engine::format(&m, &FormatOptions::default())?;
    drop(m);
    let medium: Arc<dyn Medium> = Arc::new(DirectFile::open(&cache_path)?);
    let engine = Arc::new(Engine::open(medium, backend.clone())?);
    let limit = Arc::new(alcubierre_cache::RateLimiter::new(50_000_000, 0));
    let service = CacheService::start(
        engine.clone(),
        ServiceConfig {
            destage_limit: Some(limit.clone()),
            ..ServiceConfig::default()
        },
    );
    let target = Arc::new(Target::new(TargetConfig {
        cntlid_base: (i as u16) * 1000,
        cntlid_count: 1000,
        ..TargetConfig::default()
    }));
    // The usual ports when free (4420, 4421, ...), any port otherwise.
    let preferred: SocketAddr = format!("127.0.0.1:{}", 4419 + i).parse()?;
    let listener = match Listener::bind(target.clone(), preferred, 1).await {
        Ok(l) => l,
        Err(_) => Listener::bind(target.clone(), "127.0.0.1:0".parse()?, 1).await?,
    };
    // iSCSI on 3260, 3261, ... when free.
    let iscsi = alcubierre_iscsi::Target::new();
    iscsi.set_portal_group(i as u16);
    let preferred: SocketAddr = format!("127.0.0.1:{}", 3259 + i).parse()?;
    let (iscsi_addr, iscsi_task) = match alcubierre_iscsi::driver::listen(iscsi.clone(), preferred)
        .await
    {
        Ok(x) => x,
        Err(_) => alcubierre_iscsi::driver::listen(iscsi.clone(), "127.0.0.1:0".parse()?).await?,
    };
    let replica = alcubierre_replica::node::ReplicaServer::bind("127.0.0.1:0".parse()?).await?;
    let node = Node {
        name: name.clone(),
        management: String::new(),
        replica: replica.local_addr().to_string(),
        cache: vec![CacheDevice {
            path: cache_path.display().to_string(),
            size: CACHE,
            state: CacheState::Healthy,
        }],
        activation: Activation::Registered,
        draining: false,
        cpu_threads: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32),
        portals: vec![listener.local_addr().to_string()],
        iscsi_portals: vec![format!("{iscsi_addr},{i}")],
        nvme: None,
    };
    registry::register(&*store, &node).await?;
    let hb = Heartbeat::start(
        store.clone(),
        &name,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await?;
    let stats = crate::agent::VolumeStats::default();
    let health = Arc::new(crate::agent::AgentHealth::default());
    let metrics = crate::metrics::NodeSources {
        node: name.clone(),
        engine: Some(engine.clone()),
        destage_limit: Some(limit.clone()),
        volumes: stats.clone(),
        health: Some(health.clone()),
    };
    let leader = tokio::spawn(alcubierre_control::leader::run(store.clone(), name.clone()));
    let agent = Agent::start(
        store,
        NodeParts {
            name: name.clone(),
            engine,
            volumes: service.volumes(),
            target,
            iscsi: Some(iscsi),
            ana_group: i as u32,
            destage_limit: Some(limit),
            stats,
            replica: Some(replica),
            lease: Default::default(),
            health,
        },
        hb,
    );
    Ok(DemoNode {
        name,
        listener,
        iscsi: (iscsi_addr, iscsi_task),
        service,
        metrics: Some(metrics),
        _agent: agent,
        leader,
    })
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
        let mut nodes: Vec<DemoNode> = Vec::new();
        for i in 1..=NODES {
            nodes.push(start_node(i, &dir, store.clone(), backend.clone()).await?);
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        registry::activate(&*store, &names, &Licence::default(), 0).await?;
        // Each node's agent finishes its own activation.
        registry::wait_active(&*store, &names, Duration::from_secs(10)).await?;
        let token = random_token()?;
        let api = match tokio::net::TcpListener::bind("127.0.0.1:8080").await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        let api_addr = api.local_addr()?;
        let sources = nodes.iter_mut().filter_map(|n| n.metrics.take()).collect();
        let app = router(ApiState {
            store: store.clone(),
            token: Arc::new(token.clone()),
            licence: Licence::default(),
            now: alcubierre_control::unix_now,
            node_metrics: Some(crate::metrics::renderer(sources)),
            backend: Some(backend.clone()),
        });
        let api_task = tokio::spawn(async move { axum::serve(api, app).await });
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
        let paddr: SocketAddr = pnode.listener.local_addr();
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
            api: format!("http://{api_addr}"),
            token: token.clone(),
            nodes: nodes
                .iter()
                .map(|n| (n.name.clone(), n.listener.local_addr().to_string()))
                .collect(),
            volume: v.name.clone(),
            volume_id: id.clone(),
            nqn: nqn.clone(),
            primary: primary.clone(),
            primary_addr: paddr.to_string(),
            iscsi_url: iscsi_url(pnode.iscsi.0),
            iscsi_urls: std::iter::once(pnode)
                .chain(nodes.iter().filter(|n| n.name != pnode.name))
                .map(|n| iscsi_url(n.iscsi.0))
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
                pnode.iscsi.0,
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
        api_task.abort();
        for n in nodes {
            n.leader.abort();
            drop(n._agent);
            drop(n.listener);
            n.iscsi.1.abort();
            n.service.shutdown();
        }
        if !json {
            println!("stopped");
        }
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
