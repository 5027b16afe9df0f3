//! The operations of `/api/v1`, declared for the OpenAPI document: each function stands for
//! one route the control plane serves (`alcubierre_control::api::router`; a test there keeps
//! the two the same). Generated from one table; edit the declarations, then regenerate the
//! checked-in document (`ALCUBIERRE_BLESS=1 cargo test -p alcubierre-api`).
#![allow(dead_code)]

use super::*;

#[utoipa::path(
    get,
    path = "/api/v1/cluster/config",
    operation_id = "get_config",
    summary = "The cluster configuration",
    responses(
        (status = 200, description = "The configuration", body = ClusterConfig),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn get_config() {}

#[utoipa::path(
    put,
    path = "/api/v1/cluster/config",
    operation_id = "put_config",
    summary = "Validate and save the cluster configuration (a backend is saved only after its connectivity test passes)",
    request_body = ClusterConfig,
    responses(
        (status = 200, description = "Saved", body = ClusterConfig),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn put_config() {}

#[utoipa::path(
    patch,
    path = "/api/v1/cluster/config",
    operation_id = "patch_config",
    summary = "Change the fields a partial document names, keep the others (JSON merge patch, RFC 7386; null resets a field to its default); checked and saved as by PUT",
    request_body(content = Object, description = "A partial configuration document (JSON merge patch)", content_type = "application/json"),
    responses(
        (status = 200, description = "Saved", body = ClusterConfig),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error),
        (status = 422, description = "The body does not parse", body = Error)
    )
)]
fn patch_config() {}

