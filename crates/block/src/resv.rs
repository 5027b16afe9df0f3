//! Persistent reservations of a volume (NVMe Base 1.4 section 8.8): registrants keyed by Host
//! Identifier, one reservation of six types, and the access table of figure 403.
//!
//! [`Reservations`] is the pure state and its commands; [`Keeper`] holds a volume's state on the
//! node that serves it, checks hosts' I/O against it and runs commands one at a time, saving
//! each change through a [`ResvStore`] before it takes effect; [`Reserved`] puts a keeper in
//! front of a device. A front end reaches them through [`BlockDevice::submit`] and
//! [`BlockDevice::reserve`], so a volume's reservations are the same on every path, local or
//! forwarded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alcubierre_types::{BlockCount, ByteSize, Lba, VolumeGeometry};
use bytes::Bytes;
use futures::FutureExt;
use parking_lot::RwLock;

use crate::{BlockDevice, BlockError, IoFuture, Op};

fn conflict() -> BlockError {
    BlockError::ReservationConflict
}

fn invalid(what: &str) -> BlockError {
    BlockError::InvalidField(what.to_string())
}

/// Reservation types (Base 1.4 figure 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResvType {
    /// Write Exclusive.
    WriteExclusive = 1,
    /// Exclusive Access.
    ExclusiveAccess = 2,
    /// Write Exclusive - Registrants Only.
    WriteExclusiveRegOnly = 3,
    /// Exclusive Access - Registrants Only.
    ExclusiveAccessRegOnly = 4,
    /// Write Exclusive - All Registrants.
    WriteExclusiveAllReg = 5,
    /// Exclusive Access - All Registrants.
    ExclusiveAccessAllReg = 6,
}

impl ResvType {
    /// Parses RTYPE; `None` for reserved values.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::WriteExclusive,
            2 => Self::ExclusiveAccess,
            3 => Self::WriteExclusiveRegOnly,
            4 => Self::ExclusiveAccessRegOnly,
            5 => Self::WriteExclusiveAllReg,
            6 => Self::ExclusiveAccessAllReg,
            _ => return None,
        })
    }

    fn all_registrants(self) -> bool {
        matches!(
            self,
            Self::WriteExclusiveAllReg | Self::ExclusiveAccessAllReg
        )
    }

    fn registrants_have_access(self) -> bool {
        !matches!(self, Self::WriteExclusive | Self::ExclusiveAccess)
    }

    fn exclusive_access(self) -> bool {
        matches!(
            self,
            Self::ExclusiveAccess | Self::ExclusiveAccessRegOnly | Self::ExclusiveAccessAllReg
        )
    }
}

/// Who issues a request: a 128-bit Host Identifier (NVMe: the Connect command's HOSTID).
pub type HostId = [u8; 16];

/// A registered host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registrant {
    /// The host.
    pub host: HostId,
    /// Its reservation key.
    pub key: u64,
    /// The controller it registered through (reported by Reservation Report).
    pub cntlid: u16,
}

/// A reservation command (Base 1.4 sections 6.11-6.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResvCommand {
    /// Reservation Register: `action` (RREGA) 0 register, 1 unregister, 2 replace.
    Register {
        /// RREGA.
        action: u8,
        /// IEKEY: ignore the current key.
        ignore_key: bool,
        /// CRKEY.
        current: u64,
        /// NRKEY.
        new: u64,
    },
    /// Reservation Acquire: `action` (RACQA) 0 acquire, 1 preempt, 2 preempt and abort.
    Acquire {
        /// RACQA.
        action: u8,
        /// CRKEY.
        current: u64,
        /// PRKEY.
        preempt: u64,
        /// RTYPE.
        rtype: u8,
    },
    /// Reservation Release: `action` (RRELA) 0 release, 1 clear.
    Release {
        /// RRELA.
        action: u8,
        /// CRKEY.
        current: u64,
        /// RTYPE.
        rtype: u8,
    },
    /// Reservation Report: the state, changing nothing.
    Report,
}

/// The reservation state of one volume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    generation: u32,
    registrants: Vec<Registrant>,
    /// The holder's host and the type; with all-registrants types every registrant holds it.
    holder: Option<(HostId, ResvType)>,
}

impl Reservations {
    fn find(&self, host: &HostId) -> Option<usize> {
        self.registrants.iter().position(|r| &r.host == host)
    }

    /// Whether `host` holds the reservation (with all-registrants types, every registrant).
    pub fn holds(&self, host: &HostId) -> bool {
        match self.holder {
            Some((_, t)) if t.all_registrants() => self.find(host).is_some(),
            Some((h, _)) => &h == host,
            None => false,
        }
    }

    /// The current reservation type, if any.
    pub fn reservation(&self) -> Option<ResvType> {
        self.holder.map(|(_, t)| t)
    }

