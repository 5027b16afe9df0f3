//! The Controller service over the cluster's REST API.
//!
//! - CreateVolume: idempotent by name (the same name and a compatible size return the volume;
//!   another size is ALREADY_EXISTS); the size is the request's, rounded up to 1 MiB (1 GiB
//!   when none is asked for); parameters `qos` (a QoS policy's name) and `protocol` (`nvme-tcp`
//!   or `iscsi`, handed to the node in the volume context); from a snapshot (a clone) or from a
//!   volume (a snapshot of it is taken, then cloned).
//! - ControllerPublish/Unpublish: the attachment of the node's host (the node plugin registers
//!   the host with its NQN and IQN); unpublishing a node whose agent is lost fences it (its
//!   access and its reservations go at once), so a stale attachment never blocks the volume.
//! - Snapshots: a CSI snapshot id is `<volume id>@<snapshot name>`.
//! - ControllerModifyVolume: the mutable parameter `qos` (a VolumeAttributesClass).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alcubierre_api::v1;
use alcubierre_host::endpoints::Api;
use tonic::{Code, Request, Response, Status};

use crate::names::{cluster_name, parse_snapshot_id, snapshot_id};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::rpc::Type as Rpc;
use crate::proto::*;
use crate::requests::{
    caps, context, csi_snapshot, csi_volume, fits, mutable_qos, page, published_elsewhere,
    required, single_node, size_for, start_at, unsupported, SIZE_UNIT,
};
use crate::status::{api, invalid};

/// The Controller service.
pub struct ControllerService {
    client: Arc<Api>,
}

impl ControllerService {
    /// The service asking `client`.
    pub fn new(client: Arc<Api>) -> Self {
        Self { client }
    }
}

impl ControllerService {
    async fn volume(&self, id: &str) -> Result<v1::Volume, Status> {
        let id2 = id.to_string();
        api(&self.client, &format!("volume {id}"), move |c| {
            c.volume(&id2)
        })
        .await
    }

