//! One controller: the association of a host with a subsystem (or with the discovery
//! subsystem), shared by its admin queue and its I/O queues.
//!
//! ```text
//!  Connect(qid 0) ──> Disabled ──CC.EN=1──> Ready ──CC.SHN──> ShutDown
//!                        ^                    │
//!                        └────CC.EN=0─────────┘   any state ──keep-alive expiry,
//!                                                             admin queue loss──> Failed
//! ```
//! Only Ready controllers accept I/O queue connections and I/O. Failure wakes every queue of
//! the controller through [`Controller::watch`] so they close.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::status::Status;
use crate::subsystem::{EventSink, Subsystem, SubsystemEvent};
use alcubierre_block::HostId;

/// What the controller serves.
#[derive(Clone)]
pub enum Kind {
    /// An I/O controller of a volume subsystem.
    Io(Arc<Subsystem>),
    /// A discovery controller.
    Discovery,
}

/// Controller lifecycle state (see the module diagram).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtrlState {
    /// Connected, CC.EN = 0.
    Disabled,
    /// CC.EN = 1, CSTS.RDY = 1.
    Ready,
    /// Shutdown requested and complete.
    ShutDown,
    /// Keep-alive expired or the admin queue was lost; every queue closes.
    Failed(String),
}

/// Mutable controller state.
pub struct Inner {
    /// Lifecycle state.
    pub state: CtrlState,
    /// Controller Configuration property.
    pub cc: u32,
    /// Keep Alive Timeout; zero disables it.
    pub kato: Duration,
    /// Last Keep Alive (or connect).
    pub last_keep_alive: Instant,
    /// Number of I/O queues granted (Set Features Number of Queues).
    pub io_queues: u16,
    /// Connected I/O queue ids.
    pub connected_qids: Vec<u16>,
    /// Asynchronous Event Configuration (feature 0x0b).
    pub aec: u32,
    /// Outstanding Asynchronous Event Request command ids.
    pub aer_cids: VecDeque<u16>,
    /// Events waiting for an AER (completion dword 0 values).
    pub events: VecDeque<u32>,
    /// Events reported and not yet cleared by reading their log page.
    pub masked: u32,
    /// Whether the Changed Namespace List log has an entry.
    pub ns_changed: bool,
    /// Reservation notification mask (feature 0x82).
    pub resv_mask: u32,
    /// Temperature threshold (feature 0x04).
    pub temp_threshold: u32,
    /// Number of commands completed with an error (error log count).
    pub error_count: u64,
    /// The newest error log entries, newest first (at most [`ERROR_LOG_ENTRIES`]).
    pub errors: VecDeque<ErrorEntry>,
}

/// How many Error Information log entries a controller keeps (Identify ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 64;

/// One Error Information log entry (Base 1.4 figure 194).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEntry {
    /// The controller's error count when this error happened (its unique id, from 1).
    pub count: u64,
    /// The submission queue of the command.
    pub sqid: u16,
    /// The command.
    pub cid: u16,
    /// How it completed.
    pub status: Status,
    /// The namespace and first failing LBA, for media errors.
    pub at: Option<(u32, u64)>,
}

impl Inner {
    /// Records a command that completed with an error.
    pub fn log_error(&mut self, sqid: u16, cid: u16, status: Status, at: Option<(u32, u64)>) {
        self.error_count += 1;
        if self.errors.len() == ERROR_LOG_ENTRIES {
            self.errors.pop_back();
        }
        self.errors.push_front(ErrorEntry {
            count: self.error_count,
            sqid,
            cid,
            status,
            at,
        });
    }
}

/// A controller.
pub struct Controller {
    /// Controller id.
    pub cntlid: u16,
    /// What it serves.
    pub kind: Kind,
    /// Host NQN from Connect.
    pub hostnqn: String,
    /// Host identifier from Connect.
    pub hostid: HostId,
    /// Mutable state.
    pub inner: Mutex<Inner>,
    wake: watch::Sender<u64>,
    /// When it was created; `traffic_ns` counts from here.
    born: Instant,
    /// Nanoseconds after `born` of the last command on any of its queues: with Traffic Based
    /// Keep Alive (CTRATT.TBKAS), commands restart the keep-alive timer as Keep Alive does.
    traffic_ns: std::sync::atomic::AtomicU64,
}

/// Asynchronous event: notice type (Base 1.4 figure 146).
const AE_TYPE_NOTICE: u32 = 2;
/// Notice: Namespace Attribute Changed; log page 04h.
pub const AEN_NS_CHANGED: u32 = AE_TYPE_NOTICE | (0x04 << 16); // info 00h
/// Notice: Asymmetric Namespace Access Change; log page 0Ch.
pub const AEN_ANA_CHANGED: u32 = AE_TYPE_NOTICE | (0x03 << 8) | (0x0c << 16);
/// AEC bit enabling Namespace Attribute Notices.
pub const AEC_NS_ATTR: u32 = 1 << 8;
/// AEC bit enabling ANA Change Notices.
pub const AEC_ANA: u32 = 1 << 11;
/// Notice: Discovery Log Page Change; log page 70h (Base 1.4 figure 148).
pub const AEN_DISCOVERY_CHANGED: u32 = AE_TYPE_NOTICE | (0xf0 << 8) | (0x70 << 16);
/// AEC bit enabling Discovery Log Page Change Notices (discovery controllers).
pub const AEC_DISCOVERY: u32 = 1 << 31;

