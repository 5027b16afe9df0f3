//! A small NVMe/TCP host for tests and benchmarks: discovery, connect (admin and I/O queues),
//! Identify, read/write/any command at any queue depth, digests, SQ flow control on or off.
//!
//! A [`HostQueue`] is one connection owned by one task: [`HostQueue::submit`] queues commands,
//! [`HostQueue::next`] sends what is queued and returns the next completion (answering R2Ts on
//! the way). That keeps many commands in flight with one task and few system calls, like
//! SPDK's perf tool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::capsule::{Cqe, Sqe, SGL_INCAPSULE, SGL_TRANSPORT};
use crate::pdu::{Decoder, Digests, Encoder, IcReq, Pdu, PduError};
use crate::spec::{admin_op, cns, fctype, feat, io_op, log_id, prop, DISCOVERY_NQN};
use crate::status::Status;

/// Why a host operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The target sent a malformed PDU.
    #[error("malformed PDU from the target: {0}")]
    Pdu(#[from] PduError),
    /// The command completed with an error status.
    #[error("command failed: {status} (dw0 {dw0:#x})")]
    Status {
        /// The status.
        status: Status,
        /// Completion dword 0.
        dw0: u32,
    },
    /// The target terminated the connection.
    #[error("target terminated the connection: FES {fes:#x} FEI {fei}")]
    Terminated {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// The target broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection closed.
    #[error("connection closed by the target")]
    Closed,
}

/// Host identity and connection options.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Host NQN.
    pub hostnqn: String,
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Digests to request.
    pub digests: Digests,
    /// Keep-alive timeout asked for in Connect (admin queue).
    pub kato: Duration,
    /// Ask the target to disable SQ flow control (C2HData SUCCESS optimisation).
    pub disable_sqflow: bool,
    /// I/O queue size.
    pub queue_size: u16,
    /// Busy-poll the sockets instead of sleeping (like SPDK's perf; for benchmarks).
    pub poll: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001".into(),
            hostid: [1; 16],
            digests: Digests::default(),
            kato: Duration::from_secs(5),
            disable_sqflow: false,
            queue_size: 128,
            poll: false,
        }
    }
}

/// A completed command.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The completion queue entry.
    pub cqe: Cqe,
    /// Data the controller returned.
    pub data: Bytes,
}

impl Completion {
    /// `Ok(self)` for a successful status, an error otherwise.
    pub fn ok(self) -> Result<Self, InitiatorError> {
        if self.cqe.status.is_success() {
            Ok(self)
        } else {
            Err(InitiatorError::Status {
                status: self.cqe.status,
                dw0: self.cqe.dw0,
            })
        }
    }
}

struct Pending {
    out: Option<Bytes>,
    input: BytesMut,
}

/// One queue (one TCP connection).
pub struct HostQueue {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    dec: Decoder,
    enc: Encoder,
    pending: HashMap<u16, Pending>,
    next_cid: u16,
    in_capsule: usize,
    maxh2cdata: u32,
    /// Queue id after Connect.
    pub qid: u16,
    /// Busy-poll the socket.
    pub poll: bool,
    scratch: Vec<u8>,
}

