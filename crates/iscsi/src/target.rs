//! The node's iSCSI target: one target name per volume, each with LUN 0 and its access rules,
//! and the portals SendTargets lists (every node serving the volume).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use alcubierre_types::VolumeId;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

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
    /// Normal sessions logged in, by a serial number: a change of an export's access list ends
    /// those of initiators it no longer admits.
    sessions: Mutex<HashMap<u64, Joined>>,
    next_session: AtomicU64,
}

struct Joined {
    target: String,
    initiator: String,
    end: Arc<Notify>,
}

/// A normal session's place in its target's registry; it leaves when dropped.
pub struct Session {
    registry: Arc<Target>,
    serial: u64,
    end: Arc<Notify>,
}

impl Session {
    /// Completes when the session must end: its initiator left the target's access list.
    pub async fn revoked(&self) {
        self.end.notified().await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.registry.sessions.lock().remove(&self.serial);
    }
}

fn admits(access: &Access, initiator: &str) -> bool {
    access
        .initiators
        .as_ref()
        .is_none_or(|l| l.iter().any(|i| i == initiator))
}

impl Default for Target {
    fn default() -> Self {
        Self {
            exports: RwLock::new(BTreeMap::new()),
            local: RwLock::new(String::new()),
            tpgt: AtomicU16::new(1),
            tsih: AtomicU16::new(1),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }
}

impl Target {
    /// An empty target.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Exports (or replaces) target `name`. Sessions of initiators that its access list no
    /// longer admits end (a detached host keeps no path to the volume); CHAP changes apply to
    /// the next login.
    pub fn export(&self, name: &str, export: Export) {
        let access = export.access.clone();
        self.exports
            .write()
            .insert(name.to_string(), Arc::new(export));
        for s in self.sessions.lock().values() {
            if s.target == name && !admits(&access, &s.initiator) {
                tracing::info!(initiator = %s.initiator, target = %name,
                    "ending the iSCSI session: the initiator left the target's access list");
                s.end.notify_one();
            }
        }
    }

    /// Registers a normal session of `initiator` with target `name` once it logged in. `None`
    /// when the target no longer admits the initiator (its access list changed during the
    /// login): the session must end.
    pub fn join(self: &Arc<Self>, name: &str, initiator: &str) -> Option<Session> {
        let serial = self.next_session.fetch_add(1, Ordering::Relaxed);
        let end = Arc::new(Notify::new());
        self.sessions.lock().insert(
            serial,
            Joined {
                target: name.to_string(),
                initiator: initiator.to_string(),
                end: end.clone(),
            },
        );
        let session = Session {
            registry: self.clone(),
            serial,
            end,
        };
        // Checked after registering, so a change between the login's check and here is seen
        // by one or the other.
        let admitted = self.get(name).is_some_and(|e| admits(&e.access, initiator));
        admitted.then_some(session)
    }

    /// How many normal sessions are logged in to target `name`.
    pub fn sessions(&self, name: &str) -> usize {
        self.sessions
            .lock()
            .values()
            .filter(|s| s.target == name)
            .count()
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
            .filter(|(_, e)| admits(&e.access, initiator))
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