    /// Waits for snapshot `name` of volume `id` to be ready (a clone needs it ready).
    async fn ready_snapshot(&self, id: &str, name: &str) -> Result<v1::Snapshot, Status> {
        for _ in 0..600 {
            let (i, n) = (id.to_string(), name.to_string());
            let s = api(&self.client, &format!("snapshot {name}"), move |c| {
                c.snapshot(&i, &n)
            })
            .await?;
            match s.state {
                v1::SnapshotState::Ready => return Ok(s),
                v1::SnapshotState::Failed => {
                    return Err(Status::internal(format!(
                        "snapshot {name} of volume {id} failed: {}",
                        s.error.unwrap_or_default()
                    )))
                }
                v1::SnapshotState::Creating => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(Status::deadline_exceeded(format!(
            "snapshot {name} of volume {id} is not ready after 60 s; the request will be retried"
        )))
    }

    /// The source of a new volume: a snapshot (`<volume>@<name>`), or a volume (snapshot it).
    async fn source(
        &self,
        name: &str,
        src: Option<&VolumeContentSource>,
    ) -> Result<Option<v1::VolumeSource>, Status> {
        use volume_content_source::Type;
        match src.and_then(|s| s.r#type.as_ref()) {
            None => Ok(None),
            Some(Type::Snapshot(s)) => {
                let (vol, snap) = parse_snapshot_id(&s.snapshot_id).ok_or_else(|| {
                    Status::not_found(format!(
                        "snapshot {:?} does not exist (not an id this driver gave)",
                        s.snapshot_id
                    ))
                })?;
                let s = self.ready_snapshot(vol, snap).await?;
                Ok(Some(v1::VolumeSource {
                    volume: s.volume,
                    snapshot: s.name,
                }))
            }
            Some(Type::Volume(v)) => {
                let src = self.volume(&v.volume_id).await?;
                // The clone's own snapshot of its source, named after the clone.
                let snap = clone_snapshot(name);
                let (id, s2) = (src.id.clone(), snap.clone());
                let made = api(
                    &self.client,
                    "snapshotting the source volume",
                    move |c| match c.create_snapshot(&id, &s2) {
                        Err(e) if e.status == Some(409) => c.snapshot(&id, &s2),
                        r => r,
                    },
                )
                .await?;
                let s = self.ready_snapshot(&made.volume, &made.name).await?;
                Ok(Some(v1::VolumeSource {
                    volume: s.volume,
                    snapshot: s.name,
                }))
            }
        }
    }

    /// Deletes the snapshot a clone of a volume was made from, once the clone exists (a clone
    /// is an independent image; the snapshot would only hold space and keep its source from
    /// being deleted). A failure is logged: the snapshot is listed, and deleted by hand.
    async fn forget_clone_snapshot(&self, name: &str, src: Option<&VolumeContentSource>) {
        let Some(volume_content_source::Type::Volume(v)) = src.and_then(|s| s.r#type.as_ref())
        else {
            return;
        };
        let (id, snap) = (v.volume_id.clone(), clone_snapshot(name));
        let what = format!("deleting the clone's snapshot {snap} of volume {id}");
        let r = api(&self.client, &what, move |c| {
            match c.delete_snapshot(&id, &snap) {
                Err(e) if e.is_not_found() => Ok(()),
                r => r.map(|_| ()),
            }
        })
        .await;
        if let Err(e) = r {
            tracing::warn!("{}", e.message());
        }
    }

    /// Every snapshot of the cluster.
    async fn all_snapshots(&self) -> Result<Vec<v1::Snapshot>, Status> {
        api(&self.client, "listing snapshots", |c| {
            let mut out = Vec::new();
            for v in c.volumes()? {
                match c.snapshots(&v.id) {
                    Ok(s) => out.extend(s),
                    // Deleted meanwhile.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        r: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let r = r.into_inner();
        required("name", &r.name)?;
        if let Some(why) = unsupported(&r.volume_capabilities) {
            return Err(invalid("volume_capabilities", why));
        }
        let size = size_for(r.capacity_range.as_ref())?;
        let (ctx, mut qos) = context(&r.parameters)?;
        if let Some(q) = mutable_qos(&r.mutable_parameters)? {
            qos = Some(q);
        }
        let name = cluster_name(&r.name);
        // Idempotent: the volume of this name, when its size fits.
        let n2 = name.clone();
        let existing = api(&self.client, "looking the volume up", move |c| {
            match c.volume(&n2) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        if let Some(v) = existing {
            if !fits(v.size, r.capacity_range.as_ref()) {
                return Err(Status::already_exists(format!(
                    "volume {:?} exists with {} bytes, outside the capacity range asked for; \
                     use another name or the same range",
                    r.name, v.size
                )));
            }
            if !same_source(v.source.as_ref(), r.volume_content_source.as_ref()) {
                return Err(Status::already_exists(format!(
                    "volume {:?} exists made from {:?}, not from the content source asked for; \
                     use another name",
                    r.name, v.source
                )));
            }
            self.forget_clone_snapshot(&name, r.volume_content_source.as_ref())
                .await;
            let mut vol = csi_volume(&v, ctx);
            vol.content_source = r.volume_content_source;
            return Ok(Response::new(CreateVolumeResponse { volume: Some(vol) }));
        }
        let source = self.source(&name, r.volume_content_source.as_ref()).await?;
        let req = v1::CreateVolume {
            name: name.clone(),
            size,
            block_size: None,
            qos,
            hosts: Vec::new(),
            source,
        };
        let v = api(&self.client, &format!("creating volume {name}"), move |c| {
            c.create_volume(&req)
        })
        .await
        .map_err(|e| match e.code() {
            // The licence's capacity or the nodes' space.
            Code::FailedPrecondition if e.message().contains("capacity") => {
                Status::resource_exhausted(e.message().to_string())
            }
            _ => e,
        })?;
        self.forget_clone_snapshot(&name, r.volume_content_source.as_ref())
            .await;
        let mut vol = csi_volume(&v, ctx);
        vol.content_source = r.volume_content_source;
        Ok(Response::new(CreateVolumeResponse { volume: Some(vol) }))
    }

    async fn delete_volume(
        &self,
        r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = r.into_inner().volume_id;
        required("volume_id", &id)?;
        api(&self.client, &format!("deleting volume {id}"), move |c| {
            // The backend image goes with its snapshots: a volume with VolumeSnapshots is kept
            // until they are deleted (the specification's FAILED_PRECONDITION).
            match c.snapshots(&id) {
                Ok(snaps) if !snaps.is_empty() => {
                    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
                    return Ok(Err(Status::failed_precondition(format!(
                        "volume {id} has {} snapshot(s) ({}), which go with it: delete its \
                         VolumeSnapshots first",
                        names.len(),
                        names.join(", ")
                    ))));
                }
                Err(e) if e.is_not_found() => return Ok(Ok(())),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            match c.delete_volume(&id) {
                Err(e) if e.is_not_found() => Ok(Ok(())),
                r => r.map(|_| Ok(())),
            }
        })
        .await??;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        required("node_id", &r.node_id)?;
        let cap = r
            .volume_capability
            .ok_or_else(|| invalid("volume_capability", "required"))?;
        if let Some(why) = unsupported(std::slice::from_ref(&cap)) {
            return Err(invalid("volume_capability", why));
        }
        let v = self.volume(&r.volume_id).await?;
        let (id, node) = (v.id.clone(), r.node_id.clone());
        let others: Vec<String> = v.hosts.iter().filter(|h| **h != node).cloned().collect();
        let single = single_node(&cap);
        let name = v.name.clone();
        // The node plugin registered its host (NQN, IQN) when it started.
        api(
            &self.client,
            &format!("publishing volume {} to node {}", v.name, r.node_id),
            move |c| {
                c.host(&node)?;
                if single {
                    if let Some(other) = others.first() {
                        return Ok(Err(published_elsewhere(&name, other, c.host(other).ok())));
                    }
                }
                c.attach(&id, &node, &v1::AttachRequest::default()).map(Ok)
            },
        )
        .await??;
        let ctx = HashMap::from([("volume_name".to_string(), v.name)]);
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context: ctx,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        let (id, node) = (r.volume_id.clone(), r.node_id.clone());
        api(
            &self.client,
            &format!("unpublishing volume {id}"),
            move |c| {
                let nodes: Vec<String> = if node.is_empty() {
                    match c.volume(&id) {
                        Ok(v) => v.hosts,
                        Err(e) if e.is_not_found() => return Ok(Ok(())),
                        Err(e) => return Err(e),
                    }
                } else {
                    vec![node.clone()]
                };
                for n in nodes {
                    // A node whose agent stopped reporting is fenced: its access and its
                    // reservations go now, so the volume can be staged elsewhere at once.
                    let lost = match c.host(&n) {
                        Ok(h) => h.liveness.is_some_and(|l| !l.alive),
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e),
                    };
                    match c.detach(&id, &n, lost) {
                        // The fence waits for the volume's primary: not done until it is, so
                        // the attacher retries and no other node is published meanwhile.
                        Ok(d) if d.fence == Some(v1::FenceState::Pending) => {
                            return Ok(Err(Status::unavailable(format!(
                                "node {n} is fenced off volume {id} once its primary serves it \
                                 again (pending); retrying"
                            ))))
                        }
                        Ok(d) if d.fence == Some(v1::FenceState::Done) => tracing::info!(
                            "fenced node {n} off volume {id}: its agent stopped reporting; its \
                             access and reservations are gone"
                        ),
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Ok(()))
            },
        )
        .await??;
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        if r.volume_capabilities.is_empty() {
            return Err(invalid("volume_capabilities", "none given"));
        }
        self.volume(&r.volume_id).await?;
        Ok(Response::new(match unsupported(&r.volume_capabilities) {
            Some(why) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: why,
            },
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                }),
                message: String::new(),
            },
        }))
    }

    async fn list_volumes(
        &self,
        r: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = r.into_inner();
        let start = start_at(&r.starting_token)?;
        let mut all = api(&self.client, "listing volumes", |c| c.volumes()).await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let (items, next_token) = page(all, start, r.max_entries)?;
        let entries = items
            .into_iter()
            .map(|v| list_volumes_response::Entry {
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: v.hosts.clone(),
                    volume_condition: None,
                }),
                volume: Some(csi_volume(&v, HashMap::new())),
            })
            .collect();
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        r: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let r = r.into_inner();
        if !r.volume_capabilities.is_empty() && unsupported(&r.volume_capabilities).is_some() {
            return Ok(Response::new(GetCapacityResponse::default()));
        }
        let s = api(&self.client, "reading the cluster's capacity", |c| {
            c.status()
        })
        .await?;
        let left = s.capacity_bytes.saturating_sub(s.provisioned_bytes);
        let free = s.backend_free_bytes.map_or(left, |b| b.min(left));
        Ok(Response::new(GetCapacityResponse {
            available_capacity: free.min(i64::MAX as u64) as i64,
            maximum_volume_size: Some(free.min(i64::MAX as u64) as i64),
            minimum_volume_size: Some(SIZE_UNIT as i64),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: caps(&[
                Rpc::CreateDeleteVolume,
                Rpc::PublishUnpublishVolume,
                Rpc::ListVolumes,
                Rpc::GetCapacity,
                Rpc::CreateDeleteSnapshot,
                Rpc::ListSnapshots,
                Rpc::CloneVolume,
                Rpc::ExpandVolume,
                Rpc::ListVolumesPublishedNodes,
                Rpc::GetVolume,
                Rpc::SingleNodeMultiWriter,
                Rpc::ModifyVolume,
            ]),
        }))
    }

    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let r = r.into_inner();
        required("name", &r.name)?;
        required("source_volume_id", &r.source_volume_id)?;
        let name = cluster_name(&r.name);
        // A snapshot name is unique across the cluster's volumes for CSI.
        if let Some(s) = self
            .all_snapshots()
            .await?
            .into_iter()
            .find(|s| s.name == name)
        {
            if s.volume != r.source_volume_id {
                return Err(Status::already_exists(format!(
                    "snapshot {:?} exists of another volume ({}); use another name",
                    r.name, s.volume
                )));
            }
            return Ok(Response::new(CreateSnapshotResponse {
                snapshot: Some(csi_snapshot(&s)),
            }));
        }
        let (id, n) = (r.source_volume_id.clone(), name.clone());
        let s = api(
            &self.client,
            &format!("snapshotting volume {}", r.source_volume_id),
            move |c| c.create_snapshot(&id, &n),
        )
        .await?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(&s)),
        }))
    }

    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = r.into_inner().snapshot_id;
        required("snapshot_id", &id)?;
        // An id this driver never gave names no snapshot: deleting it is done.
        if let Some((vol, snap)) = parse_snapshot_id(&id) {
            let (vol, snap) = (vol.to_string(), snap.to_string());
            api(&self.client, &format!("deleting snapshot {id}"), move |c| {
                // A snapshot still being taken is deleted once it is taken (or failed).
                for _ in 0..600 {
                    match c.delete_snapshot(&vol, &snap) {
                        Err(e) if e.is_not_found() => return Ok(()),
                        Err(e) if e.status == Some(409) && e.message.contains("being taken") => {
                            std::thread::sleep(Duration::from_millis(100))
                        }
                        r => return r.map(|_| ()),
                    }
                }
                c.delete_snapshot(&vol, &snap).map(|_| ())
            })
            .await?;
        }
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let r = r.into_inner();
        let start = start_at(&r.starting_token)?;
        let mut all = self.all_snapshots().await?;
        if !r.snapshot_id.is_empty() {
            all.retain(|s| snapshot_id(&s.volume, &s.name) == r.snapshot_id);
        }
        if !r.source_volume_id.is_empty() {
            all.retain(|s| s.volume == r.source_volume_id);
        }
        all.sort_by(|a, b| (&a.volume, &a.name).cmp(&(&b.volume, &b.name)));
        let (items, next_token) = page(all, start, r.max_entries)?;
        Ok(Response::new(ListSnapshotsResponse {
            entries: items
                .iter()
                .map(|s| list_snapshots_response::Entry {
                    snapshot: Some(csi_snapshot(s)),
                })
                .collect(),
            next_token,
        }))
    }

    async fn get_snapshot(
        &self,
        r: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let id = r.into_inner().snapshot_id;
        required("snapshot_id", &id)?;
        let (vol, snap) = parse_snapshot_id(&id)
            .ok_or_else(|| Status::not_found(format!("snapshot {id:?} does not exist")))?;
        let (vol, snap) = (vol.to_string(), snap.to_string());
        let s = api(&self.client, &format!("snapshot {id}"), move |c| {
            c.snapshot(&vol, &snap)
        })
        .await?;
        Ok(Response::new(GetSnapshotResponse {
            snapshot: Some(csi_snapshot(&s)),
        }))
    }

    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        let range = r
            .capacity_range
            .as_ref()
            .ok_or_else(|| invalid("capacity_range", "required"))?;
        let size = size_for(Some(range))?;
        let v = self.volume(&r.volume_id).await?;
        let v = if v.size >= size {
            v
        } else {
            let id = v.id.clone();
            api(
                &self.client,
                &format!("growing volume {}", v.name),
                move |c| c.resize_volume(&id, size),
            )
            .await?
        };
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: v.size as i64,
            // The node rescans its paths (iSCSI) and controllers (NVMe) so the device shows the
            // new size, raw block too, and grows a file system.
            node_expansion_required: true,
        }))
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let id = r.into_inner().volume_id;
        required("volume_id", &id)?;
        let v = self.volume(&id).await?;
        let degraded = v.in_sync.len() < v.replicas.len();
        Ok(Response::new(ControllerGetVolumeResponse {
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: v.hosts.clone(),
                volume_condition: Some(VolumeCondition {
                    abnormal: degraded,
                    message: if degraded {
                        format!(
                            "{} of {} replicas in sync (a rebuild is under way or a node is down)",
                            v.in_sync.len(),
                            v.replicas.len()
                        )
                    } else {
                        "every replica in sync".into()
                    },
                }),
            }),
            volume: Some(csi_volume(&v, HashMap::new())),
        }))
    }

    async fn controller_modify_volume(
        &self,
        r: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let r = r.into_inner();
        required("volume_id", &r.volume_id)?;
        let qos = mutable_qos(&r.mutable_parameters)?;
        let v = self.volume(&r.volume_id).await?;
        if let Some(q) = qos {
            let id = v.id.clone();
            api(
                &self.client,
                &format!("setting volume {}'s QoS", v.name),
                move |c| c.set_volume_qos(&id, (!q.is_empty()).then_some(q.as_str())),
            )
            .await?;
        }
        Ok(Response::new(ControllerModifyVolumeResponse {}))
    }
}