impl HostQueue {
    /// Opens a connection and performs the ICReq/ICResp exchange.
    pub async fn open(addr: SocketAddr, digests: Digests) -> Result<Self, InitiatorError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut q = Self {
            stream,
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf: BytesMut::new(),
            dec: Decoder::new(crate::pdu::IC_HLEN),
            enc: Encoder::default(),
            pending: HashMap::new(),
            next_cid: 0,
            in_capsule: 8192,
            maxh2cdata: 0,
            qid: 0,
            poll: false,
            scratch: Vec::new(),
        };
        let dgst = digests.header as u8 | ((digests.data as u8) << 1);
        Encoder::ic_req(
            &mut q.wbuf,
            &IcReq {
                pfv: 0,
                hpda: 0,
                dgst,
                maxr2t: 0,
            },
        );
        q.send().await?;
        match q.read_pdu().await? {
            Pdu::IcResp(r) => {
                if r.dgst != dgst {
                    return Err(InitiatorError::Protocol("digests not granted".into()));
                }
                q.maxh2cdata = r.maxh2cdata;
                q.enc = Encoder {
                    digests,
                    pda: r.cpda,
                };
                q.dec = Decoder {
                    digests,
                    max_pdu: 64 << 20,
                    connected: true,
                };
                Ok(q)
            }
            p => Err(InitiatorError::Protocol(format!(
                "expected ICResp, got {p:?}"
            ))),
        }
    }

    /// Sends raw bytes (for tests of malformed input).
    pub async fn send_raw(&mut self, b: &[u8]) -> Result<(), InitiatorError> {
        self.stream.write_all(b).await?;
        Ok(())
    }

    /// Reads the next PDU, whatever it is (for tests).
    pub async fn read_pdu(&mut self) -> Result<Pdu, InitiatorError> {
        loop {
            if let Some(p) = self.dec.decode(&mut self.rbuf)? {
                return Ok(p);
            }
            self.rbuf.reserve(64 * 1024);
            if self.poll {
                if self.scratch.is_empty() {
                    self.scratch = vec![0; 256 * 1024];
                }
                match crate::driver::poll_read(&self.stream, &mut self.scratch, &mut self.rbuf) {
                    Ok(0) => return Err(InitiatorError::Closed),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::hint::spin_loop();
                    }
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(InitiatorError::Closed);
            }
        }
    }

    async fn send(&mut self) -> Result<(), InitiatorError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Largest in-capsule data this queue sends (from IOCCSZ once known).
    pub fn set_in_capsule(&mut self, bytes: usize) {
        self.in_capsule = bytes;
    }

    /// Abandons command `cid` here without telling the controller, and gives its id to the next
    /// command, as SPDK's host does with its Asynchronous Event Requests before it shuts a
    /// controller down.
    pub fn forget(&mut self, cid: u16) {
        self.pending.remove(&cid);
        self.next_cid = cid;
    }

    /// Sends the queued commands.
    pub async fn flush(&mut self) -> Result<(), InitiatorError> {
        self.send().await
    }

    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Queues a command; `out` is data for the controller, `in_len` the data expected back.
    /// Returns the command id it was given.
    pub fn submit(&mut self, mut sqe: Sqe, out: Option<Bytes>, in_len: u32) -> u16 {
        let mut cid = self.next_cid;
        while self.pending.contains_key(&cid) {
            cid = cid.wrapping_add(1);
        }
        self.next_cid = cid.wrapping_add(1);
        sqe.set_cid(cid);
        match &out {
            Some(d) if d.len() <= self.in_capsule => {
                sqe.set_sgl(0, d.len() as u32, SGL_INCAPSULE);
                self.enc.capsule_cmd(&mut self.wbuf, &sqe, d);
            }
            Some(d) => {
                sqe.set_sgl(0, d.len() as u32, SGL_TRANSPORT);
                self.enc.capsule_cmd(&mut self.wbuf, &sqe, &[]);
            }
            None => {
                sqe.set_sgl(0, in_len, SGL_TRANSPORT);
                self.enc.capsule_cmd(&mut self.wbuf, &sqe, &[]);
            }
        }
        let keep = out.filter(|d| d.len() > self.in_capsule);
        self.pending.insert(
            cid,
            Pending {
                out: keep,
                input: BytesMut::with_capacity(in_len as usize),
            },
        );
        cid
    }

    /// Sends what is queued and returns the next completion.
    pub async fn next(&mut self) -> Result<(u16, Completion), InitiatorError> {
        self.send().await?;
        loop {
            match self.read_pdu().await? {
                Pdu::CapsuleResp(cqe) => {
                    let p = self.pending.remove(&cqe.cid).ok_or_else(|| {
                        InitiatorError::Protocol(format!("response for unknown cid {}", cqe.cid))
                    })?;
                    return Ok((
                        cqe.cid,
                        Completion {
                            cqe,
                            data: p.input.freeze(),
                        },
                    ));
                }
                Pdu::C2HData(d) => {
                    let p = self.pending.get_mut(&d.cccid).ok_or_else(|| {
                        InitiatorError::Protocol(format!("data for unknown cid {}", d.cccid))
                    })?;
                    if !d.ddgst_ok {
                        return Err(InitiatorError::Protocol("data digest mismatch".into()));
                    }
                    if d.datao as usize != p.input.len() {
                        return Err(InitiatorError::Protocol("C2HData out of order".into()));
                    }
                    p.input.extend_from_slice(&d.data);
                    if d.success {
                        let p = self.pending.remove(&d.cccid).expect("present");
                        let cqe = Cqe {
                            dw0: 0,
                            dw1: 0,
                            sqhd: 0,
                            sqid: self.qid,
                            cid: d.cccid,
                            status: Status::SUCCESS,
                        };
                        return Ok((
                            d.cccid,
                            Completion {
                                cqe,
                                data: p.input.freeze(),
                            },
                        ));
                    }
                }
                Pdu::R2T(r) => {
                    let p = self.pending.get(&r.cccid).ok_or_else(|| {
                        InitiatorError::Protocol(format!("R2T for unknown cid {}", r.cccid))
                    })?;
                    let data = p
                        .out
                        .clone()
                        .ok_or_else(|| InitiatorError::Protocol("R2T without data".into()))?;
                    let end = (r.r2to + r.r2tl) as usize;
                    if end > data.len() {
                        return Err(InitiatorError::Protocol("R2T beyond the data".into()));
                    }
                    let mut off = r.r2to as usize;
                    let step = (self.maxh2cdata as usize).max(4096);
                    while off < end {
                        let n = step.min(end - off);
                        self.enc.data(
                            &mut self.wbuf,
                            true,
                            r.cccid,
                            r.ttag,
                            off as u32,
                            &data[off..off + n],
                            off + n == end,
                            false,
                        );
                        off += n;
                    }
                    self.send().await?;
                }
                Pdu::C2HTermReq(t) => {
                    return Err(InitiatorError::Terminated {
                        fes: t.fes,
                        fei: t.fei,
                    })
                }
                p => return Err(InitiatorError::Protocol(format!("unexpected PDU {p:?}"))),
            }
        }
    }

    /// Submits one command and waits for its completion (other completions are an error).
    pub async fn execute(
        &mut self,
        sqe: Sqe,
        out: Option<Bytes>,
        in_len: u32,
    ) -> Result<Completion, InitiatorError> {
        let cid = self.submit(sqe, out, in_len);
        loop {
            let (c, comp) = self.next().await?;
            if c == cid {
                return Ok(comp);
            }
        }
    }
}

