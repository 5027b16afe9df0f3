//! The node's iSCSI target: one target name per volume, each with LUN 0 and its access rules,
//! and the portals SendTargets lists (every node serving the volume).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use alcubierre_types::VolumeId;
use parking_lot::RwLock;

use crate::conn::Portals;
use crate::login::{Access, Directory};
use crate::scsi::Lun;

/// The target name of a volume: `iqn.2014-08.io.alcubierre:vol.<uuid>` (the same on every
/// node, as multipath hosts need).
pub fn volume_iqn(id: VolumeId) -> String {
    id.iqn()
}

/// One exported volume.
pub struct Export {
    /// Its logical unit 0.
    pub lun: Arc<Lun>,
    /// Who may log in.
    pub access: Access,
    /// The portals that serve it, as SendTargets lists them ("host:port,tpgt": every node
    /// holding a replica); this node's portal when empty.
    pub portals: Vec<String>,
}

/// A node's targets.
pub struct Target {
    exports: RwLock<BTreeMap<String, Arc<Export>>>,
    /// This node's portal ("host:port"), listed when an export names none.
    local: RwLock<String>,
    /// This node's target portal group tag.
    tpgt: AtomicU16,
    tsih: AtomicU16,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            exports: RwLock::new(BTreeMap::new()),
            local: RwLock::new(String::new()),
            tpgt: AtomicU16::new(1),
            tsih: AtomicU16::new(1),
        }
    }
}

impl Target {
    /// An empty target.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Exports (or replaces) target `name`.
    pub fn export(&self, name: &str, export: Export) {
        self.exports
            .write()
            .insert(name.to_string(), Arc::new(export));
    }

    /// Stops exporting `name` (connections already logged in keep their LUN until they end).
    pub fn unexport(&self, name: &str) {
        self.exports.write().remove(name);
    }

    /// Target `name`'s export.
    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        self.exports.read().get(name).cloned()
    }

    /// Sets the portal listed for exports that name none.
    pub fn set_local_portal(&self, portal: String) {
        *self.local.write() = portal;
    }

    /// The portal listed for exports that name none.
    pub fn local_portal(&self) -> String {
        self.local.read().clone()
    }

    /// Sets this node's target portal group tag (non-zero; distinct per node, as hosts with
    /// sessions through several nodes tell their portal groups apart).
    pub fn set_portal_group(&self, tpgt: u16) {
        self.tpgt.store(tpgt.max(1), Ordering::Relaxed);
    }

    /// A new session handle (never 0).
    pub fn next_tsih(&self) -> u16 {
        loop {
            let t = self.tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                return t;
            }
        }
    }
}

impl Directory for Target {
    fn access(&self, name: &str) -> Option<Access> {
        self.get(name).map(|e| e.access.clone())
    }
    fn portal_group(&self) -> u16 {
        self.tpgt.load(Ordering::Relaxed)
    }
}

impl Portals for Target {
    fn send_targets(&self, initiator: &str, only: Option<&str>) -> Vec<(String, Vec<String>)> {
        let local = self.local.read().clone();
        self.exports
            .read()
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o == n.as_str()))
            // A target whose access list does not admit the initiator is not disclosed to it
            // (as NVMe discovery lists only the subsystems a host may connect to).
            .filter(|(_, e)| {
                e.access
                    .initiators
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|i| i == initiator))
            })
            .map(|(n, e)| {
                let portals = if e.portals.is_empty() {
                    vec![format!("{local},{}", self.tpgt.load(Ordering::Relaxed))]
                } else {
                    e.portals.clone()
                };
                (n.clone(), portals)
            })
            .collect()
    }
}