/// The name of the snapshot volume `name` is cloned through when made from a volume.
fn clone_snapshot(name: &str) -> String {
    cluster_name(&format!("clone-{name}"))
}

/// Whether existing volume's `have` source is the content source `want` asks for.
fn same_source(have: Option<&v1::VolumeSource>, want: Option<&VolumeContentSource>) -> bool {
    use volume_content_source::Type;
    match (have, want.and_then(|w| w.r#type.as_ref())) {
        (_, None) => have.is_none(),
        (Some(h), Some(Type::Snapshot(s))) => {
            parse_snapshot_id(&s.snapshot_id) == Some((h.volume.as_str(), h.snapshot.as_str()))
        }
        (Some(h), Some(Type::Volume(v))) => h.volume == v.volume_id,
        (None, Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_create_matches_the_content_source_it_was_made_from() {
        use volume_content_source::{SnapshotSource, Type, VolumeSource};
        let snap = |id: &str| VolumeContentSource {
            r#type: Some(Type::Snapshot(SnapshotSource {
                snapshot_id: id.into(),
            })),
        };
        let vol = |id: &str| VolumeContentSource {
            r#type: Some(Type::Volume(VolumeSource {
                volume_id: id.into(),
            })),
        };
        let made = v1::VolumeSource {
            volume: "v1".into(),
            snapshot: "s1".into(),
        };
        assert!(same_source(None, None));
        assert!(!same_source(Some(&made), None));
        assert!(!same_source(None, Some(&snap("v1@s1"))));
        assert!(same_source(Some(&made), Some(&snap("v1@s1"))));
        assert!(!same_source(Some(&made), Some(&snap("v1@s2"))));
        assert!(same_source(Some(&made), Some(&vol("v1"))));
        assert!(!same_source(Some(&made), Some(&vol("v2"))));
    }
}
