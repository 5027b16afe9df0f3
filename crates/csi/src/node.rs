//! The Node service: staging attaches the volume through the host agent's library (every
//! replica node's path, multipath) and, for mount access, makes the file system when the
//! volume is blank and mounts it; publishing bind-mounts the staged file system, or the device
//! for raw block; stats read the file system (or the device) and say when a path is lost;
//! expansion grows the file system. One operation per volume at a time: another one for the
//! same volume is ABORTED (the CO retries it).
//!
//! csi-sanity's node specs pass with it in the QEMU VM (crates/cli/tests/vm_csi.rs).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use alcubierre_host::agent::Agent;
use alcubierre_host::Protocol;
use tonic::{Request, Response, Status};

use crate::mounts::{fs_type, grow, mkfs, mount_of, mounted, parse_statfs, run, unmount};
use crate::proto::node_server::Node;
use crate::proto::node_service_capability::rpc::Type as Rpc;
use crate::proto::volume_capability::AccessType;
use crate::proto::*;
use crate::requests::{required, unsupported};

/// How many volumes a node takes (NVMe controllers and iSCSI sessions are per path).
pub const MAX_VOLUMES_PER_NODE: i64 = 256;

/// The Node service of host `node_id`.
pub struct NodeService {
    node_id: String,
    agent: Option<Arc<Agent>>,
    busy: Arc<Mutex<HashSet<String>>>,
}

/// A volume's operation in flight; the volume is free again when dropped.
struct Busy(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl NodeService {
    /// The service of the node named `node_id`, attaching through `agent` (`None`: the node
    /// cannot attach, and staging says why).
    pub fn new(node_id: String, agent: Option<Arc<Agent>>) -> Self {
        Self {
            node_id,
            agent,
            busy: Arc::default(),
        }
    }

    fn start(&self, volume: &str) -> Result<Busy, Status> {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !b.insert(volume.to_string()) {
            return Err(Status::aborted(format!(
                "an operation on volume {volume} is in flight on this node; retry when it ends"
            )));
        }
        Ok(Busy(self.busy.clone(), volume.to_string()))
    }

    fn agent(&self) -> Result<Arc<Agent>, Status> {
        self.agent.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this node cannot attach volumes: the host agent's configuration failed at start (see the driver's log)",
            )
        })
    }

    /// Attaches `volume` over `protocol`; its device.
    async fn attach(&self, volume: &str, protocol: Protocol) -> Result<String, Status> {
        let agent = self.agent()?;
        let v = volume.to_string();
        tokio::task::spawn_blocking(move || agent.attach(&v, protocol))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|a| a.device)
            .map_err(|e| host_error(&format!("attaching volume {volume}"), e))
    }

    /// The device of attached `volume`, and whether a path of it is down.
    async fn device(&self, volume: &str) -> Result<(String, Option<String>), Status> {
        let agent = self.agent()?;
        let all = tokio::task::spawn_blocking(move || agent.status())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| host_error("reading the attachments", e))?;
        let (_, a) = all
            .into_iter()
            .find(|(w, _)| w.volume == volume || w.name == volume)
            .ok_or_else(|| {
                Status::not_found(format!("volume {volume} is not staged on this node"))
            })?;
        let a = a.ok_or_else(|| {
            Status::not_found(format!(
                "volume {volume} is staged but has no device on this node"
            ))
        })?;
        let down: Vec<&str> = a
            .paths
            .iter()
            .filter(|p| !p.state.starts_with("live") && p.state != "LOGGED_IN")
            .map(|p| p.portal.as_str())
            .collect();
        let condition = (!down.is_empty()).then(|| {
            format!(
                "{} of {} paths down: {}",
                down.len(),
                a.paths.len(),
                down.join(", ")
            )
        });
        Ok((a.device, condition))
    }
}

/// The host agent's error as a status naming `what`.
fn host_error(what: &str, e: alcubierre_host::Error) -> Status {
    use alcubierre_host::Error as E;
    let m = format!("{what}: {e}");
    match e {
        E::Api(a) => crate::status::from_api(what, &a),
        E::InUse { .. } => Status::failed_precondition(m),
        E::Host(_) => Status::failed_precondition(m),
        E::Invalid(_) => Status::failed_precondition(m),
        E::NoPath { .. } | E::Unreachable { .. } | E::Timeout { .. } => Status::unavailable(m),
        _ => Status::internal(m),
    }
}

