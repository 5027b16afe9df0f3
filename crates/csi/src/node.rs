//! The Node service. Built so far: the node's identity (its id is the host's name in the
//! cluster, the same the host agent registers), its capabilities, and unpublish/unstage of what
//! is mounted (idempotent). Staging and publishing, which attach through the host agent's
//! library, are not built yet: those calls answer UNIMPLEMENTED saying so.

use tonic::{Request, Response, Status};

use crate::proto::node_server::Node;
use crate::proto::node_service_capability::rpc::Type as Rpc;
use crate::proto::*;

/// How many volumes a node takes (NVMe controllers and iSCSI sessions are per path).
pub const MAX_VOLUMES_PER_NODE: i64 = 256;

/// The Node service of host `node_id`.
pub struct NodeService {
    node_id: String,
}

impl NodeService {
    /// The service of the node named `node_id`.
    pub fn new(node_id: String) -> Self {
        Self { node_id }
    }
}

fn required(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        Err(crate::status::invalid(field, "required"))
    } else {
        Ok(())
    }
}

/// Whether `path` is a mount point (this mount namespace's table).
fn mounted(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|p| p == path)
    })
}

/// Unmounts `path` when something is mounted there.
async fn unmount(path: &str) -> Result<(), Status> {
    if !mounted(path) {
        return Ok(());
    }
    let out = tokio::process::Command::new("umount")
        .arg(path)
        .output()
        .await
        .map_err(|e| Status::internal(format!("running umount {path}: {e}")))?;
    if !out.status.success() {
        return Err(Status::internal(format!(
            "umount {path}: {}; stop what uses it (lsof {path})",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what}: node staging through the host agent is not built into this driver yet"
    ))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(not_yet("NodeStageVolume"))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("staging_target_path", &r.staging_target_path)?;
        // Idempotent: nothing mounted there is done (staging does not attach yet).
        unmount(&r.staging_target_path).await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        _: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        Err(not_yet("NodePublishVolume"))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("target_path", &r.target_path)?;
        unmount(&r.target_path).await?;
        // The kubelet made the directory; an unpublished target leaves none behind.
        match std::fs::remove_dir(&r.target_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A file (a raw block target) goes too.
            Err(_) => {
                let _ = std::fs::remove_file(&r.target_path);
            }
        }
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(not_yet("NodeGetVolumeStats"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(not_yet("NodeExpandVolume"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [Rpc::StageUnstageVolume]
            .iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc { r#type: *t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: MAX_VOLUMES_PER_NODE,
            accessible_topology: Some(Topology {
                segments: [(crate::TOPOLOGY_KEY.to_string(), "cluster".to_string())].into(),
            }),
        }))
    }
}
