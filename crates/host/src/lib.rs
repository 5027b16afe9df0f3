//! The host agent, `alcubierre-node`: what a compute host runs to consume Alcubierre volumes.
//!
//! It attaches a volume through the API's attachment resource (the host's NVMe host NQN, Host
//! Identifier and iSCSI IQN join the volume's access list) and connects every replica node's
//! portal: over NVMe/TCP one controller per portal under Linux's native NVMe multipath (one
//! namespace head, a path per node, ANA choosing the primary's), over iSCSI one session per
//! portal under dm-multipath with ALUA. It prints the one device path. As a daemon it keeps the
//! desired attachments (a file under its state directory, so a reboot attaches again): it
//! reconnects lost paths, connects the portals of nodes that join a volume's replica set, drops
//! those of nodes that left, and reports the host's liveness to the cluster. `doctor` checks the
//! host.
//!
//! The CSI node plugin uses the same library ([`agent::Agent`]).
//!
//! Layout: [`plan`] is the pure decision (the portals a volume wants against the paths the
//! host has: which to connect, which to drop), with table tests; [`nvme`] and [`iscsi`] read the
//! kernel's state (sysfs, under a root that tests point at a fake tree) and change it (the
//! fabrics device, `iscsiadm`, `multipathd`); [`device`] finds whether a block device is in use;
//! [`state`] is the desired-state file; [`view`] is what the agent reports; [`connection`] reads a volume's connection info for
//! this host; [`endpoints`] is the API at every node's address; [`agent`] puts them together;
//! [`doctor`] checks the host. Nothing here runs in the storage nodes.

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod device;
pub mod doctor;
pub mod endpoints;
pub mod identity;
pub mod iscsi;
pub mod nvme;
pub mod plan;
pub mod state;
pub mod sysfs;
pub mod view;

use std::path::PathBuf;

/// What went wrong, with what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster's API answered with an error, or no endpoint answered.
    #[error("the cluster's API: {0}")]
    Api(#[from] alcubierre_api::client::ClientError),
    /// A file or device could not be read or written.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A command the agent runs (`iscsiadm`, `multipathd`, `multipath`) failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The host lacks something attaching needs (a kernel module, a daemon, an identity).
    #[error("this host is not ready: {0}")]
    Host(String),
    /// A portal does not accept connections.
    #[error("portal {portal} is unreachable: {reason}")]
    Unreachable {
        /// The portal.
        portal: String,
        /// Why.
        reason: String,
    },
    /// The device is mounted or open and the request did not say `--force`.
    #[error("{device} is in use ({by}); stop using it first, or detach with --force")]
    InUse {
        /// The block device.
        device: String,
        /// Who uses it: a mount point, a process, a holder.
        by: String,
    },
    /// No path of the volume came up.
    #[error("no path to volume {volume} came up: {reasons}")]
    NoPath {
        /// The volume.
        volume: String,
        /// Each portal and why it failed.
        reasons: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// The agent's configuration or a request is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How a volume is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// NVMe/TCP with Linux's native NVMe multipath.
    #[serde(rename = "nvme-tcp")]
    NvmeTcp,
    /// iSCSI with dm-multipath.
    #[serde(rename = "iscsi")]
    Iscsi,
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nvme-tcp" | "nvme" => Ok(Self::NvmeTcp),
            "iscsi" => Ok(Self::Iscsi),
            other => Err(Error::Invalid(format!(
                "protocol {other:?}: use nvme-tcp or iscsi"
            ))),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NvmeTcp => "nvme-tcp",
            Self::Iscsi => "iscsi",
        })
    }
}
