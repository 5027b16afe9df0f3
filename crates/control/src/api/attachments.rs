//! Connection info and attachments: how hosts reach a volume. An attachment is a host on the
//! volume's access list; attaching returns everything an initiator needs (every replica node's
//! portals with their access states, and the cluster's multipath defaults), as Cinder's
//! driver, the host agent and the CSI driver read it.

use alcubierre_api::v1 as api;
use alcubierre_types::VolumeId;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::{authorize, err, ApiError, ApiResult, ApiState, Body, Params};
use crate::attachments::Fence;
use crate::cluster;
use crate::model::{Activation, Node, Service};
use crate::registry;
use crate::volumes::{self, Host, Volume};

/// The access state of node `n`'s paths to `v`, as the agents set them: the primary's are
/// optimized, the other replicas' forward to it; a node whose heartbeat is lost, or that is
/// not active, cannot serve.
fn path_state(v: &Volume, n: &Node, service: Option<Service>) -> api::PathState {
    let up = n.activation == Activation::Active && service == Some(Service::Available);
    match (up, n.name == v.primary) {
        (false, _) => api::PathState::Inaccessible,
        (true, true) => api::PathState::Optimized,
        (true, false) => api::PathState::NonOptimized,
    }
}

/// Splits `ip:port` (IPv6 in brackets) into the address hosts connect to and the port; `None`
/// for a wildcard (a node listening on every address with nothing advertised: hosts cannot be
/// told where to connect, and its discovery service answers each with the address it used).
fn address(portal: &str) -> Option<(String, u16)> {
    let a: std::net::SocketAddr = portal.parse().ok()?;
    if a.ip().is_unspecified() {
        return None;
    }
    Some((a.ip().to_string(), a.port()))
}

/// How hosts reach `v`; `host` gives the CHAP user (iSCSI) when it has one.
pub(super) async fn connection(
    s: &ApiState,
    v: &Volume,
    host: Option<&Host>,
) -> Result<api::ConnectionInfo, ApiError> {
    let id: VolumeId = v.id.parse().map(VolumeId).map_err(|_| {
        err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("volume record {} has no valid UUID", v.id),
            None,
        )
    })?;
    let nodes = registry::nodes(&*s.store).await?;
    let services = registry::service_states(&*s.store).await?;
    let multipath = cluster::load(&*s.store).await?.multipath;
    // The primary's first, as discovery lists them.
    let order = std::iter::once(&v.primary).chain(v.replicas.iter().filter(|r| **r != v.primary));
    let (mut nvme, mut iscsi) = (Vec::new(), Vec::new());
    for name in order {
        let Some((n, _)) = nodes.get(name.as_str()) else {
            continue;
        };
        let state = path_state(v, n, services.get(name.as_str()).copied());
        for p in &n.portals {
            let Some((address, port)) = address(p) else {
                continue;
            };
            nvme.push(api::NvmePortal {
                node: n.name.clone(),
                address,
                port,
                transport: "tcp".into(),
                ana_group: n.nvme.map(|i| i.ana_group),
                state,
            });
        }
        for p in &n.iscsi_portals {
            let Some((hostport, tag)) = p.rsplit_once(',') else {
                continue;
            };
            let (Some((address, port)), Ok(tag)) = (address(hostport), tag.parse()) else {
                continue;
            };
            iscsi.push(api::IscsiPortal {
                node: n.name.clone(),
                address,
                port,
                portal_group_tag: tag,
                state,
            });
        }
    }
    Ok(api::ConnectionInfo {
        volume: v.id.clone(),
        name: v.name.clone(),
        size: v.size,
        block_size: v.block_size,
        nvme: api::NvmeConnection {
            subsystem_nqn: id.nqn(),
            namespace_id: 1,
            nguid: id.nguid(),
            uuid: id.to_string(),
            portals: nvme,
            multipath: multipath.nvme_tcp,
        },
        iscsi: (!iscsi.is_empty()).then(|| api::IscsiConnection {
            target_iqn: id.iqn(),
            lun: 0,
            portals: iscsi,
            chap_user: host.and_then(|h| h.chap.as_ref().map(|c| c.0.clone())),
            multipath: multipath.iscsi,
        }),
    })
}

