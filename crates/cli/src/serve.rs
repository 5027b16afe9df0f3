//! `alcubierre serve`: one node from a config file: the cache engine on its device, the
//! backend, and the NVMe/TCP target exporting the configured volumes. Runs until SIGINT or
//! SIGTERM, then stops accepting, stops the cache threads (every acknowledged write is already
//! in the journal) and exits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use alcubierre_backend::{Backend, BackendError, FileBackend};
use alcubierre_block::{BlockDevice, MemBlockDevice, Reserved};
use alcubierre_cache::{CacheService, Engine, FormatOptions, RateLimiter, ServiceConfig};
use alcubierre_io::{DirectFile, Medium};
use alcubierre_nvmf::{HostAcl, Listener, Portal, Subsystem, Target, TargetConfig};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::NodeConfig;

/// A running node.
pub struct Node {
    /// The NVMe/TCP target.
    pub target: Arc<Target>,
    /// Bound addresses: I/O portals, then discovery-only listeners.
    pub listeners: Vec<Listener>,
    /// The iSCSI target, its bound portals and their tasks.
    pub iscsi: Option<(Arc<alcubierre_iscsi::Target>, Vec<SocketAddr>)>,
    iscsi_tasks: Vec<tokio::task::JoinHandle<()>>,
    service: Option<CacheService>,
    cluster: Option<Cluster>,
    /// What was exported.
    pub volumes: Vec<ExportedVolume>,
}

/// One exported volume, as printed at start-up.
#[derive(Clone, Debug, Serialize)]
pub struct ExportedVolume {
    /// Name from the config.
    pub name: String,
    /// Volume id.
    pub id: String,
    /// Subsystem NQN.
    pub nqn: String,
    /// iSCSI target name (when the node serves iSCSI).
    pub iqn: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Whether it is served from memory (benchmarks).
    pub memory: bool,
}

fn portals(cfg: &NodeConfig) -> anyhow::Result<Vec<Portal>> {
    let advertised =
        crate::config::advertised("nvmf.advertise", &cfg.nvmf.advertise, &cfg.nvmf.listen)?;
    let addrs: Vec<SocketAddr> = if advertised.is_empty() {
        if let Some(a) = cfg.nvmf.listen.iter().find(|a| a.ip().is_unspecified()) {
            tracing::warn!(
                "nvmf.listen {a} is a wildcard and nvmf.advertise is empty: discovery will \
                 advertise the address each host connected to"
            );
            return Ok(Vec::new());
        }
        cfg.nvmf.listen.clone()
    } else {
        advertised
    };
    Ok(addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Portal {
            addr: a.ip().to_string(),
            port: a.port(),
            port_id: i as u16 + 1,
        })
        .collect())
}

/// The iSCSI portals hosts reach this node on: the advertised addresses, else the bound
/// listeners that are not wildcards.
fn iscsi_portals(cfg: &NodeConfig, bound: &[SocketAddr]) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(sec) = &cfg.iscsi else {
        return Ok(Vec::new());
    };
    let advertised = crate::config::advertised("iscsi.advertise", &sec.advertise, bound)?;
    Ok(if advertised.is_empty() {
        bound
            .iter()
            .filter(|a| !a.ip().is_unspecified())
            .copied()
            .collect()
    } else {
        advertised
    })
}

/// Opens the cache device, creating and formatting a file when asked to.
/// Whether the node needs its cache device (and so a backend).
fn needs_cache(cfg: &NodeConfig) -> bool {
    cfg.cache.is_some() && (cfg.cluster.is_some() || cfg.volumes.iter().any(|v| !v.memory))
}

/// The backend of the node's `[backend]` section.
fn section_backend(b: &crate::config::BackendSection) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match b.kind.as_str() {
        "rbd" => Arc::new(
            alcubierre_rbd::RbdBackend::connect(&b.rbd()).context("backend: connecting to Ceph")?,
        ),
        _ => {
            let dir = b.dir.as_ref().expect("validated");
            Arc::new(
                FileBackend::new(dir.clone())
                    .with_context(|| format!("backend.dir: {}", dir.display()))?,
            )
        }
    })
}

