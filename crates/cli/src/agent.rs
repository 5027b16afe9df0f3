//! A node's agent in a cluster: it applies the desired state the store holds.
//! * Activation: when its record turns `activating`, it checks its cache devices and reports
//!   success or failure (`registry::finish_activation`).
//! * Volumes: it watches `volumes/` and exports over NVMe/TCP the volumes whose first replica it
//!   is (creating the backend image and attaching the volume to its cache first). Until
//!   replication exists (issue 6), the other replicas hold no data.

use std::collections::HashSet;
use std::sync::Arc;

use alcubierre_backend::BackendError;
use alcubierre_cache::{Engine, VolumeOpener};
use alcubierre_control::model::{Activation, Node};
use alcubierre_control::registry;
use alcubierre_control::volumes::Volume;
use alcubierre_nvmf::{HostAcl, Subsystem, Target};
use alcubierre_store::{Store, WatchEvent};
use alcubierre_types::{BlockSize, ByteSize, VolumeGeometry, VolumeId};

/// The running agent; dropping it stops it.
pub struct Agent {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the agent acts on.
pub struct NodeParts {
    /// This node's name.
    pub name: String,
    /// Its cache engine.
    pub engine: Arc<Engine>,
    /// Opens volumes of its cache service.
    pub volumes: VolumeOpener,
    /// Its NVMe/TCP target.
    pub target: Arc<Target>,
    /// Its ANA group.
    pub ana_group: u32,
}

impl Agent {
    /// Starts the agent.
    pub fn start(store: Arc<dyn Store>, parts: NodeParts) -> Self {
        let parts = Arc::new(parts);
        let tasks = vec![
            tokio::spawn(activation(store.clone(), parts.name.clone())),
            tokio::spawn(volumes(store, parts)),
        ];
        Self { tasks }
    }
}

async fn activation(store: Arc<dyn Store>, name: String) {
    let key = format!("{}{name}", registry::NODES);
    let Ok(mut w) = store.watch(&key, Some(1)).await else {
        tracing::error!(node = %name, "cannot watch the node record");
        return;
    };
    while let Some(ev) = w.next().await {
        let Ok(WatchEvent::Put(kv)) = ev else {
            continue;
        };
        if kv.key != key {
            continue;
        }
        let Ok(node) = serde_json::from_slice::<Node>(&kv.value) else {
            continue;
        };
        if node.activation == Activation::Activating {
            match registry::finish_activation(&*store, &node).await {
                Ok(n) => {
                    tracing::info!(node = %name, state = n.activation.name(), "activation finished")
                }
                Err(e) => tracing::warn!(node = %name, "finishing activation failed: {e}"),
            }
        }
    }
}

fn export(p: &NodeParts, v: &Volume) -> anyhow::Result<()> {
    let id = VolumeId(v.id.parse()?);
    let backend = p.engine.backend();
    match backend.size(id) {
        Err(BackendError::NotFound { .. }) => backend.create(id, ByteSize(v.size))?,
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let g = VolumeGeometry::new(BlockSize::from_bytes(v.block_size)?, ByteSize(v.size))?;
    p.engine.attach(id, g)?;
    let dev = Arc::new(p.volumes.volume(id)?);
    p.target
        .add_subsystem(Arc::new(Subsystem::new(id, dev, HostAcl::Any, p.ana_group)));
    Ok(())
}

async fn volumes(store: Arc<dyn Store>, p: Arc<NodeParts>) {
    let mut exported: HashSet<String> = HashSet::new();
    let Ok(mut w) = store.watch("volumes/", Some(1)).await else {
        tracing::error!(node = %p.name, "cannot watch volumes");
        return;
    };
    while let Some(ev) = w.next().await {
        let Ok(WatchEvent::Put(kv)) = ev else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Volume>(&kv.value) else {
            continue;
        };
        if v.replicas.first() != Some(&p.name) || exported.contains(&v.id) {
            continue;
        }
        match export(&p, &v) {
            Ok(()) => {
                tracing::info!(node = %p.name, volume = %v.name, "exported");
                exported.insert(v.id.clone());
            }
            Err(e) => tracing::error!(node = %p.name, volume = %v.name, "export failed: {e:#}"),
        }
    }
}