/// Builders for commands.
pub mod cmd {
    use super::*;

    /// A command with `opcode`.
    pub fn new(opcode: u8, nsid: u32) -> Sqe {
        let mut s = Sqe::default();
        s.set_opcode(opcode);
        s.set_nsid(nsid);
        s
    }

    /// Fabrics Connect.
    pub fn connect(qid: u16, sqsize: u16, kato_ms: u32, disable_sqflow: bool) -> Sqe {
        let mut s = new(admin_op::FABRICS, 0);
        s.set_byte(4, fctype::CONNECT);
        s.set_cdw(10, (qid as u32) << 16);
        s.set_cdw(
            11,
            sqsize as u32 | if disable_sqflow { 0b100 << 16 } else { 0 },
        );
        s.set_cdw(12, kato_ms);
        s
    }

    /// Connect data: host id, controller id, subsystem NQN, host NQN.
    pub fn connect_data(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Bytes {
        let mut d = vec![0u8; 1024];
        d[0..16].copy_from_slice(&hostid);
        d[16..18].copy_from_slice(&cntlid.to_le_bytes());
        d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        d[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
        Bytes::from(d)
    }

    /// Property Get.
    pub fn property_get(offset: u32, eight: bool) -> Sqe {
        let mut s = new(admin_op::FABRICS, 0);
        s.set_byte(4, fctype::PROPERTY_GET);
        s.set_byte(40, eight as u8);
        s.set_cdw(11, offset);
        s
    }

    /// Property Set (4 bytes).
    pub fn property_set(offset: u32, value: u32) -> Sqe {
        let mut s = new(admin_op::FABRICS, 0);
        s.set_byte(4, fctype::PROPERTY_SET);
        s.set_cdw(11, offset);
        s.set_cdw(12, value);
        s
    }

    /// Fabrics Disconnect.
    pub fn disconnect() -> Sqe {
        let mut s = new(admin_op::FABRICS, 0);
        s.set_byte(4, fctype::DISCONNECT);
        s
    }

    /// Identify with `cns`.
    pub fn identify(cns: u8, nsid: u32) -> Sqe {
        let mut s = new(admin_op::IDENTIFY, nsid);
        s.set_cdw(10, cns as u32);
        s
    }

    /// Get Log Page of `len` bytes (a multiple of 4) at `offset`.
    pub fn get_log_page(lid: u8, nsid: u32, len: u32, offset: u64) -> Sqe {
        let mut s = new(admin_op::GET_LOG_PAGE, nsid);
        let numd = len / 4 - 1;
        s.set_cdw(10, lid as u32 | ((numd & 0xffff) << 16));
        s.set_cdw(11, numd >> 16);
        s.set_cdw(12, offset as u32);
        s.set_cdw(13, (offset >> 32) as u32);
        s
    }

    /// Set Features.
    pub fn set_features(fid: u8, cdw11: u32) -> Sqe {
        let mut s = new(admin_op::SET_FEATURES, 0);
        s.set_cdw(10, fid as u32);
        s.set_cdw(11, cdw11);
        s
    }

    /// Get Features.
    pub fn get_features(fid: u8, sel: u8) -> Sqe {
        let mut s = new(admin_op::GET_FEATURES, 0);
        s.set_cdw(10, fid as u32 | ((sel as u32) << 8));
        s
    }

    /// An NVM command with SLBA and NLB (1-based `nlb`).
    pub fn rw(opcode: u8, lba: u64, nlb: u32) -> Sqe {
        let mut s = new(opcode, 1);
        s.set_cdw(10, lba as u32);
        s.set_cdw(11, (lba >> 32) as u32);
        s.set_cdw(12, nlb - 1);
        s
    }

    /// Read.
    pub fn read(lba: u64, nlb: u32) -> Sqe {
        rw(io_op::READ, lba, nlb)
    }

    /// Write.
    pub fn write(lba: u64, nlb: u32) -> Sqe {
        rw(io_op::WRITE, lba, nlb)
    }
}

/// One entry of a discovery log page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address.
    pub traddr: String,
    /// Transport service id (port).
    pub trsvcid: String,
    /// Port id.
    pub portid: u16,
}

fn field_str(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// A connected controller: its admin queue and I/O queues.
pub struct HostController {
    /// Admin queue.
    pub admin: HostQueue,
    /// I/O queues (qid = index + 1).
    pub io: Vec<HostQueue>,
    /// Controller id.
    pub cntlid: u16,
    /// Identify Controller data.
    pub id_ctrl: Bytes,
}

impl HostController {
    async fn admin_connect(
        addr: SocketAddr,
        subnqn: &str,
        cfg: &HostConfig,
    ) -> Result<(HostQueue, u16), InitiatorError> {
        let mut q = HostQueue::open(addr, cfg.digests).await?;
        let c = q
            .execute(
                cmd::connect(0, 31, cfg.kato.as_millis() as u32, cfg.disable_sqflow),
                Some(cmd::connect_data(cfg.hostid, 0xffff, subnqn, &cfg.hostnqn)),
                0,
            )
            .await?
            .ok()?;
        let cntlid = c.cqe.dw0 as u16;
        // CC: EN, IOSQES 6, IOCQES 4.
        q.execute(
            cmd::property_set(prop::CC, 1 | (6 << 16) | (4 << 20)),
            None,
            0,
        )
        .await?
        .ok()?;
        let csts = q
            .execute(cmd::property_get(prop::CSTS, false), None, 0)
            .await?
            .ok()?;
        if csts.cqe.dw0 & 1 == 0 {
            return Err(InitiatorError::Protocol("controller not ready".into()));
        }
        Ok((q, cntlid))
    }

    /// Connects to `subnqn` at `addr` with `io_queues` I/O queues.
    pub async fn connect(
        addr: SocketAddr,
        subnqn: &str,
        cfg: &HostConfig,
        io_queues: u16,
    ) -> Result<Self, InitiatorError> {
        let (mut admin, cntlid) = Self::admin_connect(addr, subnqn, cfg).await?;
        let id_ctrl = admin
            .execute(cmd::identify(cns::CONTROLLER, 0), None, 4096)
            .await?
            .ok()?
            .data;
        let ioccsz = u32::from_le_bytes(id_ctrl[1792..1796].try_into().expect("4 bytes"));
        let in_capsule = (ioccsz as usize * 16).saturating_sub(64);
        let n = io_queues.saturating_sub(1) as u32;
        let granted = admin
            .execute(cmd::set_features(feat::NUM_QUEUES, n | (n << 16)), None, 0)
            .await?
            .ok()?;
        let granted = (granted.cqe.dw0 & 0xffff) as u16 + 1;
        let mut io = Vec::new();
        for qid in 1..=io_queues.min(granted) {
            let mut q = HostQueue::open(addr, cfg.digests).await?;
            q.execute(
                cmd::connect(qid, cfg.queue_size - 1, 0, cfg.disable_sqflow),
                Some(cmd::connect_data(cfg.hostid, cntlid, subnqn, &cfg.hostnqn)),
                0,
            )
            .await?
            .ok()?;
            q.qid = qid;
            q.poll = cfg.poll;
            q.set_in_capsule(in_capsule);
            io.push(q);
        }
        Ok(Self {
            admin,
            io,
            cntlid,
            id_ctrl,
        })
    }

    /// Connects to the discovery controller at `addr` and keeps the connection (a persistent
    /// discovery controller, for its log change events): its admin queue.
    pub async fn connect_discovery(
        addr: SocketAddr,
        cfg: &HostConfig,
    ) -> Result<HostQueue, InitiatorError> {
        Ok(Self::admin_connect(addr, DISCOVERY_NQN, cfg).await?.0)
    }

    /// Reads the discovery log at `addr`.
    pub async fn discover(
        addr: SocketAddr,
        cfg: &HostConfig,
    ) -> Result<Vec<DiscoveryEntry>, InitiatorError> {
        let mut c = HostConfig {
            kato: Duration::ZERO,
            ..cfg.clone()
        };
        c.disable_sqflow = false;
        let mut q = Self::connect_discovery(addr, &c).await?;
        let hdr = q
            .execute(cmd::get_log_page(log_id::DISCOVERY, 0, 1024, 0), None, 1024)
            .await?
            .ok()?
            .data;
        let numrec = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
        let len = 1024 * (1 + numrec as u32);
        let page = q
            .execute(cmd::get_log_page(log_id::DISCOVERY, 0, len, 0), None, len)
            .await?
            .ok()?
            .data;
        let _ = q.execute(cmd::disconnect(), None, 0).await;
        Ok((0..numrec as usize)
            .map(|i| {
                let e = &page[1024 * (i + 1)..1024 * (i + 2)];
                DiscoveryEntry {
                    subnqn: field_str(&e[256..512]),
                    traddr: field_str(&e[512..768]),
                    trsvcid: field_str(&e[32..64]),
                    portid: u16::from_le_bytes([e[4], e[5]]),
                }
            })
            .collect())
    }

    /// Identify Namespace 1: (size in blocks, block size).
    pub async fn namespace(&mut self) -> Result<(u64, u32), InitiatorError> {
        let d = self
            .admin
            .execute(cmd::identify(cns::NAMESPACE, 1), None, 4096)
            .await?
            .ok()?
            .data;
        let nsze = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
        let lbaf = u32::from_le_bytes(d[128..132].try_into().expect("4 bytes"));
        Ok((nsze, 1 << ((lbaf >> 16) & 0xff)))
    }

    /// Reads `nlb` blocks at `lba` on I/O queue `q`.
    pub async fn read(
        &mut self,
        q: usize,
        lba: u64,
        nlb: u32,
        bs: u32,
    ) -> Result<Bytes, InitiatorError> {
        Ok(self.io[q]
            .execute(cmd::read(lba, nlb), None, nlb * bs)
            .await?
            .ok()?
            .data)
    }

    /// Writes `data` at `lba` on I/O queue `q`.
    pub async fn write(
        &mut self,
        q: usize,
        lba: u64,
        data: Bytes,
        bs: u32,
    ) -> Result<(), InitiatorError> {
        let nlb = (data.len() / bs as usize) as u32;
        self.io[q]
            .execute(cmd::write(lba, nlb), Some(data), 0)
            .await?
            .ok()?;
        Ok(())
    }

    /// Sends Disconnect on every queue.
    pub async fn disconnect(mut self) -> Result<(), InitiatorError> {
        for q in &mut self.io {
            q.execute(cmd::disconnect(), None, 0).await?.ok()?;
        }
        self.admin.execute(cmd::disconnect(), None, 0).await?.ok()?;
        Ok(())
    }
}