/// The backend the cluster configuration names (for a node without a `[backend]` section).
async fn cluster_backend(c: &crate::config::ClusterSection) -> anyhow::Result<Arc<dyn Backend>> {
    use alcubierre_control::cluster::{self, BackendAddress};
    let store = alcubierre_store::EtcdStore::connect(&c.etcd, std::time::Duration::from_secs(5))
        .await
        .with_context(|| format!("cluster.etcd: cannot reach {}", c.etcd.join(", ")))?;
    let config = cluster::load(&store).await?;
    let Some(address) = config.backend else {
        bail!(
            "backend: this node has no [backend] section and the cluster configuration names no \
             backend (set one with `alcubierre cluster set` or PUT /api/v1/cluster/config)"
        );
    };
    let opened: Arc<dyn Backend> = match address {
        BackendAddress::File { path } => Arc::new(
            FileBackend::new(&path)
                .with_context(|| format!("the cluster configuration's backend.path {path}"))?,
        ),
        BackendAddress::Rbd { .. } => {
            let timeout = alcubierre_rbd::RbdConfig::default().op_timeout;
            let rbd = address.rbd_config(timeout).expect("a Ceph backend");
            let b = tokio::task::spawn_blocking(move || alcubierre_rbd::RbdBackend::connect(&rbd))
                .await?
                .context("the cluster configuration's backend: connecting to Ceph")?;
            Arc::new(b)
        }
    };
    tracing::info!(backend = %opened.describe(), "using the cluster configuration's backend");
    Ok(opened)
}

fn open_cache(
    cfg: &NodeConfig,
    backend: Option<Arc<dyn Backend>>,
) -> anyhow::Result<Option<(CacheService, Arc<RateLimiter>)>> {
    let (Some(c), Some(backend)) = (&cfg.cache, backend) else {
        return Ok(None);
    };
    if !c.device.exists() {
        let Some(size) = c.create_size else {
            bail!(
                "cache.device: {} does not exist (set cache.create_size to create a file, or run \
                 `alcubierre format`)",
                c.device.display()
            );
        };
        let m = DirectFile::create_file(&c.device, size.0)
            .with_context(|| format!("cache.device: creating {}", c.device.display()))?;
        Engine::format(
            &m,
            &FormatOptions {
                partitions: c.partitions,
                ..FormatOptions::default()
            },
        )
        .context("cache.device: formatting")?;
        tracing::info!(device = %c.device.display(), size = %ByteSize(size.0), "cache device created and formatted");
    }
    let medium: Arc<dyn Medium> = Arc::new(
        DirectFile::open(&c.device)
            .with_context(|| format!("cache.device: opening {}", c.device.display()))?,
    );
    let engine = Arc::new(
        Engine::open(medium, backend.clone()).context("cache.device: opening the engine")?,
    );
    let rep = engine.recovery_report();
    tracing::info!(?rep, "cache recovered");
    for v in cfg.volumes.iter().filter(|v| !v.memory) {
        let id = v.volume_id();
        match backend.size(id) {
            Ok(s) if s.0 < v.size.0 => backend.resize(id, ByteSize(v.size.0))?,
            Ok(s) if s.0 > v.size.0 => bail!(
                "volume {}: size {} is smaller than the existing image ({}); shrinking is not supported",
                v.name,
                ByteSize(v.size.0),
                s
            ),
            Ok(_) => {}
            Err(BackendError::NotFound { .. }) => backend.create(id, ByteSize(v.size.0))?,
            Err(e) => return Err(e).with_context(|| format!("volume {}: backend", v.name)),
        }
        let g = VolumeGeometry::new(
            BlockSize::from_bytes(v.block_size.expect("validated"))?,
            ByteSize(v.size.0),
        )?;
        engine.attach(id, g)?;
    }
    let limit = Arc::new(RateLimiter::new(c.destage_rate.0, 0));
    let svc = CacheService::start(
        engine,
        ServiceConfig {
            destage_limit: Some(limit.clone()),
            ..ServiceConfig::default()
        },
    );
    Ok(Some((svc, limit)))
}

