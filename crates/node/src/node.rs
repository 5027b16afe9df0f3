//! A node's assembly: the cache engine on its device, the backend, the NVMe/TCP and iSCSI
//! targets exporting the configured volumes and, in a cluster, the registration, the heartbeat,
//! the agent, the leader election and the REST API. `alcubierre serve` starts one node from its
//! config file, `alcubierre demo` three in one process on an embedded store, and the in-process
//! tests as many as they need: all through [`Node::start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_backend::{Backend, BackendError, FileBackend};
use alcubierre_block::{BlockDevice, MemBlockDevice, RateLimiter, Reserved};
use alcubierre_cache::{CacheService, Engine, FormatOptions, ServiceConfig};
use alcubierre_control::api::ApiState;
use alcubierre_io::{DirectFile, Medium};
use alcubierre_nvmf::{HostAcl, Listener, Portal, Subsystem, Target, TargetConfig};
use alcubierre_store::Store;
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry};
use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::{BackendSection, ClusterSection, NodeConfig};
use crate::metrics::NodeSources;
use crate::parts::{AgentHealth, NodeParts, VolumeStats};

/// What a node is started from.
pub struct NodeSpec {
    /// Its configuration: a `serve` config file, or one the demo or a test builds.
    pub config: NodeConfig,
    /// The cluster's store, used instead of connecting to `cluster.etcd` (the demo's embedded
    /// store, tests).
    pub store: Option<Arc<dyn Store>>,
    /// An opened backend, used instead of `[backend]` or the cluster configuration's.
    pub backend: Option<Arc<dyn Backend>>,
    /// A listen address whose port is taken is replaced by a free port of the same address
    /// (the demo's usual ports, when free); otherwise it is an error.
    pub any_port_when_taken: bool,
}

impl NodeSpec {
    /// A node from its configuration alone (`alcubierre serve`).
    pub fn from_config(config: NodeConfig) -> Self {
        Self {
            config,
            store: None,
            backend: None,
            any_port_when_taken: false,
        }
    }
}

/// A running node. Dropping it stops the cluster tasks; [`Node::stop`] also stops the cache.
pub struct Node {
    /// Its name.
    pub name: String,
    /// The NVMe/TCP target.
    pub target: Arc<Target>,
    /// Bound addresses: I/O portals, then discovery-only listeners.
    pub listeners: Vec<Listener>,
    /// The iSCSI target and its bound portals.
    pub iscsi: Option<(Arc<alcubierre_iscsi::Target>, Vec<SocketAddr>)>,
    iscsi_tasks: Vec<tokio::task::JoinHandle<()>>,
    service: Option<CacheService>,
    cluster: Option<Cluster>,
    /// The volumes of its `[[volume]]` sections.
    pub volumes: Vec<ExportedVolume>,
}

/// One volume of a `[[volume]]` section, as printed at start-up.
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

/// What a node runs when it is part of a cluster.
struct Cluster {
    agent: Option<crate::agent::Agent>,
    leader: tokio::task::JoinHandle<()>,
    api: Option<Api>,
    metrics: NodeSources,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.leader.abort();
    }
}