/// `GET /api/v1/volumes/{id}/connection`.
pub(super) async fn get_connection(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<api::ConnectionInfo> {
    authorize(&s, &h)?;
    let (v, _) = volumes::find(&*s.store, &id).await?;
    Ok(Json(connection(&s, &v, None).await?))
}

/// The host `name` with the initiator names `r` gives: created when it does not exist (it needs
/// one of them), its names updated when they changed (its CHAP credentials stay).
async fn register(s: &ApiState, name: &str, r: &api::AttachRequest) -> Result<Host, ApiError> {
    let found = volumes::host(&*s.store, name).await?;
    let wanted = match found.clone() {
        None if r.nqn.is_none() && r.iqn.is_none() => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!(
                    "no host named {name:?}: give its nqn or iqn to create it, or create it \
                     with PUT /api/v1/hosts/{name}"
                ),
                Some("host"),
            ))
        }
        None => Host {
            name: name.to_string(),
            nqn: r.nqn.clone(),
            iqn: r.iqn.clone(),
            nvme_hostid: r.nvme_hostid.as_ref().map(|id| id.to_ascii_lowercase()),
            chap: None,
            target_chap: None,
        },
        Some(mut h) => {
            h.nqn = r.nqn.clone().or(h.nqn);
            h.iqn = r.iqn.clone().or(h.iqn);
            h.nvme_hostid = r
                .nvme_hostid
                .as_ref()
                .map(|id| id.to_ascii_lowercase())
                .or(h.nvme_hostid);
            h
        }
    };
    if found.as_ref() != Some(&wanted) {
        volumes::put_host(&*s.store, &wanted).await?;
    }
    Ok(wanted)
}

/// `PUT /api/v1/volumes/{id}/attachments/{host}`.
pub(super) async fn attach(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path((id, host)): Path<(String, String)>,
    Body(r): Body<api::AttachRequest>,
) -> ApiResult<api::Attachment> {
    authorize(&s, &h)?;
    // The volume first: attaching to a volume that does not exist registers nothing.
    volumes::find(&*s.store, &id).await?;
    let record = register(&s, &host, &r).await?;
    let (v, added) = crate::attachments::attach_host(&*s.store, &id, &host).await?;
    if added {
        tracing::info!(volume = %v.name, host = %host, "attached");
    }
    Ok(Json(api::Attachment {
        volume: v.id.clone(),
        volume_name: v.name.clone(),
        host: host.clone(),
        nqn: record.nqn.clone(),
        iqn: record.iqn.clone(),
        connection: connection(&s, &v, Some(&record)).await?,
    }))
}

/// The query of a detach.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DetachQuery {
    #[serde(default)]
    force: bool,
}

/// How long a force detach waits for the volume's primary to remove the host's registrations.
const FENCE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `DELETE /api/v1/volumes/{id}/attachments/{host}[?force=true]`.
pub(super) async fn detach(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path((id, host)): Path<(String, String)>,
    Params(q): Params<DetachQuery>,
) -> ApiResult<api::Detached> {
    authorize(&s, &h)?;
    // A host to fence must be known: its record names what it registered with.
    let record = match q.force {
        true => Some(volumes::host(&*s.store, &host).await?.ok_or_else(|| {
            err(
                StatusCode::NOT_FOUND,
                format!("no host named {host:?} to fence"),
                Some("host"),
            )
        })?),
        false => None,
    };
    Ok(Json(
        detach_and_fence(&s, &id, &host, record.as_ref()).await?,
    ))
}

/// Takes `host` off volume `id`'s access list and, with its `record`, fences it: asks the
/// volume's primary to remove its registrations and waits [`FENCE_WAIT`] for it.
pub(super) async fn detach_and_fence(
    s: &ApiState,
    id: &str,
    host: &str,
    record: Option<&Host>,
) -> Result<api::Detached, ApiError> {
    let (v, removed) = crate::attachments::detach_host(&*s.store, id, host).await?;
    if removed {
        tracing::info!(volume = %v.name, host = %host, force = record.is_some(), "detached");
    }
    let fence = match record {
        None => None,
        Some(record) => {
            // After the access list: the host has no path left when its registrations go.
            let f = Fence::of(&v.id, record);
            crate::attachments::request_fence(&*s.store, &f).await?;
            let done = crate::attachments::await_fence(&*s.store, &f.key(), FENCE_WAIT).await?;
            tracing::info!(volume = %v.name, host = %host, done, "fencing the host's reservations");
            Some(match done {
                true => api::FenceState::Done,
                false => api::FenceState::Pending,
            })
        }
    };
    Ok(api::Detached {
        volume: v.id,
        host: host.to_string(),
        was_attached: removed,
        fence,
    })
}

/// `GET /api/v1/volumes/{id}/attachments`.
pub(super) async fn list_for_volume(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Vec<api::AttachmentRef>> {
    authorize(&s, &h)?;
    let (v, _) = volumes::find(&*s.store, &id).await?;
    Ok(Json(
        v.hosts
            .iter()
            .map(|host| api::AttachmentRef {
                volume: v.id.clone(),
                volume_name: v.name.clone(),
                host: host.clone(),
            })
            .collect(),
    ))
}

/// `GET /api/v1/hosts/{name}/attachments`.
pub(super) async fn list_for_host(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Vec<api::AttachmentRef>> {
    authorize(&s, &h)?;
    if volumes::host(&*s.store, &name).await?.is_none() {
        return Err(err(
            StatusCode::NOT_FOUND,
            format!("no host named {name:?}"),
            None,
        ));
    }
    Ok(Json(
        volumes::list(&*s.store)
            .await?
            .into_values()
            .filter(|v| v.hosts.contains(&name))
            .map(|v| api::AttachmentRef {
                volume: v.id,
                volume_name: v.name,
                host: name.clone(),
            })
            .collect(),
    ))
}