/// Starts a node (inside a tokio runtime).
pub async fn start(cfg: &NodeConfig) -> anyhow::Result<Node> {
    let backend = match (needs_cache(cfg), &cfg.backend, &cfg.cluster) {
        (false, _, _) => None,
        (true, Some(b), _) => Some(section_backend(b)?),
        (true, None, Some(c)) => Some(cluster_backend(c).await?),
        (true, None, None) => unreachable!("validated: configured volumes need [backend]"),
    };
    let (service, destage_limit) = match open_cache(cfg, backend)? {
        Some((s, l)) => (Some(s), Some(l)),
        None => (None, None),
    };
    let target = Arc::new(Target::new(TargetConfig {
        cntlid_base: cfg.node.cntlid_base,
        cntlid_count: cfg.node.cntlid_count,
        in_capsule_data: cfg.nvmf.in_capsule_data,
        portals: portals(cfg)?,
        busy_poll: std::time::Duration::from_micros(cfg.nvmf.busy_poll_us as u64),
        ..TargetConfig::default()
    }));
    let iscsi = cfg.iscsi.as_ref().map(|_| {
        let t = alcubierre_iscsi::Target::new();
        t.set_portal_group(cfg.node.ana_group as u16);
        t
    });
    let mut volumes = Vec::new();
    for v in &cfg.volumes {
        let id = v.volume_id();
        let g = VolumeGeometry::new(
            BlockSize::from_bytes(v.block_size.expect("validated"))?,
            ByteSize(v.size.0),
        )?;
        // Only this node serves a configured volume: its reservations live here.
        let dev: Arc<dyn BlockDevice> = if v.memory {
            Arc::new(Reserved::volatile(MemBlockDevice::new(g)))
        } else {
            let volume = service.as_ref().expect("cache opened").volume(id)?;
            Arc::new(Reserved::volatile(volume))
        };
        let acl = if v.hosts.iter().any(|h| h == "*") {
            HostAcl::Any
        } else {
            HostAcl::Only(v.hosts.clone())
        };
        let iqn =
            iscsi.as_ref().map(|t| {
                let name = alcubierre_iscsi::volume_iqn(id);
                t.export(
                    &name,
                    alcubierre_iscsi::Export {
                        lun: Arc::new(alcubierre_iscsi::scsi::Lun::new(
                            dev.clone(),
                            id.to_bytes(),
                            cfg.node.ana_group as u16,
                        )),
                        access: alcubierre_iscsi::login::Access {
                            // `*`: any; otherwise the IQNs listed (none: no iSCSI initiator).
                            initiators: (!v.hosts.iter().any(|h| h == "*")).then(|| {
                                v.hosts
                                    .iter()
                                    .filter(|h| h.starts_with("iqn."))
                                    .cloned()
                                    .collect()
                            }),
                            chap: v.chap_user.clone().zip(v.chap_secret.clone()).map(
                                |(user, secret)| alcubierre_iscsi::login::Chap { user, secret },
                            ),
                            ..Default::default()
                        },
                        portals: vec![],
                    },
                );
                name
            });
        let s = Arc::new(Subsystem::new(id, dev, acl, cfg.node.ana_group));
        volumes.push(ExportedVolume {
            name: v.name.clone(),
            id: id.to_string(),
            iqn,
            nqn: s.nqn.clone(),
            size: v.size.0,
            memory: v.memory,
        });
        target.add_subsystem(s);
    }
    let mut listeners = Vec::new();
    for (i, a) in cfg
        .nvmf
        .listen
        .iter()
        .chain(&cfg.nvmf.discovery_listen)
        .enumerate()
    {
        let l = Listener::bind(target.clone(), *a, i as u16 + 1)
            .await
            .with_context(|| format!("nvmf.listen: binding {a}"))?;
        listeners.push(l);
    }
    let (mut iscsi_bound, mut iscsi_tasks) = (Vec::new(), Vec::new());
    let mut iscsi_addrs = Vec::new();
    if let (Some(t), Some(sec)) = (&iscsi, &cfg.iscsi) {
        for a in &sec.listen {
            let (bound, task) = alcubierre_iscsi::driver::listen(t.clone(), *a)
                .await
                .with_context(|| format!("iscsi.listen: binding {a}"))?;
            iscsi_bound.push(bound);
            iscsi_tasks.push(task);
        }
        iscsi_addrs = iscsi_portals(cfg, &iscsi_bound)?;
        if let Some(a) = iscsi_addrs.first() {
            t.set_local_portal(a.to_string());
        }
    }
    let cluster = match &cfg.cluster {
        Some(c) => {
            // What hosts reach: the advertised portals, else the bound I/O listeners.
            let portals: Vec<String> = if target.config.portals.is_empty() {
                listeners[..cfg.nvmf.listen.len()]
                    .iter()
                    .map(|l| l.local_addr().to_string())
                    .collect()
            } else {
                target
                    .config
                    .portals
                    .iter()
                    // As a socket address: an IPv6 one in brackets.
                    .map(|p| match p.addr.parse::<std::net::IpAddr>() {
                        Ok(ip) => SocketAddr::new(ip, p.port).to_string(),
                        Err(_) => format!("{}:{}", p.addr, p.port),
                    })
                    .collect()
            };
            Some(
                join_cluster(
                    cfg,
                    c,
                    service.as_ref(),
                    destage_limit,
                    (&target, iscsi.clone()),
                    portals,
                    // With the node's portal group tag, as SendTargets lists them.
                    iscsi_addrs
                        .iter()
                        .map(|a| format!("{a},{}", cfg.node.ana_group))
                        .collect(),
                )
                .await?,
            )
        }
        None => None,
    };
    Ok(Node {
        target,
        listeners,
        iscsi: iscsi.map(|t| (t, iscsi_bound)),
        iscsi_tasks,
        service,
        cluster,
        volumes,
    })
}