    /// The generation counter (incremented by Register and Preempt).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether `host` may read (`write == false`) or write the namespace (figure 403).
    pub fn check_io(&self, host: &HostId, write: bool) -> Result<(), BlockError> {
        let Some((_, t)) = self.holder else {
            return Ok(());
        };
        if !write && !t.exclusive_access() {
            return Ok(());
        }
        let allowed = if t.registrants_have_access() {
            self.find(host).is_some()
        } else {
            self.holds(host)
        };
        if allowed {
            Ok(())
        } else {
            Err(conflict())
        }
    }

    fn key_ok(&self, i: usize, iekey: bool, crkey: u64) -> bool {
        iekey || self.registrants[i].key == crkey
    }

    /// Reservation Register (section 6.11): RREGA 0 register, 1 unregister, 2 replace.
    pub fn register(
        &mut self,
        host: HostId,
        cntlid: u16,
        rrega: u8,
        iekey: bool,
        crkey: u64,
        nrkey: u64,
    ) -> Result<(), BlockError> {
        let me = self.find(&host);
        match (rrega, me) {
            (0, None) => {
                self.registrants.push(Registrant {
                    host,
                    key: nrkey,
                    cntlid,
                });
            }
            (0, Some(i)) => {
                return if self.registrants[i].key == nrkey {
                    Ok(())
                } else {
                    Err(conflict())
                };
            }
            (1, Some(i)) => {
                if !self.key_ok(i, iekey, crkey) {
                    return Err(conflict());
                }
                let was_holder = self.holds(&host);
                self.registrants.remove(i);
                if let Some((_, t)) = self.holder {
                    if (was_holder && !t.all_registrants())
                        || (t.all_registrants() && self.registrants.is_empty())
                    {
                        self.holder = None;
                    }
                }
            }
            (2, Some(i)) => {
                if !self.key_ok(i, iekey, crkey) {
                    return Err(conflict());
                }
                self.registrants[i].key = nrkey;
            }
            (2, None) if iekey => {
                self.registrants.push(Registrant {
                    host,
                    key: nrkey,
                    cntlid,
                });
            }
            (1 | 2, None) => return Err(conflict()),
            _ => return Err(invalid("RREGA")),
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }

    /// Reservation Acquire (section 6.13): RACQA 0 acquire, 1 preempt, 2 preempt and abort.
    pub fn acquire(
        &mut self,
        host: HostId,
        racqa: u8,
        crkey: u64,
        prkey: u64,
        rtype: u8,
    ) -> Result<(), BlockError> {
        let rtype = ResvType::from_u8(rtype).ok_or_else(|| invalid("RTYPE"))?;
        let Some(i) = self.find(&host) else {
            return Err(conflict());
        };
        if self.registrants[i].key != crkey {
            return Err(conflict());
        }
        match racqa {
            0 => match self.holder {
                None => {
                    self.holder = Some((host, rtype));
                    Ok(())
                }
                Some((_, t)) if t == rtype && self.holds(&host) => Ok(()),
                Some(_) => Err(conflict()),
            },
            1 | 2 => {
                match self.holder {
                    Some((_, t)) if t.all_registrants() && prkey == 0 => {
                        self.registrants.retain(|r| r.host == host);
                        self.holder = Some((host, rtype));
                    }
                    Some((h, _)) if !rtype_all(self.holder) && self.key_of(&h) == Some(prkey) => {
                        self.registrants
                            .retain(|r| r.host == host || r.key != prkey);
                        self.holder = Some((host, rtype));
                    }
                    _ => {
                        if prkey == 0 {
                            return Err(invalid("PRKEY"));
                        }
                        self.registrants
                            .retain(|r| r.host == host || r.key != prkey);
                        if let Some((h, t)) = self.holder {
                            if !t.all_registrants() && self.find(&h).is_none() {
                                self.holder = None;
                            }
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(())
            }
            _ => Err(invalid("RACQA")),
        }
    }

    fn key_of(&self, host: &HostId) -> Option<u64> {
        self.find(host).map(|i| self.registrants[i].key)
    }

    /// Reservation Release (section 6.14): RRELA 0 release, 1 clear.
    pub fn release(
        &mut self,
        host: HostId,
        rrela: u8,
        crkey: u64,
        rtype: u8,
    ) -> Result<(), BlockError> {
        let Some(i) = self.find(&host) else {
            return Err(conflict());
        };
        if self.registrants[i].key != crkey {
            return Err(conflict());
        }
        match rrela {
            0 => {
                if !self.holds(&host) {
                    return Ok(());
                }
                let (_, t) = self.holder.expect("holder");
                if t as u8 != rtype {
                    return Err(invalid("RTYPE"));
                }
                self.holder = None;
                Ok(())
            }
            1 => {
                self.registrants.clear();
                self.holder = None;
                self.generation = self.generation.wrapping_add(1);
                Ok(())
            }
            _ => Err(invalid("RRELA")),
        }
    }

    /// Removes every registrant `fenced` names, as if each had unregistered (a fenced host's
    /// registrations are preempted without a preemptor: a reservation it held is released,
    /// all-registrants types end with their last registrant). The number removed; the
    /// generation moves only when one was.
    pub fn remove_hosts(&mut self, fenced: impl Fn(&HostId) -> bool) -> usize {
        let before = self.registrants.len();
        let held = self
            .holder
            .filter(|(h, t)| !t.all_registrants() && fenced(h));
        self.registrants.retain(|r| !fenced(&r.host));
        let removed = before - self.registrants.len();
        if removed == 0 {
            return 0;
        }
        if held.is_some() || (rtype_all(self.holder) && self.registrants.is_empty()) {
            self.holder = None;
        }
        self.generation = self.generation.wrapping_add(1);
        removed
    }

    /// The registered hosts, in registration order.
    pub fn registrants(&self) -> &[Registrant] {
        &self.registrants
    }

    /// Whether anything is registered (with nothing registered there is no reservation and
    /// every host has access).
    pub fn is_active(&self) -> bool {
        !self.registrants.is_empty()
    }

    /// Runs `cmd` for `host`, registering through controller `cntlid`.
    pub fn apply(&mut self, host: HostId, cntlid: u16, cmd: ResvCommand) -> Result<(), BlockError> {
        match cmd {
            ResvCommand::Register {
                action,
                ignore_key,
                current,
                new,
            } => self.register(host, cntlid, action, ignore_key, current, new),
            ResvCommand::Acquire {
                action,
                current,
                preempt,
                rtype,
            } => self.acquire(host, action, current, preempt, rtype),
            ResvCommand::Release {
                action,
                current,
                rtype,
            } => self.release(host, action, current, rtype),
            ResvCommand::Report => Ok(()),
        }
    }

    /// The state as bytes (the store's record and the replica network's reply): version 1,
    /// generation, reservation type (0: none) and holder, then each registrant; little endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.registrants.len() * REGISTRANT_LEN);
        b.push(ENCODING_VERSION);
        b.extend_from_slice(&self.generation.to_le_bytes());
        match self.holder {
            Some((h, t)) => {
                b.push(t as u8);
                b.extend_from_slice(&h);
            }
            None => b.extend_from_slice(&[0; 17]),
        }
        b.extend_from_slice(&(self.registrants.len() as u16).to_le_bytes());
        for r in &self.registrants {
            b.extend_from_slice(&r.host);
            b.extend_from_slice(&r.key.to_le_bytes());
            b.extend_from_slice(&r.cntlid.to_le_bytes());
        }
        b
    }

    /// Parses [`Reservations::encode`]'s bytes; every field is checked.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < 24 {
            return Err("reservation state is too short");
        }
        if b[0] != ENCODING_VERSION {
            return Err("reservation state has an unknown version");
        }
        let generation = u32::from_le_bytes(b[1..5].try_into().expect("4 bytes"));
        let holder = match b[5] {
            0 => None,
            t => Some((
                b[6..22].try_into().expect("16 bytes"),
                ResvType::from_u8(t).ok_or("reservation state has an unknown type")?,
            )),
        };
        let n = u16::from_le_bytes([b[22], b[23]]) as usize;
        let rest = &b[24..];
        if rest.len() != n * REGISTRANT_LEN {
            return Err("reservation state has a wrong length");
        }
        let registrants: Vec<Registrant> = rest
            .chunks_exact(REGISTRANT_LEN)
            .map(|e| Registrant {
                host: e[0..16].try_into().expect("16 bytes"),
                key: u64::from_le_bytes(e[16..24].try_into().expect("8 bytes")),
                cntlid: u16::from_le_bytes([e[24], e[25]]),
            })
            .collect();
        let r = Self {
            generation,
            registrants,
            holder,
        };
        for (i, x) in r.registrants.iter().enumerate() {
            if r.registrants[..i].iter().any(|y| y.host == x.host) {
                return Err("reservation state registers a host twice");
            }
        }
        if let Some((h, t)) = r.holder {
            if !t.all_registrants() && r.find(&h).is_none() {
                return Err("reservation state's holder is not registered");
            }
        }
        Ok(r)
    }
}

const ENCODING_VERSION: u8 = 1;
const REGISTRANT_LEN: usize = 26;

fn rtype_all(h: Option<(HostId, ResvType)>) -> bool {
    h.is_some_and(|(_, t)| t.all_registrants())
}

/// Where a volume's reservations are kept so that they outlive the node serving it.
pub trait ResvStore: Send + Sync {
    /// Saves `state`; the change takes effect (and is acknowledged) only once this returns `Ok`.
    /// An error (e.g. this node is no longer the volume's primary) fails the command, with the
    /// state unchanged.
    fn save(&self, state: &Reservations) -> IoFuture<()>;
}

/// A volume's reservations on the node that serves it: checks hosts' I/O and runs commands,
/// one at a time, each change saved (when there is a store) before it takes effect.
pub struct Keeper {
    state: RwLock<Reservations>,
    /// Whether anything is registered: I/O skips the lock while nothing is.
    active: AtomicBool,
    serial: futures::lock::Mutex<()>,
    store: Option<Arc<dyn ResvStore>>,
}

impl Keeper {
    /// A keeper starting from `state` that saves changes to `store` (none: they live as long as
    /// the process).
    pub fn new(state: Reservations, store: Option<Arc<dyn ResvStore>>) -> Arc<Self> {
        Arc::new(Self {
            active: AtomicBool::new(state.is_active()),
            state: RwLock::new(state),
            serial: futures::lock::Mutex::new(()),
            store,
        })
    }