fn mount_cap(cap: &VolumeCapability) -> Option<(&str, &[String])> {
    match &cap.access_type {
        Some(AccessType::Mount(m)) => Some((
            if m.fs_type.is_empty() {
                "ext4"
            } else {
                &m.fs_type
            },
            &m.mount_flags,
        )),
        _ => None,
    }
}

fn capability(r: Option<&VolumeCapability>) -> Result<&VolumeCapability, Status> {
    let cap = r.ok_or_else(|| crate::status::invalid("volume_capability", "required"))?;
    if let Some(why) = unsupported(std::slice::from_ref(cap)) {
        return Err(crate::status::invalid("volume_capability", why));
    }
    Ok(cap)
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("staging_target_path", &r.staging_target_path)?;
        let cap = capability(r.volume_capability.as_ref())?;
        let _busy = self.start(&r.volume_id)?;
        let protocol: Protocol = r
            .volume_context
            .get("protocol")
            .map_or("nvme-tcp", String::as_str)
            .parse()
            .map_err(|e| crate::status::invalid("volume_context.protocol", e))?;
        let device = self.attach(&r.volume_id, protocol).await?;
        let Some((fs, flags)) = mount_cap(cap) else {
            // Raw block: publishing binds the device itself.
            return Ok(Response::new(NodeStageVolumeResponse {}));
        };
        let staging = &r.staging_target_path;
        if mounted(staging) {
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        match fs_type(&device).await? {
            None => mkfs(fs, &device).await?,
            Some(have) if have == fs => {}
            Some(have) => {
                return Err(Status::failed_precondition(format!(
                    "volume {} holds a {have} file system, not the {fs} asked for; ask for {have}, or use a blank volume",
                    r.volume_id
                )))
            }
        }
        std::fs::create_dir_all(staging)
            .map_err(|e| Status::internal(format!("creating {staging}: {e}")))?;
        let mut args = vec!["-t", fs];
        let mut opts = flags.to_vec();
        if fs == "xfs" && !opts.iter().any(|o| o == "nouuid") {
            // A clone or a restored snapshot has its source's UUID: mountable beside it.
            opts.push("nouuid".into());
        }
        let opts = opts.join(",");
        if !opts.is_empty() {
            args.extend(["-o", &opts]);
        }
        args.extend([device.as_str(), staging.as_str()]);
        run("mount", &args).await?;
        // A volume restored from a snapshot or cloned into a larger size has its source's
        // smaller file system: grown to the device (nothing to do otherwise).
        if !flags.iter().any(|f| f == "ro") {
            grow(fs, &device, staging).await?;
        }
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("staging_target_path", &r.staging_target_path)?;
        let _busy = self.start(&r.volume_id)?;
        unmount(&r.staging_target_path).await?;
        if let Some(agent) = self.agent.clone() {
            let v = r.volume_id.clone();
            // This node's paths only: the attachment is the controller's (unpublish).
            let done = tokio::task::spawn_blocking(move || agent.detach_local(&v, false))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            done.map_err(|e| host_error(&format!("detaching volume {}", r.volume_id), e))?;
        }
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("target_path", &r.target_path)?;
        required("staging_target_path", &r.staging_target_path)?;
        let cap = capability(r.volume_capability.as_ref())?;
        let _busy = self.start(&r.volume_id)?;
        let target = &r.target_path;
        if mounted(target) {
            return Ok(Response::new(NodePublishVolumeResponse {}));
        }
        let source = match mount_cap(cap) {
            Some(_) => {
                if !mounted(&r.staging_target_path) {
                    return Err(Status::failed_precondition(format!(
                        "volume {} is not staged at {}: stage it first",
                        r.volume_id, r.staging_target_path
                    )));
                }
                std::fs::create_dir_all(target)
                    .map_err(|e| Status::internal(format!("creating {target}: {e}")))?;
                r.staging_target_path.clone()
            }
            None => {
                let (device, _) = self.device(&r.volume_id).await?;
                if let Some(parent) = std::path::Path::new(target).parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Status::internal(format!("creating {}: {e}", parent.display()))
                    })?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(target)
                    .map_err(|e| Status::internal(format!("creating {target}: {e}")))?;
                device
            }
        };
        run("mount", &["--bind", &source, target]).await?;
        if r.readonly {
            run("mount", &["-o", "remount,bind,ro", target]).await?;
        }
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("target_path", &r.target_path)?;
        let _busy = self.start(&r.volume_id)?;
        unmount(&r.target_path).await?;
        // The target the kubelet made (a directory, or a file for raw block) goes too.
        match std::fs::remove_dir(&r.target_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = std::fs::remove_file(&r.target_path);
            }
        }
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("volume_path", &r.volume_path)?;
        let meta = std::fs::metadata(&r.volume_path).map_err(|_| {
            Status::not_found(format!("volume path {} does not exist", r.volume_path))
        })?;
        let (_, condition) = self.device(&r.volume_id).await?;
        let unit = |u: volume_usage::Unit, [total, available, used]: [i64; 3]| VolumeUsage {
            available,
            total,
            used,
            unit: u as i32,
        };
        let usage = if meta.is_dir() {
            let out = run("stat", &["-f", "-c", "%S %b %a %f %c %d", &r.volume_path]).await?;
            let (bytes, inodes) = parse_statfs(&out)
                .ok_or_else(|| Status::internal(format!("stat -f {}: {out:?}", r.volume_path)))?;
            vec![
                unit(volume_usage::Unit::Bytes, bytes),
                unit(volume_usage::Unit::Inodes, inodes),
            ]
        } else {
            let size: i64 = run("blockdev", &["--getsize64", &r.volume_path])
                .await?
                .trim()
                .parse()
                .map_err(|e| Status::internal(format!("blockdev --getsize64: {e}")))?;
            vec![VolumeUsage {
                total: size,
                unit: volume_usage::Unit::Bytes as i32,
                ..Default::default()
            }]
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(VolumeCondition {
                abnormal: condition.is_some(),
                message: condition.unwrap_or_else(|| "every path up".into()),
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("volume_path", &r.volume_path)?;
        let _busy = self.start(&r.volume_id)?;
        let (device, _) = self.device(&r.volume_id).await?;
        // iSCSI disks and their map learn the new size on a rescan; NVMe namespaces on the
        // target's event.
        if device.contains("dm-uuid-mpath-") || device.starts_with("/dev/mapper/") {
            run("iscsiadm", &["-m", "session", "-R"]).await?;
            let dm = std::fs::canonicalize(&device)
                .map_err(|e| Status::internal(format!("{device}: {e}")))?;
            let name = std::fs::read_to_string(format!(
                "/sys/block/{}/dm/name",
                dm.file_name().unwrap_or_default().to_string_lossy()
            ))
            .unwrap_or_default();
            run("multipathd", &["resize", "map", name.trim()]).await?;
        } else {
            // The controllers read the namespace's new size again.
            for c in std::fs::read_dir("/sys/class/nvme")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::write(c.path().join("rescan_controller"), "1");
            }
        }
        // The kernel learns the new size within moments.
        let want = r
            .capacity_range
            .as_ref()
            .map_or(0, |c| c.required_bytes.max(0));
        let mut size = 0i64;
        for _ in 0..100 {
            size = run("blockdev", &["--getsize64", &device])
                .await?
                .trim()
                .parse()
                .map_err(|e| Status::internal(format!("blockdev --getsize64: {e}")))?;
            if size >= want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if size < want {
            return Err(Status::unavailable(format!(
                "{device} is {size} bytes after a rescan, not the {want} asked for; retry"
            )));
        }
        // A file system to grow: mount access (a directory; a raw block target is a file).
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let block = matches!(
            r.volume_capability
                .as_ref()
                .and_then(|c| c.access_type.as_ref()),
            Some(AccessType::Block(_))
        );
        let dir = std::fs::metadata(&r.volume_path).is_ok_and(|m| m.is_dir());
        if !block && dir && mount_of(&info, &r.volume_path).is_some() {
            let fs = fs_type(&device).await?.unwrap_or_default();
            grow(&fs, &device, &r.volume_path).await?;
        }
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: size,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [
            Rpc::StageUnstageVolume,
            Rpc::GetVolumeStats,
            Rpc::ExpandVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
        ]
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