/// A REST API server; dropping it stops it.
pub struct Api {
    task: tokio::task::JoinHandle<()>,
    /// Its URL (`http://` or `https://` and the bound address).
    pub url: String,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Api {
    /// Serves `state` on `listen`, over TLS with `tls` (a PEM certificate chain and key).
    pub async fn serve(
        listen: SocketAddr,
        tls: Option<(&std::path::Path, &std::path::Path)>,
        state: ApiState,
    ) -> anyhow::Result<Self> {
        let tls = match tls {
            Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
            None => None,
        };
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cluster.api_listen: binding {listen}"))?;
        let bound = l.local_addr()?;
        let app = alcubierre_control::api::router(state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
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
        Ok(Self {
            task,
            url: format!("{scheme}://{bound}"),
        })
    }
}

/// The NVMe/TCP portals hosts are told about: the advertised addresses, else the listen
/// addresses (none when one is a wildcard: discovery then gives each host the address it
/// connected to).
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

/// Whether the node needs its cache device (and so a backend).
fn needs_cache(cfg: &NodeConfig) -> bool {
    cfg.cache.is_some() && (cfg.cluster.is_some() || cfg.volumes.iter().any(|v| !v.memory))
}

/// The backend of the node's `[backend]` section.
fn section_backend(b: &BackendSection) -> anyhow::Result<Arc<dyn Backend>> {
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
async fn cluster_backend(store: &dyn Store) -> anyhow::Result<Arc<dyn Backend>> {
    use alcubierre_control::cluster::{self, BackendAddress};
    let config = cluster::load(store).await?;
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

/// The cluster's store: the one handed over, else etcd at `cluster.etcd`.
async fn cluster_store(spec: &NodeSpec, c: &ClusterSection) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(s) = &spec.store {
        return Ok(s.clone());
    }
    let store = alcubierre_store::EtcdStore::connect(&c.etcd, Duration::from_secs(5))
        .await
        .with_context(|| format!("cluster.etcd: cannot reach {}", c.etcd.join(", ")))?;
    Ok(Arc::new(store))
}

/// Opens the cache device (creating and formatting a file when asked to), attaches the
/// configured volumes and starts the cache service.
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

/// Binds every address of `addrs` (`field` names them in errors) before anything else, so that
/// the portals the node advertises are the ones it listens on; with `any_port`, an address whose
/// port is taken is bound on a free port of the same IP instead (the demo's usual ports, when
/// free). Each address is replaced by the bound one.
fn bind_all(
    field: &str,
    addrs: &mut [SocketAddr],
    any_port: bool,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = match std::net::TcpListener::bind(*a) {
            Err(e) if any_port && e.kind() == std::io::ErrorKind::AddrInUse => {
                std::net::TcpListener::bind(SocketAddr::new(a.ip(), 0))
            }
            r => r,
        }
        .with_context(|| format!("{field}: binding {a}"))?;
        *a = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

impl Node {
    /// Starts a node (inside a tokio runtime).
    pub async fn start(mut spec: NodeSpec) -> anyhow::Result<Node> {
        spec.config.validate(spec.store.is_some())?;
        let any = spec.any_port_when_taken;
        let mut nvme_sockets = bind_all("nvmf.listen", &mut spec.config.nvmf.listen, any)?;
        nvme_sockets.extend(bind_all(
            "nvmf.discovery_listen",
            &mut spec.config.nvmf.discovery_listen,
            any,
        )?);
        let iscsi_sockets = match &mut spec.config.iscsi {
            Some(i) => bind_all("iscsi.listen", &mut i.listen, any)?,
            None => Vec::new(),
        };
        let cfg = &spec.config;
        let store = match &cfg.cluster {
            Some(c) => Some(cluster_store(&spec, c).await?),
            None => None,
        };
        let backend = match (needs_cache(cfg), &spec.backend, &cfg.backend, &store) {
            (false, _, _, _) => None,
            (true, Some(b), _, _) => Some(b.clone()),
            (true, None, Some(b), _) => Some(section_backend(b)?),
            (true, None, None, Some(s)) => Some(cluster_backend(&**s).await?),
            (true, None, None, None) => {
                unreachable!("validated: configured volumes need [backend]")
            }
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
            busy_poll: Duration::from_micros(cfg.nvmf.busy_poll_us as u64),
            ..TargetConfig::default()
        }));
        let iscsi = cfg.iscsi.as_ref().map(|_| {
            let t = alcubierre_iscsi::Target::new();
            t.set_portal_group(cfg.node.ana_group as u16);
            t
        });
        let volumes = export_configured(cfg, service.as_ref(), &target, iscsi.as_ref())?;
        let mut listeners = Vec::new();
        for (i, sock) in nvme_sockets.into_iter().enumerate() {
            listeners.push(Listener::from_std(target.clone(), sock, i as u16 + 1)?);
        }
        let (mut iscsi_bound, mut iscsi_tasks) = (Vec::new(), Vec::new());
        let mut iscsi_addrs = Vec::new();
        if let Some(t) = &iscsi {
            for sock in iscsi_sockets {
                let (bound, task) = alcubierre_iscsi::driver::listen_std(t.clone(), sock)?;
                iscsi_bound.push(bound);
                iscsi_tasks.push(task);
            }
            iscsi_addrs = iscsi_portals(cfg, &iscsi_bound)?;
            if let Some(a) = iscsi_addrs.first() {
                t.set_local_portal(a.to_string());
            }
        }
        let cluster = match (&cfg.cluster, store) {
            (Some(c), Some(store)) => {
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
                let Some(svc) = service.as_ref() else {
                    bail!("cluster: a node in a cluster needs [cache] and [backend]");
                };
                Some(
                    join_cluster(
                        cfg,
                        c,
                        store,
                        svc,
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
            _ => None,
        };
        Ok(Node {
            name: cfg.node.name.clone(),
            target,
            listeners,
            iscsi: iscsi.map(|t| (t, iscsi_bound)),
            iscsi_tasks,
            service,
            cluster,
            volumes,
        })
    }

    /// The REST API's URL, when this node serves it.
    pub fn api_url(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .and_then(|c| c.api.as_ref())
            .map(|a| a.url.as_str())
    }

    /// What this node reports on `/metrics`, when it is in a cluster (for an API that serves
    /// several nodes' metrics, as the demo's does).
    pub fn metrics(&self) -> Option<NodeSources> {
        self.cluster.as_ref().map(|c| c.metrics.clone())
    }

    /// The first NVMe/TCP listener's bound address.
    pub fn nvme_addr(&self) -> SocketAddr {
        self.listeners[0].local_addr()
    }

    /// The first iSCSI listener's bound address, when it serves iSCSI.
    pub fn iscsi_addr(&self) -> Option<SocketAddr> {
        self.iscsi.as_ref().and_then(|(_, b)| b.first().copied())
    }

    /// Stops the node: its cluster tasks (agent, leader, API), its listeners, and its cache
    /// service (every acknowledged write is already in the journal).
    pub fn stop(mut self) {
        if let Some(mut c) = self.cluster.take() {
            drop(c.api.take());
            drop(c.agent.take());
        }
        self.listeners.clear();
        for t in self.iscsi_tasks.drain(..) {
            t.abort();
        }
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
    }
}

/// Exports the volumes of the `[[volume]]` sections: only this node serves them, so their
/// reservations live here.
fn export_configured(
    cfg: &NodeConfig,
    service: Option<&CacheService>,
    target: &Arc<Target>,
    iscsi: Option<&Arc<alcubierre_iscsi::Target>>,
) -> anyhow::Result<Vec<ExportedVolume>> {
    let mut volumes = Vec::new();
    for v in &cfg.volumes {
        let id = v.volume_id();
        let g = VolumeGeometry::new(
            BlockSize::from_bytes(v.block_size.expect("validated"))?,
            ByteSize(v.size.0),
        )?;
        let dev: Arc<dyn BlockDevice> = if v.memory {
            Arc::new(Reserved::volatile(MemBlockDevice::new(g)))
        } else {
            let volume = service.expect("cache opened").volume(id)?;
            Arc::new(Reserved::volatile(volume))
        };
        let acl = if v.hosts.iter().any(|h| h == "*") {
            HostAcl::Any
        } else {
            HostAcl::Only(v.hosts.clone())
        };
        let iqn =
            iscsi.map(|t| {
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
    Ok(volumes)
}

/// Registers this node in the cluster's store, starts its heartbeat, its agent, its part in
/// the leader election and, when configured, the REST API.
#[allow(clippy::too_many_arguments)]
async fn join_cluster(
    cfg: &NodeConfig,
    c: &ClusterSection,
    store: Arc<dyn Store>,
    svc: &CacheService,
    destage_limit: Option<Arc<RateLimiter>>,
    (target, iscsi): (&Arc<Target>, Option<Arc<alcubierre_iscsi::Target>>),
    portals: Vec<String>,
    iscsi_portals: Vec<String>,
) -> anyhow::Result<Cluster> {
    use alcubierre_control::model::{Activation, CacheDevice, CacheState, Node as NodeRecord};
    let cache = match &cfg.cache {
        Some(cs) => vec![CacheDevice {
            path: cs.device.display().to_string(),
            size: svc.engine().medium().len(),
            state: CacheState::Healthy,
        }],
        None => Vec::new(),
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
    crate::replication::check_shared_backend(&*store, &**svc.engine().backend())
        .await
        .context("cluster: joining")?;
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
    let stats = VolumeStats::default();
    let health = Arc::new(AgentHealth::default());
    let metrics = NodeSources {
        node: cfg.node.name.clone(),
        engine: Some(svc.engine().clone()),
        destage_limit: destage_limit.clone(),
        volumes: stats.clone(),
        health: Some(health.clone()),
    };
    // The API before the node's tasks: a wrong token, TLS file or address fails the start
    // before the node acts on any volume.
    let api = match c.api_listen {
        Some(addr) => {
            let token = c
                .api_token
                .clone()
                .or_else(|| std::env::var("ALCUBIERRE_TOKEN").ok())
                .filter(|t| !t.is_empty())
                .context("cluster.api_token: set it (or ALCUBIERRE_TOKEN) to serve the API")?;
            let state = ApiState {
                store: store.clone(),
                token: Arc::new(token),
                licence: alcubierre_control::activation::Licence::default(),
                now: alcubierre_control::unix_now,
                node_metrics: Some(crate::metrics::renderer(vec![metrics.clone()])),
                backend: Some(svc.engine().backend().clone()),
            };
            let tls = c.api_tls_cert.as_deref().zip(c.api_tls_key.as_deref());
            Some(Api::serve(addr, tls, state).await?)
        }
        None => None,
    };
    let agent = crate::agent::Agent::start(
        store.clone(),
        NodeParts {
            name: cfg.node.name.clone(),
            engine: svc.engine().clone(),
            volumes: svc.volumes(),
            target: target.clone(),
            iscsi,
            ana_group: cfg.node.ana_group,
            destage_limit,
            stats,
            replica: Some(replica),
            lease: Default::default(),
            health,
        },
        hb,
    );
    let leader = tokio::spawn(alcubierre_control::leader::run(
        store,
        cfg.node.name.clone(),
    ));
    Ok(Cluster {
        agent: Some(agent),
        leader,
        api,
        metrics,
    })
}