    /// Whether `host` may run `op`.
    pub fn check(&self, host: &HostId, op: &Op) -> Result<(), BlockError> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        self.state.read().check_io(host, op.writes())
    }

    /// The current state.
    pub fn state(&self) -> Reservations {
        self.state.read().clone()
    }

    /// Runs `cmd` for `host`; the state after it.
    pub fn command(
        self: &Arc<Self>,
        host: HostId,
        cntlid: u16,
        cmd: ResvCommand,
    ) -> IoFuture<Reservations> {
        let me = self.clone();
        async move {
            let _one = me.serial.lock().await;
            let mut next = me.state();
            next.apply(host, cntlid, cmd)?;
            if next != *me.state.read() {
                if let Some(store) = &me.store {
                    store.save(&next).await?;
                }
                me.active.store(next.is_active(), Ordering::Release);
                *me.state.write() = next.clone();
            }
            Ok(next)
        }
        .boxed()
    }
}

impl Keeper {
    /// Removes the registrations of the hosts `fenced` names ([`Reservations::remove_hosts`]),
    /// saved before it takes effect, in turn with host commands; how many were removed.
    pub fn fence(
        self: &Arc<Self>,
        fenced: impl Fn(&HostId) -> bool + Send + 'static,
    ) -> IoFuture<usize> {
        let me = self.clone();
        async move {
            let _one = me.serial.lock().await;
            let mut next = me.state();
            let removed = next.remove_hosts(fenced);
            if removed > 0 {
                if let Some(store) = &me.store {
                    store.save(&next).await?;
                }
                me.active.store(next.is_active(), Ordering::Release);
                *me.state.write() = next;
            }
            Ok(removed)
        }
        .boxed()
    }
}