#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    operation_id = "list_nodes",
    summary = "Nodes with activation, service and cache states",
    responses(
        (status = 200, description = "The nodes", body = Vec<Node>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_nodes() {}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/activate",
    operation_id = "activate",
    summary = "Activate nodes (the first activation needs 3)",
    request_body = Activate,
    responses(
        (status = 200, description = "Activation started", body = Activating),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn activate() {}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{name}/deactivate",
    operation_id = "deactivate",
    summary = "Deactivate a node",
    params(
        ("name" = String, Path, description = "The node's name")
    ),
    responses(
        (status = 200, description = "Deactivated", body = Node),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn deactivate() {}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{name}/drain",
    operation_id = "drain",
    summary = "Drain a node: no new replicas; the leader moves its replicas away",
    params(
        ("name" = String, Path, description = "The node's name")
    ),
    responses(
        (status = 200, description = "Draining", body = Node),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn drain() {}

#[utoipa::path(
    post,
    path = "/api/v1/nodes/{name}/undrain",
    operation_id = "undrain",
    summary = "Stop draining a node",
    params(
        ("name" = String, Path, description = "The node's name")
    ),
    responses(
        (status = 200, description = "No longer draining", body = Node),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn undrain() {}

#[utoipa::path(
    get,
    path = "/api/v1/status",
    operation_id = "status",
    summary = "The cluster at a glance: leader, node counts, degraded and unavailable volumes, replica failures",
    responses(
        (status = 200, description = "The status", body = Status),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn status() {}

#[utoipa::path(
    get,
    path = "/api/v1/volumes",
    operation_id = "list_volumes",
    summary = "Volumes",
    responses(
        (status = 200, description = "The volumes", body = Vec<Volume>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_volumes() {}

#[utoipa::path(
    post,
    path = "/api/v1/volumes",
    operation_id = "create_volume",
    summary = "Create a volume (3 replicas on distinct active nodes), empty or cloned from a snapshot",
    request_body = CreateVolume,
    responses(
        (status = 201, description = "Created", body = Volume),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error),
        (status = 500, description = "The server failed (the message says why)", body = Error)
    )
)]
fn create_volume() {}

#[utoipa::path(
    get,
    path = "/api/v1/volumes/{id}",
    operation_id = "get_volume",
    summary = "A volume by id or name",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    responses(
        (status = 200, description = "The volume", body = Volume),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn get_volume() {}

#[utoipa::path(
    delete,
    path = "/api/v1/volumes/{id}",
    operation_id = "delete_volume",
    summary = "Delete a volume: its replicas' data and its backend image go",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    responses(
        (status = 200, description = "Deleted; what it was", body = Volume),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn delete_volume() {}

#[utoipa::path(
    post,
    path = "/api/v1/volumes/{id}/resize",
    operation_id = "resize_volume",
    summary = "Grow a volume (online: hosts see the new size)",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    request_body = Resize,
    responses(
        (status = 200, description = "Resized", body = Volume),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn resize_volume() {}

#[utoipa::path(
    put,
    path = "/api/v1/volumes/{id}/hosts",
    operation_id = "set_volume_hosts",
    summary = "Set the hosts allowed to attach the volume (empty: any host); applied to live exports",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    request_body = VolumeHosts,
    responses(
        (status = 200, description = "Set", body = Volume),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn set_volume_hosts() {}

#[utoipa::path(
    put,
    path = "/api/v1/volumes/{id}/qos",
    operation_id = "set_volume_qos",
    summary = "Set or clear the volume's QoS policy; applied to the live export",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    request_body = VolumeQos,
    responses(
        (status = 200, description = "Set", body = Volume),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn set_volume_qos() {}

#[utoipa::path(
    get,
    path = "/api/v1/volumes/{id}/connection",
    operation_id = "get_connection",
    summary = "How hosts reach the volume: every replica node's NVMe/TCP and iSCSI portals with their access states, and the cluster's multipath defaults",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    responses(
        (status = 200, description = "The connection info", body = ConnectionInfo),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn get_connection() {}

#[utoipa::path(
    get,
    path = "/api/v1/volumes/{id}/attachments",
    operation_id = "list_volume_attachments",
    summary = "The hosts attached to the volume",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    responses(
        (status = 200, description = "The attachments", body = Vec<AttachmentRef>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_volume_attachments() {}

#[utoipa::path(
    put,
    path = "/api/v1/volumes/{id}/attachments/{host}",
    operation_id = "attach",
    summary = "Attach a host (idempotent): it joins the volume's access list (an open volume, one that names no hosts, becomes reachable by its attached hosts only), with the initiator names the body gives recorded on the host; returns how to connect",
    params(
        ("id" = String, Path, description = "The volume's id or name"),
        ("host" = String, Path, description = "The host's name")
    ),
    request_body = AttachRequest,
    responses(
        (status = 200, description = "Attached", body = Attachment),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn attach() {}

#[utoipa::path(
    delete,
    path = "/api/v1/volumes/{id}/attachments/{host}",
    operation_id = "detach",
    summary = "Detach a host (idempotent): it leaves the volume's access list, and its connections lose access; with force=true its persistent reservations are removed too (fencing a failed host), and the answer waits for the volume's primary to confirm it",
    params(
        ("id" = String, Path, description = "The volume's id or name"),
        ("host" = String, Path, description = "The host's name"),
        ("force" = Option<bool>, Query, description = "Also remove the host's persistent reservations (fence it)")
    ),
    responses(
        (status = 200, description = "Detached", body = Detached),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn detach() {}

#[utoipa::path(
    get,
    path = "/api/v1/volumes/{id}/snapshots",
    operation_id = "list_snapshots",
    summary = "A volume's snapshots",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    responses(
        (status = 200, description = "The snapshots", body = Vec<Snapshot>),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_snapshots() {}

#[utoipa::path(
    post,
    path = "/api/v1/volumes/{id}/snapshots",
    operation_id = "create_snapshot",
    summary = "Request a snapshot: the volume's primary destages the volume, then snapshots its backend image (poll the snapshot until it is ready)",
    params(
        ("id" = String, Path, description = "The volume's id or name")
    ),
    request_body = SnapshotRequest,
    responses(
        (status = 202, description = "Requested", body = Snapshot),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 415, description = "The body is not JSON", body = Error),
        (status = 422, description = "The body does not parse", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn create_snapshot() {}

#[utoipa::path(
    get,
    path = "/api/v1/volumes/{id}/snapshots/{snapshot}",
    operation_id = "get_snapshot",
    summary = "A snapshot",
    params(
        ("id" = String, Path, description = "The volume's id or name"),
        ("snapshot" = String, Path, description = "The snapshot's name")
    ),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn get_snapshot() {}

#[utoipa::path(
    delete,
    path = "/api/v1/volumes/{id}/snapshots/{snapshot}",
    operation_id = "delete_snapshot",
    summary = "Delete a snapshot (from the backend, then its record); clones do not depend on it",
    params(
        ("id" = String, Path, description = "The volume's id or name"),
        ("snapshot" = String, Path, description = "The snapshot's name")
    ),
    responses(
        (status = 200, description = "Deleted; what it was", body = Snapshot),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 500, description = "The server failed (the message says why)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn delete_snapshot() {}

#[utoipa::path(
    get,
    path = "/api/v1/replication",
    operation_id = "replication",
    summary = "Replication progress of volumes whose replicas are catching up (resync or rebuild)",
    responses(
        (status = 200, description = "The progress", body = Vec<Progress>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn replication() {}

#[utoipa::path(
    get,
    path = "/api/v1/qos",
    operation_id = "list_qos",
    summary = "QoS policies by name",
    responses(
        (status = 200, description = "The policies", body = std::collections::BTreeMap<String, QosPolicy>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_qos() {}

#[utoipa::path(
    put,
    path = "/api/v1/qos/{name}",
    operation_id = "put_qos",
    summary = "Create or replace a QoS policy; volumes naming it take it at once",
    params(
        ("name" = String, Path, description = "The policy's name")
    ),
    request_body = QosPolicy,
    responses(
        (status = 200, description = "Saved", body = QosPolicy),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn put_qos() {}

#[utoipa::path(
    delete,
    path = "/api/v1/qos/{name}",
    operation_id = "delete_qos",
    summary = "Delete a QoS policy (refused, 409, while a volume uses it)",
    params(
        ("name" = String, Path, description = "The policy's name")
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn delete_qos() {}

#[utoipa::path(
    get,
    path = "/api/v1/hosts",
    operation_id = "list_hosts",
    summary = "Hosts (CHAP secrets are not returned)",
    responses(
        (status = 200, description = "The hosts", body = Vec<HostView>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_hosts() {}

#[utoipa::path(
    put,
    path = "/api/v1/hosts/{name}",
    operation_id = "put_host",
    summary = "Create or replace a host",
    params(
        ("name" = String, Path, description = "The host's name")
    ),
    request_body = Host,
    responses(
        (status = 200, description = "Saved", body = HostView),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn put_host() {}

#[utoipa::path(
    delete,
    path = "/api/v1/hosts/{name}",
    operation_id = "delete_host",
    summary = "Delete a host (refused, 409, while a volume uses it)",
    params(
        ("name" = String, Path, description = "The host's name")
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn delete_host() {}

#[utoipa::path(
    get,
    path = "/api/v1/hosts/{name}",
    operation_id = "get_host",
    summary = "A host, with its agent's liveness",
    params(
        ("name" = String, Path, description = "The host's name")
    ),
    responses(
        (status = 200, description = "The host", body = HostView),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn get_host() {}

#[utoipa::path(
    put,
    path = "/api/v1/hosts/{name}/heartbeat",
    operation_id = "host_heartbeat",
    summary = "A host agent's liveness report (the host need not be known yet)",
    params(
        ("name" = String, Path, description = "The host's name")
    ),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Recorded", body = HostLiveness),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn host_heartbeat() {}

#[utoipa::path(
    post,
    path = "/api/v1/hosts/{name}/fence",
    operation_id = "fence_host",
    summary = "Fence a failed host: force-detach it from every volume (its access removed, its reservations preempted); refused (409) while its agent reports, unless force",
    params(
        ("name" = String, Path, description = "The host's name"),
        ("force" = Option<bool>, Query, description = "Fence even though its agent reports it alive")
    ),
    responses(
        (status = 200, description = "Fenced", body = Fenced),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn fence_host() {}

#[utoipa::path(
    get,
    path = "/api/v1/hosts/{name}/attachments",
    operation_id = "list_host_attachments",
    summary = "The volumes a host is attached to",
    params(
        ("name" = String, Path, description = "The host's name")
    ),
    responses(
        (status = 200, description = "The attachments", body = Vec<AttachmentRef>),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn list_host_attachments() {}

#[utoipa::path(
    get,
    path = "/api/v1/plan",
    operation_id = "get_plan",
    summary = "Sizing by the seed's planning rules",
    params(
        ("nodes" = u32, Query, description = "High-performance (cache) nodes"),
        ("usable_tb" = f64, Query, description = "Usable capacity needed, TB"),
        ("cache_disks" = Option<u32>, Query, description = "Cache disks per node (default 1)"),
        ("ceph_replicas" = Option<u32>, Query, description = "Ceph replicas (default 3)")
    ),
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn get_plan() {}

#[utoipa::path(
    get,
    path = "/api/v1/plan/check",
    operation_id = "check_plan",
    summary = "Check the live cluster (active nodes, cache disks, CPU threads, destage rate) against the plan for a capacity",
    params(
        ("usable_tb" = f64, Query, description = "Usable capacity needed, TB"),
        ("ceph_replicas" = Option<u32>, Query, description = "Ceph replicas (default 3)"),
        ("osds" = Option<u32>, Query, description = "Ceph OSDs planned in total")
    ),
    responses(
        (status = 200, description = "The findings", body = Check),
        (status = 400, description = "A request field is wrong (the message names it)", body = Error),
        (status = 401, description = "No token, or a wrong one", body = Error),
        (status = 404, description = "No such object", body = Error),
        (status = 409, description = "It conflicts with the cluster's state (the message says how)", body = Error),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn check_plan() {}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
fn openapi() {}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics (no authentication)",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 503, description = "The metadata store is unreachable", body = Error)
    )
)]
fn metrics() {}

#[utoipa::path(
    get,
    path = "/",
    operation_id = "console",
    summary = "The web console (HTML; it asks for the API token)",
    security(()),
    responses((status = 200, description = "The console page", body = String, content_type = "text/html"))
)]
fn console() {}

/// Every operation, for the document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    get_config,
    put_config,
    patch_config,
    list_nodes,
    activate,
    deactivate,
    drain,
    undrain,
    status,
    list_volumes,
    create_volume,
    get_volume,
    delete_volume,
    resize_volume,
    set_volume_hosts,
    set_volume_qos,
    get_connection,
    list_volume_attachments,
    attach,
    detach,
    list_snapshots,
    create_snapshot,
    get_snapshot,
    delete_snapshot,
    replication,
    list_qos,
    put_qos,
    delete_qos,
    list_hosts,
    put_host,
    delete_host,
    list_host_attachments,
    get_host,
    host_heartbeat,
    fence_host,
    get_plan,
    check_plan,
    openapi,
    metrics,
    console
))]
pub(crate) struct Operations;