/// What a node runs when it is part of a cluster.
struct Cluster {
    _agent: crate::agent::Agent,
    leader: tokio::task::JoinHandle<()>,
    api: Option<tokio::task::JoinHandle<()>>,
    /// The API's URL.
    api_addr: Option<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.leader.abort();
        if let Some(t) = &self.api {
            t.abort();
        }
    }
}

/// Registers this node in the cluster's store and starts its heartbeat.
async fn join_cluster(
    cfg: &NodeConfig,
    c: &crate::config::ClusterSection,
    service: Option<&CacheService>,
    destage_limit: Option<Arc<RateLimiter>>,
    (target, iscsi): (&Arc<Target>, Option<Arc<alcubierre_iscsi::Target>>),
    portals: Vec<String>,
    iscsi_portals: Vec<String>,
) -> anyhow::Result<Cluster> {
    use alcubierre_control::model::{Activation, CacheDevice, CacheState, Node as NodeRecord};
    use std::time::Duration;
    let store = alcubierre_store::EtcdStore::connect(&c.etcd, Duration::from_secs(5))
        .await
        .with_context(|| format!("cluster.etcd: cannot reach {}", c.etcd.join(", ")))?;
    let store: Arc<dyn alcubierre_store::Store> = Arc::new(store);
    let cache = match (&cfg.cache, service) {
        (Some(cs), Some(svc)) => vec![CacheDevice {
            path: cs.device.display().to_string(),
            size: svc.engine().medium().len(),
            state: CacheState::Healthy,
        }],
        _ => Vec::new(),
    };
    let replica_addr = c.replica_listen.unwrap_or_else(|| {
        let ip = cfg
            .nvmf
            .listen
            .first()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        SocketAddr::new(ip, 0)
    });
    let replica = alcubierre_replica::node::ReplicaServer::bind(replica_addr)
        .await
        .with_context(|| format!("cluster.replica_listen: binding {replica_addr}"))?;
    let record = NodeRecord {
        name: cfg.node.name.clone(),
        management: c.api_listen.map_or(String::new(), |a| {
            let scheme = if c.api_tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{a}")
        }),
        replica: replica.local_addr().to_string(),
        cache,
        activation: Activation::Registered,
        draining: false,
        cpu_threads: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u32),
        portals,
        iscsi_portals,
        nvme: Some(alcubierre_control::model::NvmeIdentity {
            ana_group: cfg.node.ana_group,
            cntlid_base: cfg.node.cntlid_base,
            cntlid_count: cfg.node.cntlid_count,
        }),
    };
    if let Some(svc) = service {
        crate::replication::check_shared_backend(&*store, &**svc.engine().backend())
            .await
            .context("cluster: joining")?;
    }
    alcubierre_control::registry::register(&*store, &record)
        .await
        .context("cluster: registering this node")?;
    let hb = alcubierre_control::registry::Heartbeat::start(
        store.clone(),
        &cfg.node.name,
        Duration::from_millis(c.heartbeat_interval_ms),
        Duration::from_millis(c.heartbeat_timeout_ms),
    )
    .await
    .context("cluster: starting the heartbeat")?;
    tracing::info!(node = %cfg.node.name, "joined the cluster");
    let Some(svc) = service else {
        bail!("cluster: a node in a cluster needs [cache] and [backend]");
    };
    let stats = crate::agent::VolumeStats::default();
    let health = std::sync::Arc::new(crate::agent::AgentHealth::default());
    let agent = crate::agent::Agent::start(
        store.clone(),
        crate::agent::NodeParts {
            name: cfg.node.name.clone(),
            engine: svc.engine().clone(),
            volumes: svc.volumes(),
            target: target.clone(),
            iscsi,
            ana_group: cfg.node.ana_group,
            destage_limit: destage_limit.clone(),
            stats: stats.clone(),
            replica: Some(replica),
            lease: Default::default(),
            health: health.clone(),
        },
        hb,
    );
    let leader = tokio::spawn(alcubierre_control::leader::run(
        store.clone(),
        cfg.node.name.clone(),
    ));
    let node_metrics = crate::metrics::renderer(vec![crate::metrics::NodeSources {
        node: cfg.node.name.clone(),
        engine: Some(svc.engine().clone()),
        destage_limit,
        volumes: stats,
        health: Some(health),
    }]);
    let (api, api_addr) = match c.api_listen {
        Some(addr) => {
            let token = c
                .api_token
                .clone()
                .or_else(|| std::env::var("ALCUBIERRE_TOKEN").ok())
                .filter(|t| !t.is_empty())
                .context("cluster.api_token: set it (or ALCUBIERRE_TOKEN) to serve the API")?;
            let tls = match (&c.api_tls_cert, &c.api_tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
                _ => None,
            };
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cluster.api_listen: binding {addr}"))?;
            let bound = l.local_addr()?;
            let app = alcubierre_control::api::router(alcubierre_control::api::ApiState {
                store,
                token: Arc::new(token),
                licence: alcubierre_control::activation::Licence::default(),
                now: alcubierre_control::unix_now,
                node_metrics: Some(node_metrics),
                backend: Some(svc.engine().backend().clone()),
            });
            let scheme = if tls.is_some() { "https" } else { "http" };
            let t = match tls {
                Some(cfg) => {
                    let l = crate::tls::TlsListener::new(l, cfg)?;
                    tokio::spawn(async move {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!("API server stopped: {e}");
                        }
                    })
                }
                None => tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::error!("API server stopped: {e}");
                    }
                }),
            };
            (Some(t), Some(format!("{scheme}://{bound}")))
        }
        None => (None, None),
    };
    Ok(Cluster {
        _agent: agent,
        leader,
        api,
        api_addr,
    })
}