/// `inner` with a volume's reservations in front: [`BlockDevice::submit`] checks the host's
/// access, [`BlockDevice::reserve`] runs commands on the keeper. The plain operations (no host)
/// are not checked.
pub struct Reserved<D> {
    inner: D,
    keeper: Arc<Keeper>,
}

impl<D: BlockDevice> Reserved<D> {
    /// `inner` behind `keeper`.
    pub fn new(inner: D, keeper: Arc<Keeper>) -> Self {
        Self { inner, keeper }
    }

    /// `inner` with reservations of its own that live as long as the process (a volume only
    /// this node serves).
    pub fn volatile(inner: D) -> Self {
        Self::new(inner, Keeper::new(Reservations::default(), None))
    }

    /// The keeper.
    pub fn keeper(&self) -> &Arc<Keeper> {
        &self.keeper
    }
}

impl<D: BlockDevice> BlockDevice for Reserved<D> {
    fn geometry(&self) -> VolumeGeometry {
        self.inner.geometry()
    }
    fn max_transfer(&self) -> ByteSize {
        self.inner.max_transfer()
    }
    fn read(&self, lba: Lba, count: BlockCount) -> IoFuture<Bytes> {
        self.inner.read(lba, count)
    }
    fn write(&self, lba: Lba, data: Bytes) -> IoFuture<()> {
        self.inner.write(lba, data)
    }
    fn write_zeroes(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.inner.write_zeroes(lba, count)
    }
    fn unmap(&self, lba: Lba, count: BlockCount) -> IoFuture<()> {
        self.inner.unmap(lba, count)
    }
    fn flush(&self) -> IoFuture<()> {
        self.inner.flush()
    }
    fn submit(&self, host: &HostId, op: Op) -> IoFuture<Bytes> {
        match self.keeper.check(host, &op) {
            Ok(()) => op.run(&self.inner),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }
    fn reserve(&self, host: HostId, cntlid: u16, cmd: ResvCommand) -> IoFuture<Reservations> {
        self.keeper.command(host, cntlid, cmd)
    }
}

#[cfg(test)]
mod tests;
