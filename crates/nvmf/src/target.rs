//! This node's NVMe/TCP target: its subsystems, its controllers (ids from the node's range) and
//! its discovery log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::controller::Controller;
use crate::subsystem::{Portal, Subsystem, SubsystemEvent};

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