impl Node {
    /// Stops accepting and stops the cache service.
    pub fn stop(mut self) {
        self.listeners.clear();
        for t in self.iscsi_tasks.drain(..) {
            t.abort();
        }
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
    }
}

#[derive(Serialize)]
struct Ready<'a> {
    node: &'a str,
    listening: Vec<String>,
    iscsi: Vec<String>,
    volumes: &'a [ExportedVolume],
    api: Option<String>,
}

/// `alcubierre serve --config FILE`.
pub fn run(config: &Path, json: bool) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    let threads = cfg
        .node
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // One thread: a current-thread runtime (no work stealing, no cross-thread wake-ups).
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("nvmf")
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        let node = start(&cfg).await?;
        let ready = Ready {
            node: &cfg.node.name,
            listening: node.listeners.iter().map(|l| l.local_addr().to_string()).collect(),
            iscsi: node
                .iscsi
                .as_ref()
                .map(|(_, b)| b.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            volumes: &node.volumes,
            api: node
                .cluster
                .as_ref()
                .and_then(|c| c.api_addr.clone()),
        };
        if json {
            println!("{}", serde_json::to_string(&ready)?);
        } else {
            println!("node {} serving NVMe/TCP on {}", ready.node, ready.listening.join(", "));
            if !ready.iscsi.is_empty() {
                println!("  and iSCSI on {}", ready.iscsi.join(", "));
            }
            for v in &node.volumes {
                println!(
                    "  volume {} ({}, {}{}): {}",
                    v.name,
                    v.id,
                    ByteSize(v.size),
                    if v.memory { ", memory" } else { "" },
                    v.nqn
                );
            }
            if let Some(p) = node.target.config.portals.first() {
                println!(
                    "connect: nvme discover -t tcp -a {} -s {}; nvme connect-all -t tcp -a {} -s {}",
                    p.addr, p.port, p.addr, p.port
                );
            }
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        node.stop();
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
