//! Subsystems (one per volume, one namespace), the node's target registry, and controller
//! bookkeeping. No I/O: the driver and the control plane call into these.
//!
//! NQN scheme: `nqn.2014-08.io.alcubierre:vol:<volume uuid>`; namespace id 1; the namespace's
//! NGUID and UUID are the volume's UUID, identical on every node so that host multipath joins
//! the paths. Controller ids are allocated from a per-node range (`cntlid_base ..
//! cntlid_base + cntlid_count`) that the control plane makes disjoint across the cluster.

use std::sync::{Arc, Weak};

use alcubierre_block::BlockDevice;
use alcubierre_types::VolumeId;
use parking_lot::{Mutex, RwLock};

pub use alcubierre_types::NQN_PREFIX;

/// The NQN of a volume's subsystem.
pub fn volume_nqn(volume: VolumeId) -> String {
    volume.nqn()
}

/// ANA states (Base 1.4 section 8.20.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnaState {
    /// ANA Optimized: the primary's paths.
    Optimized = 1,
    /// ANA Non-Optimized: I/O works, forwarded.
    NonOptimized = 2,
    /// ANA Inaccessible: I/O fails with a path error.
    Inaccessible = 3,
    /// ANA Persistent Loss.
    PersistentLoss = 4,
    /// ANA Change (transition).
    Change = 15,
}

/// Which hosts may connect to a subsystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAcl {
    /// Any host NQN.
    Any,
    /// Only these host NQNs.
    Only(Vec<String>),
}

impl HostAcl {
    /// Whether `hostnqn` is allowed.
    pub fn allows(&self, hostnqn: &str) -> bool {
        match self {
            HostAcl::Any => true,
            HostAcl::Only(l) => l.iter().any(|h| h == hostnqn),
        }
    }
}

/// A transport address a host can reach (what the discovery log advertises).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    /// IPv4 or IPv6 address, as text.
    pub addr: String,
    /// TCP port.
    pub port: u16,
    /// Port id (unique per node in the subsystem; ANA groups are per node).
    pub port_id: u16,
}

/// Events a subsystem reports to its controllers as asynchronous events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsystemEvent {
    /// The namespace changed (e.g. resized): Namespace Attribute Changed notice.
    NamespaceChanged,
    /// The ANA state changed: ANA Change notice.
    AnaChanged,
    /// What a host's discovery log lists changed (discovery controllers only).
    DiscoveryChanged,
}

/// One exported volume.
pub struct Subsystem {
    /// Subsystem NQN.
    pub nqn: String,
    /// The volume.
    pub volume: VolumeId,
    /// The namespace's device.
    pub device: Arc<dyn BlockDevice>,
    /// Serial number (the same on every node).
    pub serial: String,
    acl: RwLock<HostAcl>,
    ana: Mutex<(AnaState, u64)>,
    /// ANA group id of this node's paths.
    pub ana_group: u32,
    /// Portals of every node that exports this subsystem; empty means this node's portals.
    portals: RwLock<Vec<Portal>>,
    controllers: Mutex<Vec<Weak<dyn EventSink>>>,
}

impl Subsystem {
    /// A subsystem for `volume` on `device`, reachable by `acl`, in ANA group `ana_group`.
    pub fn new(
        volume: VolumeId,
        device: Arc<dyn BlockDevice>,
        acl: HostAcl,
        ana_group: u32,
    ) -> Self {
        let hex = volume.0.simple().to_string();
        Self {
            nqn: volume_nqn(volume),
            volume,
            device,
            serial: hex[..20].to_string(),
            acl: RwLock::new(acl),
            ana: Mutex::new((AnaState::Optimized, 1)),
            ana_group,
            portals: RwLock::new(Vec::new()),
            controllers: Mutex::new(Vec::new()),
        }
    }

    /// Whether `hostnqn` may connect.
    pub fn allows(&self, hostnqn: &str) -> bool {
        self.acl.read().allows(hostnqn)
    }

    /// Replaces the host access list; the controllers of hosts it no longer admits fail (their
    /// connections close, and a reconnect is refused).
    pub fn set_acl(&self, acl: HostAcl) {
        *self.acl.write() = acl.clone();
        let mut ctrls = self.controllers.lock();
        ctrls.retain(|w| w.strong_count() > 0);
        for c in ctrls.iter().filter_map(Weak::upgrade) {
            if !acl.allows(c.host_nqn()) {
                tracing::warn!(host = %c.host_nqn(), subsystem = %self.nqn,
                    "the host's access was revoked: its controller fails");
                c.revoke("the host's access to the subsystem was revoked");
            }
        }
    }

    /// The ANA state of this node's paths and its change count.
    pub fn ana(&self) -> (AnaState, u64) {
        *self.ana.lock()
    }

    /// Changes this node's ANA state and tells the hosts.
    pub fn set_ana(&self, state: AnaState) {
        {
            let mut a = self.ana.lock();
            if a.0 == state {
                return;
            }
            *a = (state, a.1 + 1);
        }
        self.notify(SubsystemEvent::AnaChanged);
    }

    /// Portals advertised for this subsystem in discovery logs (empty: the node's own).
    pub fn portals(&self) -> Vec<Portal> {
        self.portals.read().clone()
    }

    /// Sets the portals of every node that exports the subsystem; whether they changed (then
    /// call [`Target::discovery_changed`]).
    pub fn set_portals(&self, p: Vec<Portal>) -> bool {
        let mut cur = self.portals.write();
        if *cur == p {
            return false;
        }
        *cur = p;
        true
    }

    /// Tells every live controller of an event (e.g. after a resize).
    pub fn notify(&self, ev: SubsystemEvent) {
        let mut ctrls = self.controllers.lock();
        ctrls.retain(|w| w.strong_count() > 0);
        for c in ctrls.iter().filter_map(Weak::upgrade) {
            c.post_event(ev);
        }
    }

    pub(crate) fn add_controller(&self, c: Weak<dyn EventSink>) {
        self.controllers.lock().push(c);
    }
}

/// What a subsystem tells of its events and access changes: its controllers.
pub(crate) trait EventSink: Send + Sync {
    /// Queues `ev` for the host (an asynchronous event, when it asked for one).
    fn post_event(&self, ev: SubsystemEvent);
    /// The host's NQN.
    fn host_nqn(&self) -> &str;
    /// The host lost access: the controller fails.
    fn revoke(&self, why: &str);
}
