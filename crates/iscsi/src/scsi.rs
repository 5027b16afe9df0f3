//! The SCSI command layer (SPC-4, SBC-4) over a [`BlockDevice`]: CDB decoding, the commands
//! Linux, VMware and Windows initiators send, and sense data for every error (fixed format).
//!
//! Persistent reservations are in `pr`, the supported-opcodes report in `opcodes`, copy
//! offload and GET LBA STATUS in `copy`.

mod copy;
mod data;
mod pages;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use alcubierre_block::{BlockDevice, BlockError, HostId, Op};
use alcubierre_types::{BlockCount, Lba};
use bytes::{BufMut, Bytes, BytesMut};

pub use crate::sense::{key, sense_segment, status, Outcome, Sense};

fn conflict() -> Outcome {
    Outcome {
        status: status::RESERVATION_CONFLICT,
        sense: None,
        data: Bytes::new(),
    }
}

fn from_block(e: &BlockError) -> Outcome {
    match e {
        BlockError::OutOfRange { .. } => Outcome::check(Sense::LBA_OUT_OF_RANGE),
        BlockError::Misaligned { .. }
        | BlockError::TooLarge { .. }
        | BlockError::InvalidField(_) => Outcome::check(Sense::INVALID_FIELD),
        // The INFORMATION field names the first unreadable LBA (SBC-4 4.18.1); fixed-format
        // sense has four bytes for it, so a larger LBA is left out (VALID stays 0).
        BlockError::Medium { lba, .. } => Outcome::check(Sense {
            info: u32::try_from(*lba).ok(),
            ..Sense::UNRECOVERED_READ
        }),
        BlockError::Backend(_) => Outcome::check(Sense::UNRECOVERED_READ),
        BlockError::Unavailable(_) => Outcome::check(Sense::TRANSITIONING),
        BlockError::DeviceFailed(_) => Outcome::check(Sense::INTERNAL_FAILURE),
        BlockError::ReservationConflict => Outcome {
            status: status::RESERVATION_CONFLICT,
            sense: None,
            data: Bytes::new(),
        },
    }
}

/// Where data for a command comes from, and how much the initiator expects, as the connection
/// layer needs to know before it runs the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// Data-In of at most this many bytes.
    In,
    /// Data-Out of exactly this many bytes.
    Out(usize),
    /// An operation code this LUN does not implement: it fails at once with INVALID COMMAND
    /// OPERATION CODE, whatever data the initiator announced.
    Unsupported,
}

/// A logical unit: a volume and the identity it reports.
pub struct Lun {
    dev: Arc<dyn BlockDevice>,
    /// Unit serial number (VPD page 80h).
    serial: String,
    /// NAA IEEE Registered Extended designator (16 bytes, VPD page 83h): the same on every node.
    naa: [u8; 16],
    /// Serialises COMPARE AND WRITE's read, compare and write.
    caw: tokio::sync::Mutex<()>,
    /// The I_T nexus holding a RESERVE(6) reservation (SPC-2; kept on this node only).
    reserved6: parking_lot::Mutex<Option<HostId>>,
    /// This node's target port group and relative target port id (implicit ALUA: one group
    /// per node, the node's ANA group).
    group: u16,
    /// The group's asymmetric access state ([`alua`]).
    alua: std::sync::atomic::AtomicU8,
    /// The other nodes' target port groups and their states, as this node knows them from the
    /// cluster (REPORT TARGET PORT GROUPS lists every group).
    peers: parking_lot::RwLock<Vec<(u16, u8)>>,
    /// The logged-in I_T nexuses and their pending unit attentions (SAM-5 5.14).
    attentions: parking_lot::Mutex<HashMap<HostId, VecDeque<Sense>>>,
    /// Some nexus has a unit attention pending (commands look no further otherwise).
    attention: std::sync::atomic::AtomicBool,
    /// EXTENDED COPY results held per nexus and list identifier (RECEIVE COPY RESULTS).
    copies: parking_lot::Mutex<HashMap<(HostId, u8), copy::CopyStatus>>,
    /// Passes a logical-unit-wide unit attention raised here on to the LU's nexuses on the
    /// other nodes; the future ends when they have it.
    elsewhere: parking_lot::RwLock<Option<PassOn>>,
}

