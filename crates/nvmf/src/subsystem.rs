//! Subsystems (one per volume, one namespace), the node's target registry, and controller
//! bookkeeping. No I/O: the driver and the control plane call into these.
//!
//! NQN scheme: `nqn.2014-08.io.alcubierre:vol:<volume uuid>`; namespace id 1; the namespace's
//! NGUID and UUID are the volume's UUID, identical on every node so that host multipath joins
//! the paths. Controller ids are allocated from a per-node range (`cntlid_base ..
//! cntlid_base + cntlid_count`) that the control plane makes disjoint across the cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use alcubierre_block::BlockDevice;
use alcubierre_types::VolumeId;
use parking_lot::{Mutex, RwLock};

use crate::controller::Controller;

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
    controllers: Mutex<Vec<Weak<Controller>>>,
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

    /// Replaces the host access list (existing connections stay).
    pub fn set_acl(&self, acl: HostAcl) {
        *self.acl.write() = acl;
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

    pub(crate) fn add_controller(&self, c: &Arc<Controller>) {
        self.controllers.lock().push(Arc::downgrade(c));
    }
}

/// Limits and identity of this node's target.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    /// First controller id of this node's range (1..=0xffef).
    pub cntlid_base: u16,
    /// Number of controller ids in the range.
    pub cntlid_count: u16,
    /// In-capsule data bytes accepted on I/O queues (IOCCSZ = 4 + this / 16).
    pub in_capsule_data: u32,
    /// Maximum data transfer as a power of two of 4 KiB pages (MDTS).
    pub mdts: u8,
    /// MAXH2CDATA advertised in ICResp.
    pub max_h2c_data: u32,
    /// Maximum queue entries supported (CAP.MQES + 1).
    pub max_queue_entries: u16,
    /// Most I/O queues granted per controller.
    pub max_io_queues: u16,
    /// This node's portals (discovery log entries and the default for subsystems).
    pub portals: Vec<Portal>,
    /// Firmware revision reported in Identify Controller.
    pub firmware: String,
    /// After each burst of work a connection keeps polling its socket for this long before it
    /// sleeps (zero: never; an idle target uses no CPU either way). Trades CPU for latency
    /// where waking a sleeping CPU is slow (virtual machines).
    pub busy_poll: std::time::Duration,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            cntlid_base: 1,
            cntlid_count: 0xffef,
            in_capsule_data: 8192,
            mdts: 8,
            max_h2c_data: 256 * 1024,
            max_queue_entries: 1024,
            max_io_queues: 64,
            portals: Vec::new(),
            firmware: env!("CARGO_PKG_VERSION").to_string(),
            busy_poll: std::time::Duration::ZERO,
        }
    }
}

impl TargetConfig {
    /// Largest data transfer of one command, in bytes.
    pub fn max_transfer(&self) -> u32 {
        4096u32 << self.mdts
    }
}

/// This node's NVMe-oF target: its subsystems and live controllers.
pub struct Target {
    /// Configuration.
    pub config: TargetConfig,
    subsystems: RwLock<HashMap<String, Arc<Subsystem>>>,
    controllers: Mutex<HashMap<u16, Arc<Controller>>>,
    next_cntlid: Mutex<u16>,
    discovery_gen: AtomicU64,
}

impl Target {
    /// An empty target.
    pub fn new(config: TargetConfig) -> Self {
        let base = config.cntlid_base;
        Self {
            config,
            subsystems: RwLock::new(HashMap::new()),
            controllers: Mutex::new(HashMap::new()),
            next_cntlid: Mutex::new(base),
            discovery_gen: AtomicU64::new(1),
        }
    }

    /// Adds (or replaces) a subsystem.
    pub fn add_subsystem(&self, s: Arc<Subsystem>) {
        self.subsystems.write().insert(s.nqn.clone(), s);
        self.discovery_changed();
    }

    /// The discovery log changed (a subsystem came or went, or its portals or hosts changed):
    /// a new generation, and a Discovery Log Page Change notice to every discovery controller
    /// that asked for them, so hosts with a persistent discovery connection connect the new
    /// paths.
    pub fn discovery_changed(&self) {
        self.discovery_gen.fetch_add(1, Ordering::Relaxed);
        let ctrls: Vec<_> = self.controllers.lock().values().cloned().collect();
        for c in ctrls.iter().filter(|c| c.subsystem().is_none()) {
            c.post_event(SubsystemEvent::DiscoveryChanged);
        }
    }

    /// Removes a subsystem; its controllers fail.
    pub fn remove_subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        let s = self.subsystems.write().remove(nqn);
        self.discovery_changed();
        let ctrls: Vec<_> = self.controllers.lock().values().cloned().collect();
        for c in ctrls {
            if c.subsystem().is_some_and(|cs| cs.nqn == nqn) {
                c.fail("subsystem removed");
            }
        }
        s
    }

    /// A subsystem by NQN.
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems.read().get(nqn).cloned()
    }

    /// Every subsystem, sorted by NQN.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        let mut v: Vec<_> = self.subsystems.read().values().cloned().collect();
        v.sort_by(|a, b| a.nqn.cmp(&b.nqn));
        v
    }

    /// Discovery log generation counter.
    pub fn discovery_generation(&self) -> u64 {
        self.discovery_gen.load(Ordering::Relaxed)
    }

    /// Registers a new controller, allocating its id; `None` when the range is exhausted.
    pub(crate) fn register_controller(
        &self,
        make: impl FnOnce(u16) -> Controller,
    ) -> Option<Arc<Controller>> {
        let mut ctrls = self.controllers.lock();
        let mut next = self.next_cntlid.lock();
        let base = self.config.cntlid_base;
        let count = self.config.cntlid_count.max(1);
        for _ in 0..count {
            let id = *next;
            *next = if id >= base.saturating_add(count - 1) {
                base
            } else {
                id + 1
            };
            if let std::collections::hash_map::Entry::Vacant(e) = ctrls.entry(id) {
                let c = Arc::new(make(id));
                e.insert(c.clone());
                return Some(c);
            }
        }
        None
    }

    /// A live controller by id.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.controllers.lock().get(&cntlid).cloned()
    }

    /// Forgets a controller (its admin queue is gone).
    pub(crate) fn unregister_controller(&self, cntlid: u16) {
        self.controllers.lock().remove(&cntlid);
    }

    /// Number of live controllers.
    pub fn controller_count(&self) -> usize {
        self.controllers.lock().len()
    }
}
