//! What the agent reports: an attached volume with its paths, and a daemon round's changes.

use crate::Protocol;

/// One path of an attached volume, as the host sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PathView {
    /// Where it goes.
    pub portal: String,
    /// The host's name of it (`nvme3`, `session7`).
    pub handle: String,
    /// Its state (`live`, `connecting`; `LOGGED_IN`, `FAILED`) and, over NVMe, its ANA state.
    pub state: String,
}

/// An attached volume.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attached {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// How it is reached.
    pub protocol: Protocol,
    /// The device to use (`/dev/disk/by-id/...` when udev made the link).
    pub device: String,
    /// The kernel's block device (`nvme1n1`, `dm-0`).
    pub block: String,
    /// Its paths.
    pub paths: Vec<PathView>,
}

/// What a daemon round did to one volume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Paths connected (`volume: portal`).
    pub connected: Vec<String>,
    /// Paths dropped.
    pub dropped: Vec<String>,
    /// What failed (it is retried next round).
    pub errors: Vec<String>,
}
