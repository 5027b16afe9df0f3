//! The Kubernetes CSI driver (CSI specification v1.12): the Identity and Controller services
//! over the cluster's REST API (volumes, attachments, snapshots, expansion, QoS), served on a
//! Unix socket, and the Node service (staging through the host agent's library).
//!
//! Names: a CSI volume's name becomes the volume's name when it is a valid one (1-64 of
//! `A-Z a-z 0-9 - _ .`), else `csi-` and a UUID derived from it ([`names`]), so a retried
//! CreateVolume finds the volume it made. A volume's CSI id is its UUID; a snapshot's is
//! `<volume id>@<snapshot name>`.
//!
//! Errors ([`status`]): the API's answers map to the gRPC codes the specification names (404
//! NOT_FOUND, 409 ALREADY_EXISTS or FAILED_PRECONDITION, 400 INVALID_ARGUMENT, no answer
//! UNAVAILABLE), and every message says the cause and what to do.

#![forbid(unsafe_code)]

pub mod controller;
pub mod identity;
pub mod mounts;
pub mod names;
pub mod node;
pub mod requests;
pub mod status;

/// The CSI protocol's generated types and services.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

/// The driver's name (the CSIDriver object's and StorageClasses' `provisioner`).
pub const DRIVER_NAME: &str = "csi.alcubierre.io";

/// The topology key every node of the cluster is in (volumes are reachable from every host that
/// reaches the cluster's portals).
pub const TOPOLOGY_KEY: &str = "topology.csi.alcubierre.io/cluster";