/// What a [`Lun`] calls to pass a unit attention `(asc, ascq)` for `hosts` (empty: every
/// nexus) on to the other nodes.
pub type PassOn =
    Arc<dyn Fn(u8, u8, Vec<HostId>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Asymmetric access states (SPC-4 table 166).
pub mod alua {
    /// Active/optimized: the node is the volume's primary.
    pub const OPTIMIZED: u8 = 0x0;
    /// Active/non-optimized: the node forwards I/O to the primary.
    pub const NON_OPTIMIZED: u8 = 0x1;
    /// Transitioning: the node cannot serve the volume for now.
    pub const TRANSITIONING: u8 = 0xf;
}

/// Our IEEE company id placeholder in NAA designators (a locally administered value).
const OUI: u32 = 0x0a_1c_be;

impl Lun {
    /// A LUN for `dev` with the volume's 16-byte id (its UUID) as identity, in this node's
    /// target port group `group` (non-zero, distinct per node), active/optimized until told
    /// otherwise.
    pub fn new(dev: Arc<dyn BlockDevice>, id: [u8; 16], group: u16) -> Self {
        let serial: String = id[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut naa = [0u8; 16];
        // NAA 6 (IEEE Registered Extended): 4-bit NAA, 24-bit OUI, 100 bits vendor-specific.
        let head = (6u64 << 60)
            | (u64::from(OUI) << 36)
            | (u64::from_be_bytes(id[..8].try_into().expect("8")) >> 28);
        naa[..8].copy_from_slice(&head.to_be_bytes());
        naa[8..].copy_from_slice(&id[8..]);
        Self {
            dev,
            serial,
            naa,
            caw: tokio::sync::Mutex::new(()),
            reserved6: parking_lot::Mutex::new(None),
            group: group.max(1),
            alua: std::sync::atomic::AtomicU8::new(alua::OPTIMIZED),
            peers: parking_lot::RwLock::new(Vec::new()),
            attentions: parking_lot::Mutex::new(HashMap::new()),
            attention: std::sync::atomic::AtomicBool::new(false),
            copies: parking_lot::Mutex::new(HashMap::new()),
            elsewhere: parking_lot::RwLock::new(None),
        }
    }

    /// Logical-unit-wide unit attentions raised here (a LOGICAL UNIT RESET) also go to the
    /// LU's nexuses on the other nodes, through `pass_on`: the LU is one across the cluster.
    pub fn pass_attentions_on(&self, pass_on: PassOn) {
        *self.elsewhere.write() = Some(pass_on);
    }

    fn block_size(&self) -> u64 {
        self.dev.geometry().block_size().bytes()
    }

    fn blocks(&self) -> u64 {
        self.dev.geometry().blocks().0
    }

    fn max_transfer_blocks(&self) -> u64 {
        self.dev.max_transfer().0 / self.block_size()
    }

    /// The data direction and length of `cdb` (Data-Out length from the CDB; `edtl` is what
    /// the initiator announced).
    pub fn direction(&self, cdb: &[u8]) -> Direction {
        let bs = self.block_size() as usize;
        let blocks = |n: u64| Direction::Out(n as usize * bs);
        match cdb[0] {
            0x0a => blocks(match cdb[4] {
                0 => 256,
                n => u64::from(n),
            }),
            0x2a | 0x2e => blocks(u64::from(u16::from_be_bytes([cdb[7], cdb[8]]))),
            0xaa | 0xae => blocks(u64::from(u32::from_be_bytes(
                cdb[6..10].try_into().expect("4"),
            ))),
            0x8a | 0x8e => blocks(u64::from(u32::from_be_bytes(
                cdb[10..14].try_into().expect("4"),
            ))),
            // VERIFY with BYTCHK 01b carries data; 11b one block.
            0x2f | 0xaf | 0x8f => match (cdb[1] >> 1) & 3 {
                1 => blocks(match cdb[0] {
                    0x2f => u64::from(u16::from_be_bytes([cdb[7], cdb[8]])),
                    0xaf => u64::from(u32::from_be_bytes(cdb[6..10].try_into().expect("4"))),
                    _ => u64::from(u32::from_be_bytes(cdb[10..14].try_into().expect("4"))),
                }),
                3 => Direction::Out(bs),
                _ => Direction::None,
            },
            // WRITE SAME: one block, unless NDOB.
            0x41 => Direction::Out(bs),
            0x93 => {
                if cdb[1] & 1 != 0 {
                    Direction::None
                } else {
                    Direction::Out(bs)
                }
            }
            0x89 => blocks(2 * u64::from(cdb[13])),
            0x42 => Direction::Out(u16::from_be_bytes([cdb[7], cdb[8]]) as usize),
            0x15 => Direction::Out(cdb[4] as usize),
            0x55 => Direction::Out(u16::from_be_bytes([cdb[7], cdb[8]]) as usize),
            0x00 | 0x03 | 0x12 | 0x25 | 0x08 | 0x28 | 0xa8 | 0x88 | 0x35 | 0x91 | 0x1a | 0x5a
            | 0xa0 | 0x1b | 0x1e | 0x34 | 0x90 | 0x37 | 0xb7 => Direction::In,
            0xa3 if matches!(cdb[1] & 0x1f, 0x0a | 0x0c) => Direction::In,
            0x5e | 0x16 | 0x17 => Direction::In,
            0x5f => Direction::Out(u32::from_be_bytes(cdb[5..9].try_into().expect("4")) as usize),
            0x9e if matches!(cdb[1] & 0x1f, 0x10 | 0x12) => Direction::In,
            0x84 => Direction::In,
            0x83 => Direction::Out(u32::from_be_bytes(cdb[10..14].try_into().expect("4")) as usize),
            _ => Direction::Unsupported,
        }
    }

    /// Runs `cdb` for `host` with `data` (Data-Out); the outcome.
    pub async fn execute(&self, host: &HostId, cdb: &[u8], data: Bytes) -> Outcome {
        // A pending unit attention fails the nexus's next command but INQUIRY, REPORT LUNS and
        // REQUEST SENSE, once (SAM-5 section 5.14).
        if self.attention.load(Ordering::Acquire) && !matches!(cdb[0], 0x12 | 0xa0 | 0x03) {
            let mut ua = self.attentions.lock();
            let s = ua.get_mut(host).and_then(VecDeque::pop_front);
            if ua.values().all(VecDeque::is_empty) {
                self.attention.store(false, Ordering::Release);
            }
            if let Some(s) = s {
                return Outcome::check(s);
            }
        }
        // RESERVE(6) / RELEASE(6) (SPC-2 section 7.21-7.22): another nexus's reservation
        // refuses everything but INQUIRY, REPORT LUNS, REQUEST SENSE and RELEASE.
        {
            let mut r = self.reserved6.lock();
            match cdb[0] {
                0x16 => {
                    if r.is_some_and(|h| h != *host) {
                        return conflict();
                    }
                    *r = Some(*host);
                    return Outcome::good(Bytes::new());
                }
                0x17 => {
                    if *r == Some(*host) {
                        *r = None;
                    }
                    return Outcome::good(Bytes::new());
                }
                0x12 | 0xa0 | 0x03 => {}
                _ if r.is_some_and(|h| h != *host) => return conflict(),
                _ => {}
            }
        }
        let dl = data.len();
        let o = match self.run(host, cdb, data).await {
            Ok(o) => o,
            Err(o) => o,
        };
        tracing::trace!(opcode = cdb[0], data = dl, status = o.status, sense = ?o.sense, "SCSI command");
        o
    }

    /// The I_T nexus `host` ended (logout, connection loss): its RESERVE(6) goes.
    pub fn nexus_lost(&self, host: &HostId) {
        let mut r = self.reserved6.lock();
        if *r == Some(*host) {
            *r = None;
        }
        self.attentions.lock().remove(host);
        self.copies.lock().retain(|(h, _), _| h != host);
    }

    /// The I_T nexus `host` logged in: it gets the LU's unit attentions from now on.
    pub fn nexus_joined(&self, host: &HostId) {
        self.attentions.lock().entry(*host).or_default();
    }

    /// Sets this node's asymmetric access state for the LU (the path's role). A change gives
    /// every logged-in nexus ASYMMETRIC ACCESS STATE CHANGED (SPC-4 section 5.16.2.5), so hosts
    /// ask REPORT TARGET PORT GROUPS again and move their I/O to the optimized path.
    pub fn set_alua(&self, state: u8) {
        if self.alua.swap(state, Ordering::AcqRel) != state {
            self.raise(Sense::ALUA_CHANGED);
        }
    }

    /// Sets the other nodes' target port groups and states (`(group, state)`, this node's own
    /// group left out); a change is announced like a change of this node's state.
    pub fn set_peer_groups(&self, mut groups: Vec<(u16, u8)>) {
        groups.retain(|(g, _)| *g != self.group);
        groups.sort_unstable();
        let changed = {
            let mut p = self.peers.write();
            let changed = *p != groups;
            *p = groups;
            changed
        };
        if changed {
            self.raise(Sense::ALUA_CHANGED);
        }
    }

    /// This node's asymmetric access state for the LU.
    pub fn alua_state(&self) -> u8 {
        self.alua.load(Ordering::Acquire)
    }

    /// The LU grew: every logged-in nexus gets CAPACITY DATA HAS CHANGED on its next
    /// command (SPEC §2: hosts learn the new size).
    pub fn capacity_changed(&self) {
        self.raise(Sense::CAPACITY_CHANGED);
    }

    /// Gives every logged-in nexus unit attention `s` (once: an attention already pending is
    /// not queued twice).
    fn raise(&self, s: Sense) {
        let mut ua = self.attentions.lock();
        for q in ua.values_mut() {
            if !q.contains(&s) {
                q.push_back(s);
            }
        }
        if !ua.is_empty() {
            self.attention.store(true, Ordering::Release);
        }
    }

    /// A LUN or target reset through this node (SAM-5 section 6.3): the RESERVE(6) reservation
    /// goes and every nexus of the LU, the one that asked included, gets BUS DEVICE RESET
    /// FUNCTION OCCURRED, on this node and (through [`Lun::pass_attentions_on`]) on every other
    /// node; returns when all have it, so the host's next command on any path sees it.
    pub async fn reset(&self) {
        self.reset_here();
        self.pass_on(Sense::RESET_OCCURRED, Vec::new()).await;
    }

    /// Passes unit attention `s` for `hosts` (empty: every nexus) on to the other nodes.
    async fn pass_on(&self, s: Sense, hosts: Vec<HostId>) {
        let pass_on = self.elsewhere.read().clone();
        if let Some(pass_on) = pass_on {
            pass_on(s.asc, s.ascq, hosts).await;
        }
    }

    /// Gives the nexuses of `hosts` logged in here unit attention `s`.
    fn raise_for(&self, hosts: &[HostId], s: Sense) {
        let mut ua = self.attentions.lock();
        let mut any = false;
        for h in hosts {
            if let Some(q) = ua.get_mut(h) {
                if !q.contains(&s) {
                    q.push_back(s);
                }
                any = true;
            }
        }
        if any {
            self.attention.store(true, Ordering::Release);
        }
    }

    fn reset_here(&self) {
        *self.reserved6.lock() = None;
        self.raise(Sense::RESET_OCCURRED);
    }

    /// Another node passed on unit attention `(asc, ascq)` for the LU: the nexuses of `hosts`
    /// here get it, every nexus when `hosts` is empty (after a reset there, as after one here:
    /// RESERVE(6) goes too).
    pub fn attention_from_elsewhere(&self, asc: u8, ascq: u8, hosts: &[HostId]) {
        let s = Sense::unit_attention(asc, ascq);
        let reset = Sense::RESET_OCCURRED;
        match ((asc, ascq) == (reset.asc, reset.ascq), hosts.is_empty()) {
            (true, _) => self.reset_here(),
            (false, true) => self.raise(s),
            (false, false) => self.raise_for(hosts, s),
        }
    }

    fn check_lba(&self, (lba, count): (u64, u64)) -> Result<(), Outcome> {
        match lba.checked_add(count) {
            Some(end) if end <= self.blocks() => Ok(()),
            _ => Err(Outcome::check(Sense::LBA_OUT_OF_RANGE)),
        }
    }

    async fn read(&self, host: &HostId, lba: u64, n: u64) -> Result<Bytes, Outcome> {
        let op = Op::Read {
            lba: Lba(lba),
            count: BlockCount(n),
        };
        self.io(host, op).await
    }

    async fn io(&self, host: &HostId, op: Op) -> Result<Bytes, Outcome> {
        self.dev.submit(host, op).await.map_err(|e| from_block(&e))
    }

    async fn rw(
        &self,
        host: &HostId,
        write: bool,
        lba: u64,
        count: u64,
        protect: u8,
        data: Bytes,
    ) -> Result<Outcome, Outcome> {
        if protect != 0 {
            // No protection information on these volumes.
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        self.check_lba((lba, count))?;
        if count == 0 {
            return Ok(Outcome::good(Bytes::new()));
        }
        let bs = self.block_size();
        if count * bs > MAX_SPLIT_BYTES {
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        // Transfers beyond the device's maximum (which VPD page B0h reports, and which hosts
        // such as Linux follow) run as several device I/Os, in order: SCSI makes no promise
        // that a multi-block write is atomic.
        let chunk = self.max_transfer_blocks().max(1);
        if write {
            // The initiator may send less than the CDB asks (iSCSI EDTL below the transfer
            // length): only the whole blocks it sent are written; the connection reports the
            // overflow residual (RFC 7143 section 11.4.5).
            let whole = (data.len() as u64 / bs).min(count);
            if whole == 0 {
                // Nothing to write, but access is checked as for a write (a reservation
                // holder's exclusion applies to it too): a flush counts as one.
                self.io(host, Op::Flush).await?;
                return Ok(Outcome::good(Bytes::new()));
            }
            let mut done = 0;
            while done < whole {
                let n = chunk.min(whole - done);
                let data = data.slice((done * bs) as usize..((done + n) * bs) as usize);
                self.io(
                    host,
                    Op::Write {
                        lba: Lba(lba + done),
                        data,
                    },
                )
                .await?;
                done += n;
            }
            Ok(Outcome::good(Bytes::new()))
        } else if count <= chunk {
            Ok(Outcome::good(self.read(host, lba, count).await?))
        } else {
            let mut out = BytesMut::with_capacity((count * bs) as usize);
            let mut done = 0;
            while done < count {
                let n = chunk.min(count - done);
                out.extend_from_slice(&self.read(host, lba + done, n).await?);
                done += n;
            }
            Ok(Outcome::good(out.freeze()))
        }
    }

    async fn run(&self, host: &HostId, cdb: &[u8], data: Bytes) -> Result<Outcome, Outcome> {
        let u16at = |i: usize| u64::from(u16::from_be_bytes([cdb[i], cdb[i + 1]]));
        let u32at = |i: usize| u64::from(u32::from_be_bytes(cdb[i..i + 4].try_into().expect("4")));
        let u64at = |i: usize| u64::from_be_bytes(cdb[i..i + 8].try_into().expect("8"));
        let alloc = |n: u64, d: Vec<u8>| {
            let len = d.len().min(n as usize);
            Outcome::good(Bytes::from(d).slice(..len))
        };
        let protect = |c: &[u8]| c[1] >> 5;
        // The range of a 10-byte CDB (LBA at 2, 16-bit length at 7) or a 16-byte one (LBA at
        // 2, 32-bit length at 10), by the CDB's group.
        let range_10_16 = || {
            if cdb[0] >> 5 == 1 {
                (u32at(2), u16at(7))
            } else {
                (u64at(2), u32at(10))
            }
        };
        match cdb[0] {
            0x00 => Ok(Outcome::good(Bytes::new())), // TEST UNIT READY
            0x03 => {
                // REQUEST SENSE: nothing pending.
                let s = Sense::new(0, 0, 0).encode();
                let mut s = s.to_vec();
                s[0] = 0x70;
                Ok(alloc(u64::from(cdb[4]), s))
            }
            0x12 => self.inquiry(cdb).map(|d| alloc(u16at(3), d)),
            0x25 => {
                // READ CAPACITY (10)
                let last = self.blocks() - 1;
                let mut d = Vec::with_capacity(8);
                d.put_u32(last.min(0xffff_ffff) as u32);
                d.put_u32(self.block_size() as u32);
                Ok(Outcome::good(Bytes::from(d)))
            }
            0x9e if cdb[1] & 0x1f == 0x10 => {
                // READ CAPACITY (16)
                let mut d = vec![0u8; 32];
                d[..8].copy_from_slice(&(self.blocks() - 1).to_be_bytes());
                d[8..12].copy_from_slice(&(self.block_size() as u32).to_be_bytes());
                // 4096-byte physical blocks.
                d[13] = (4096 / self.block_size()).trailing_zeros() as u8;
                d[14] = 0xc0; // LBPME, LBPRZ
                Ok(alloc(u32at(10), d))
            }
            0x08 => {
                let lba = u64::from(u32::from_be_bytes([0, cdb[1] & 0x1f, cdb[2], cdb[3]]));
                let n = if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) };
                self.rw(host, false, lba, n, 0, data).await
            }
            0x0a => {
                let lba = u64::from(u32::from_be_bytes([0, cdb[1] & 0x1f, cdb[2], cdb[3]]));
                let n = if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) };
                self.rw(host, true, lba, n, 0, data).await
            }
            0x28 => {
                self.rw(host, false, u32at(2), u16at(7), protect(cdb), data)
                    .await
            }
            0xa8 => {
                self.rw(host, false, u32at(2), u32at(6), protect(cdb), data)
                    .await
            }
            0x88 => {
                self.rw(host, false, u64at(2), u32at(10), protect(cdb), data)
                    .await
            }
            0x2a | 0x2e => {
                self.rw(host, true, u32at(2), u16at(7), protect(cdb), data)
                    .await
            }
            0xaa | 0xae => {
                self.rw(host, true, u32at(2), u32at(6), protect(cdb), data)
                    .await
            }
            0x8a | 0x8e => {
                self.rw(host, true, u64at(2), u32at(10), protect(cdb), data)
                    .await
            }
            0x2f => self.verify(host, cdb, u32at(2), u16at(7), data).await,
            0xaf => self.verify(host, cdb, u32at(2), u32at(6), data).await,
            0x8f => self.verify(host, cdb, u64at(2), u32at(10), data).await,
            0x35 | 0x91 => {
                // SYNCHRONIZE CACHE: writes are durable when acknowledged.
                self.check_lba(range_10_16())?;
                self.io(host, Op::Flush).await?;
                Ok(Outcome::good(Bytes::new()))
            }
            0x42 => self.unmap(host, cdb, data).await,
            0x41 => self.write_same(host, cdb, u32at(2), u16at(7), data).await,
            0x93 => self.write_same(host, cdb, u64at(2), u32at(10), data).await,
            0x89 => self.compare_and_write(host, cdb, data).await,
            0x1a | 0x5a => self.mode_sense(cdb),
            0x15 | 0x55 => Ok(Outcome::good(Bytes::new())), // MODE SELECT: nothing changeable
            0xa0 => {
                // REPORT LUNS: LUN 0 only.
                let mut d = vec![0u8; 16];
                d[3] = 8;
                if u32at(6) < 16 {
                    return Err(Outcome::check(Sense::INVALID_FIELD));
                }
                Ok(alloc(u32at(6), d))
            }
            0x1b | 0x1e => Ok(Outcome::good(Bytes::new())), // START STOP UNIT, PREVENT ALLOW
            0x5e => Ok(crate::pr::outcome(
                crate::pr::reserve_in(&*self.dev, *host, cdb).await,
                u16at(7) as usize,
            )),
            0x5f => {
                let notices = crate::pr::reserve_out(&*self.dev, *host, cdb, &data).await?;
                // The registrants told are nexuses here or on other nodes.
                for n in notices {
                    self.raise_for(&n.hosts, n.sense);
                    self.pass_on(n.sense, n.hosts).await;
                }
                Ok(Outcome::good(Bytes::new()))
            }
            0x34 | 0x90 => {
                // PRE-FETCH: everything is as fast as it gets; GOOD for a valid range.
                self.check_lba(range_10_16())?;
                Ok(Outcome::good(Bytes::new()))
            }
            0x37 => {
                // READ DEFECT DATA (10): an empty list in the requested format.
                let d = vec![0, cdb[2] & 0x1f, 0, 0];
                Ok(alloc(u16at(7), d))
            }
            0xb7 => {
                let d = vec![0, cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0];
                Ok(alloc(u32at(6), d))
            }
            0xa3 if cdb[1] & 0x1f == 0x0c => {
                crate::opcodes::report(cdb).map(|d| alloc(u32at(6), d))
            }
            0xa3 if cdb[1] & 0x1f == 0x0a => Ok(alloc(u32at(6), self.report_groups(cdb))),
            0x9e if cdb[1] & 0x1f == 0x12 => self.get_lba_status(cdb),
            0x83 => self.extended_copy(host, cdb, data).await,
            0x84 => self.receive_copy_results(host, cdb),
            _ => Err(Outcome::check(Sense::INVALID_OPCODE)),
        }
    }
}

/// The most bytes one READ or WRITE may move (the connection's largest write; transfers
/// beyond the device's own maximum are split).
pub const MAX_SPLIT_BYTES: u64 = crate::MAX_WRITE as u64;
/// The most blocks one UNMAP descriptor or WRITE SAME may cover.
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
/// The most blocks one COMPARE AND WRITE may cover.
pub const MAX_CAW_BLOCKS: u8 = 128;
/// The most descriptors in one UNMAP.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