/// The AEC bit that enables (and masks) the notice `dw0`.
fn aec_bit(dw0: u32) -> u32 {
    match dw0 {
        AEN_ANA_CHANGED => AEC_ANA,
        AEN_DISCOVERY_CHANGED => AEC_DISCOVERY,
        _ => AEC_NS_ATTR,
    }
}

impl Controller {
    /// A new, disabled controller.
    pub fn new(
        cntlid: u16,
        kind: Kind,
        hostnqn: String,
        hostid: HostId,
        kato: Duration,
        io_queues: u16,
        now: Instant,
    ) -> Self {
        let (wake, _) = watch::channel(0);
        Self {
            born: now,
            traffic_ns: std::sync::atomic::AtomicU64::new(0),
            cntlid,
            kind,
            hostnqn,
            hostid,
            inner: Mutex::new(Inner {
                state: CtrlState::Disabled,
                cc: 0,
                kato,
                last_keep_alive: now,
                io_queues,
                connected_qids: Vec::new(),
                aec: 0,
                aer_cids: VecDeque::new(),
                events: VecDeque::new(),
                masked: 0,
                ns_changed: false,
                resv_mask: 0,
                temp_threshold: 0x0157,
                error_count: 0,
                errors: VecDeque::new(),
            }),
            wake,
        }
    }

    /// The subsystem of an I/O controller.
    pub fn subsystem(&self) -> Option<&Arc<Subsystem>> {
        match &self.kind {
            Kind::Io(s) => Some(s),
            Kind::Discovery => None,
        }
    }

    /// A receiver that changes whenever a queue of this controller should look at it (an event
    /// arrived, or the controller failed).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn wake(&self) {
        self.wake.send_modify(|v| *v += 1);
    }

    /// Why the controller failed, if it did.
    pub fn failed(&self) -> Option<String> {
        match &self.inner.lock().state {
            CtrlState::Failed(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// Fails the controller; every queue closes.
    pub fn fail(&self, reason: &str) {
        {
            let mut i = self.inner.lock();
            if matches!(i.state, CtrlState::Failed(_)) {
                return;
            }
            i.state = CtrlState::Failed(reason.to_string());
        }
        self.wake();
    }

    /// Whether CSTS.RDY is set.
    pub fn ready(&self) -> bool {
        self.inner.lock().state == CtrlState::Ready
    }

    /// Queues an asynchronous event if the host enabled it and it is not already reported.
    pub fn post_event(&self, ev: SubsystemEvent) {
        let dw0 = match ev {
            SubsystemEvent::NamespaceChanged => AEN_NS_CHANGED,
            SubsystemEvent::AnaChanged => AEN_ANA_CHANGED,
            SubsystemEvent::DiscoveryChanged => AEN_DISCOVERY_CHANGED,
        };
        let bit = aec_bit(dw0);
        {
            let mut i = self.inner.lock();
            if ev == SubsystemEvent::NamespaceChanged {
                i.ns_changed = true;
            }
            if i.aec & bit == 0 || i.masked & bit != 0 || i.events.contains(&dw0) {
                return;
            }
            i.events.push_back(dw0);
        }
        self.wake();
    }

    /// Clears the mask of an event type once its log page was read (RAE = 0).
    pub fn clear_event(&self, log_id: u8) {
        let mut i = self.inner.lock();
        match log_id {
            crate::spec::log_id::CHANGED_NS => {
                i.masked &= !AEC_NS_ATTR;
                i.ns_changed = false;
            }
            crate::spec::log_id::ANA => i.masked &= !AEC_ANA,
            crate::spec::log_id::DISCOVERY => i.masked &= !AEC_DISCOVERY,
            _ => {}
        }
    }

    /// Pairs waiting events with outstanding AERs: `(cid, dw0)` completions to send.
    pub fn take_event_completions(&self) -> Vec<(u16, u32)> {
        let mut i = self.inner.lock();
        let mut done = Vec::new();
        while !i.aer_cids.is_empty() && !i.events.is_empty() {
            let cid = i.aer_cids.pop_front().expect("non-empty");
            let ev = i.events.pop_front().expect("non-empty");
            i.masked |= aec_bit(ev);
            done.push((cid, ev));
        }
        done
    }

    /// When the keep-alive timer expires, if it runs: KATO after the last Keep Alive or, with
    /// Traffic Based Keep Alive, the last command on any of the controller's queues.
    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        let traffic = self.born
            + Duration::from_nanos(self.traffic_ns.load(std::sync::atomic::Ordering::Relaxed));
        let i = self.inner.lock();
        (!i.kato.is_zero() && !matches!(i.state, CtrlState::Failed(_)))
            .then(|| i.last_keep_alive.max(traffic) + i.kato)
    }

    /// A command arrived on one of its queues (restarts the keep-alive timer: TBKAS).
    pub fn traffic(&self, now: Instant) {
        let ns = now.saturating_duration_since(self.born).as_nanos() as u64;
        self.traffic_ns
            .fetch_max(ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// Restarts the keep-alive timer.
    pub fn keep_alive(&self, now: Instant) {
        self.inner.lock().last_keep_alive = now;
    }
}

impl EventSink for Controller {
    fn post_event(&self, ev: SubsystemEvent) {
        Controller::post_event(self, ev);
    }

    fn host_nqn(&self) -> &str {
        &self.hostnqn
    }

    fn revoke(&self, why: &str) {
        self.fail(why);
    }
}
