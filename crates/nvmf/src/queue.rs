//! The queue-pair state machine: one TCP connection, i.e. one NVMe queue (admin or I/O). It does
//! no I/O: the driver feeds it decoded PDUs, I/O completions and wake-ups, and it appends PDUs to
//! send, I/O requests to run and a close decision to an [`Output`].
//!
//! ```text
//!  AwaitIcReq ──ICReq──> AwaitConnect ──Connect ok──> Live ──Disconnect / fatal PDU /
//!      │                      │                        │     controller failed──> Closed
//!      └── any other PDU ─────┴── malformed PDU ───────┴──────────────────────────> Closed
//! ```
//!
//! Data flow of a command (TCP 1.0 section 3.3): host-to-controller data comes in the capsule
//! (SGL 01h) or after our R2T in H2CData PDUs (SGL 5Ah); controller-to-host data goes out in one
//! C2HData PDU, followed by a response capsule unless the host disabled SQ flow control, in
//! which case the C2HData carries the SUCCESS flag instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use alcubierre_block::{BlockDevice, BlockError, HostId, Op, ResvCommand};
use alcubierre_types::{BlockCount, Lba};
use bytes::{Bytes, BytesMut};

use crate::capsule::{Cqe, Sqe, SGL_INCAPSULE, SGL_TRANSPORT};
use crate::controller::Controller;
use crate::pdu::{
    DataPdu, Decoder, Digests, Encoder, IcResp, Pdu, PduError, R2t, TermReq, CMD_HLEN,
};
use crate::spec::{admin_op, fctype, fes};
use crate::status::Status;
use crate::subsystem::Portal;
use crate::target::Target;

/// What an I/O request asks of the device.
#[derive(Clone, Debug)]
pub enum IoKind {
    /// One block operation.
    Op(Op),
    /// Deallocate ranges.
    Unmap {
        /// The ranges.
        ranges: Vec<(Lba, BlockCount)>,
    },
    /// A reservation command; a Reservation Report's data structure is `report`'s.
    Reserve {
        /// The controller it came through.
        cntlid: u16,
        /// The command.
        cmd: ResvCommand,
        /// For a report: extended (128-bit host ids) or not, and the bytes to return.
        report: Option<(bool, usize)>,
    },
}

/// An I/O the driver must run on `device`, then report with [`QueuePair::io_done`].
pub struct IoRequest {
    /// The command id to report back.
    pub cid: u16,
    /// The namespace's device.
    pub device: Arc<dyn BlockDevice>,
    /// The host that asks (its reservations apply).
    pub host: HostId,
    /// What to do.
    pub kind: IoKind,
}

impl IoRequest {
    /// Runs the request on its device (the driver's one line of I/O).
    pub fn run(self) -> futures::future::BoxFuture<'static, (u16, Result<Bytes, BlockError>)> {
        use futures::FutureExt;
        let (cid, d, host) = (self.cid, self.device, self.host);
        match self.kind {
            IoKind::Op(op) => d.submit(&host, op).map(move |r| (cid, r)).boxed(),
            IoKind::Unmap { ranges } => {
                let futs: Vec<_> = ranges
                    .into_iter()
                    .map(|(lba, count)| d.submit(&host, Op::Unmap { lba, count }))
                    .collect();
                futures::future::join_all(futs)
                    .map(move |rs| {
                        let first_error = rs.into_iter().find(Result::is_err);
                        (cid, first_error.unwrap_or(Ok(Bytes::new())))
                    })
                    .boxed()
            }
            IoKind::Reserve {
                cntlid,
                cmd,
                report,
            } => d
                .reserve(host, cntlid, cmd)
                .map(move |r| {
                    let r = r.map(|state| match report {
                        Some((eds, len)) => {
                            let mut b = crate::resv_report::reservation_status(&state, eds);
                            b.resize(len, 0);
                            Bytes::from(b)
                        }
                        None => Bytes::new(),
                    });
                    (cid, r)
                })
                .boxed(),
        }
    }
}

/// What the driver must do after a call into the state machine.
#[derive(Default)]
pub struct Output {
    /// Bytes to send, in order.
    pub bytes: BytesMut,
    /// I/O to start.
    pub ios: Vec<IoRequest>,
    /// Close the connection after sending `bytes`, for this reason.
    pub close: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitIcReq,
    AwaitConnect,
    Live,
    Closed,
}

/// A command waiting for H2CData.
struct AwaitData {
    sqe: Box<Sqe>,
    buf: BytesMut,
    len: u32,
    digest_failed: bool,
}

enum Inflight {
    Data(AwaitData),
    /// Running on the device; `compare` holds the data of a Compare.
    Io {
        compare: Option<Bytes>,
        xfer: u32,
    },
    /// Answered later by something other than the device (an Asynchronous Event Request).
    Held,
}

/// A successful completion: dwords 0/1 and data for the host.
#[derive(Default)]
pub(crate) struct Resp {
    pub dw0: u32,
    pub dw1: u32,
    pub data: Option<Bytes>,
}

impl Resp {
    pub fn dw0(v: u32) -> Self {
        Self {
            dw0: v,
            ..Self::default()
        }
    }
    /// Data for the host: a built structure (`Vec<u8>`) or device data (`Bytes`, not copied).
    pub fn data(d: impl Into<Bytes>) -> Self {
        Self {
            data: Some(d.into()),
            ..Self::default()
        }
    }
}

/// The outcome of a command: now (`Ok(Some)`, `Err`) or later (`Ok(None)`).
pub(crate) type CmdResult = Result<Option<Resp>, (Status, u32)>;

pub(crate) fn fail(s: Status) -> CmdResult {
    Err((s, 0))
}

/// One queue pair.
pub struct QueuePair {
    pub(crate) target: Arc<Target>,
    /// The address the host reached this connection by (discovery log fallback).
    pub(crate) local: Portal,
    phase: Phase,
    pub(crate) ctrl: Option<Arc<Controller>>,
    pub(crate) qid: u16,
    sqsize: u16,
    sqhd: u16,
    sqflow_disabled: bool,
    dec: Decoder,
    enc: Encoder,
    inflight: HashMap<u16, Inflight>,
    pending_close: Option<String>,
}

impl QueuePair {
    /// A new connection accepted on `local`.
    pub fn new(target: Arc<Target>, local: Portal) -> Self {
        Self {
            target,
            local,
            phase: Phase::AwaitIcReq,
            ctrl: None,
            qid: 0,
            sqsize: 0,
            sqhd: 0,
            sqflow_disabled: false,
            dec: Decoder::new(crate::pdu::IC_HLEN),
            enc: Encoder::default(),
            inflight: HashMap::new(),
            pending_close: None,
        }
    }

    /// The decoder for the bytes this connection receives.
    pub fn decoder(&self) -> &Decoder {
        &self.dec
    }

    /// The controller, once connected.
    pub fn controller(&self) -> Option<&Arc<Controller>> {
        self.ctrl.as_ref()
    }

    /// The queue id, once connected.
    pub fn qid(&self) -> Option<u16> {
        (self.phase == Phase::Live).then_some(self.qid)
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Commands in flight (received, not completed).
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// When the driver must call [`QueuePair::wake`] even if nothing arrives (keep-alive expiry;
    /// admin queue only).
    pub fn deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Live || self.qid != 0 {
            return None;
        }
        self.ctrl.as_ref()?.keep_alive_deadline()
    }

    fn close(&mut self, out: &mut Output, reason: String) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            out.close = Some(reason);
        }
    }

    /// A PDU the decoder rejected: send a C2HTermReq and close (TCP 1.0 section 3.6.2.4).
    pub fn decode_error(&mut self, e: PduError, out: &mut Output) {
        if self.phase == Phase::Closed {
            return;
        }
        Encoder::term_req(
            &mut out.bytes,
            true,
            &TermReq {
                fes: e.fes,
                fei: e.fei,
                data: e.header.clone(),
            },
        );
        self.close(out, format!("malformed PDU: {e}"));
    }

    fn fatal(&mut self, out: &mut Output, fes: u16, fei: u32, reason: &'static str) {
        self.decode_error(
            PduError {
                fes,
                fei,
                reason,
                header: Bytes::new(),
            },
            out,
        );
    }

    /// The connection is gone (closed by either side): release what it held.
    pub fn shutdown(&mut self) {
        self.phase = Phase::Closed;
        if let Some(c) = self.ctrl.take() {
            if self.qid == 0 {
                c.fail("admin queue closed");
                self.target.unregister_controller(c.cntlid);
            } else {
                c.inner.lock().connected_qids.retain(|q| *q != self.qid);
            }
        }
    }

    /// Handles one decoded PDU.
    pub fn receive(&mut self, pdu: Pdu, now: Instant, out: &mut Output) {
        if self.phase == Phase::Closed {
            return;
        }
        match pdu {
            Pdu::IcReq(r) => {
                if r.pfv != 0 {
                    return self.fatal(out, fes::INVALID_HEADER_FIELD, 8, "unsupported PFV");
                }
                if r.hpda > 31 {
                    return self.fatal(out, fes::INVALID_HEADER_FIELD, 10, "HPDA out of range");
                }
                let digests = Digests {
                    header: r.dgst & 1 != 0,
                    data: r.dgst & 2 != 0,
                };
                Encoder::ic_resp(
                    &mut out.bytes,
                    &IcResp {
                        pfv: 0,
                        cpda: 0,
                        dgst: r.dgst & 3,
                        maxh2cdata: self.target.config.max_h2c_data,
                    },
                );
                let cfg = &self.target.config;
                let max_data = cfg.in_capsule_data.max(cfg.max_h2c_data).max(8192) as usize;
                self.dec = Decoder {
                    digests,
                    max_pdu: CMD_HLEN + 4 + 128 + max_data + 4,
                    connected: true,
                };
                self.enc = Encoder {
                    digests,
                    pda: r.hpda,
                };
                self.phase = Phase::AwaitConnect;
            }
            Pdu::CapsuleCmd {
                sqe,
                data,
                ddgst_ok,
            } => self.capsule(sqe, data, ddgst_ok, now, out),
            Pdu::H2CData(d) => self.h2c_data(d, now, out),
            Pdu::H2CTermReq(t) => {
                self.close(
                    out,
                    format!("host terminated the connection (FES {:#x})", t.fes),
                );
            }
            Pdu::IcResp(_)
            | Pdu::C2HTermReq(_)
            | Pdu::CapsuleResp(_)
            | Pdu::C2HData(_)
            | Pdu::R2T(_) => self.fatal(
                out,
                fes::INVALID_HEADER_FIELD,
                0,
                "controller-to-host PDU type sent by the host",
            ),
        }
    }

    fn complete(&mut self, out: &mut Output, cid: u16, r: CmdResult, xfer: u32) {
        self.complete_at(out, cid, r, xfer, None);
    }

    /// Completes a command; an error goes into the controller's error log with `at` (the
    /// namespace and LBA of a media error).
    fn complete_at(
        &mut self,
        out: &mut Output,
        cid: u16,
        r: CmdResult,
        xfer: u32,
        at: Option<(u32, u64)>,
    ) {
        let Some(result) = r.transpose() else {
            return;
        };
        match result {
            Ok(resp) => {
                if let Some(mut data) = resp.data {
                    data.truncate(xfer as usize);
                    if !data.is_empty() {
                        let success = self.sqflow_disabled;
                        self.enc
                            .data(&mut out.bytes, false, cid, 0, 0, &data, true, success);
                        if success {
                            return;
                        }
                    }
                }
                self.respond(out, cid, Status::SUCCESS, resp.dw0, resp.dw1);
            }
            Err((status, dw0)) => {
                if let Some(c) = &self.ctrl {
                    c.inner.lock().log_error(self.qid, cid, status, at);
                }
                self.respond(out, cid, status, dw0, 0);
            }
        }
    }

    fn respond(&mut self, out: &mut Output, cid: u16, status: Status, dw0: u32, dw1: u32) {
        let sqhd = if self.sqflow_disabled { 0 } else { self.sqhd };
        self.enc.capsule_resp(
            &mut out.bytes,
            &Cqe {
                dw0,
                dw1,
                sqhd,
                sqid: self.qid,
                cid,
                status,
            },
        );
    }

    fn capsule(
        &mut self,
        sqe: Box<Sqe>,
        data: Bytes,
        ddgst_ok: bool,
        now: Instant,
        out: &mut Output,
    ) {
        let cid = sqe.cid();
        if self.sqsize > 0 {
            self.sqhd = (self.sqhd + 1) % (self.sqsize + 1);
        }
        if self.inflight.contains_key(&cid) && !self.retire_aer(cid) {
            return self.respond(out, cid, Status::CID_CONFLICT, 0, 0);
        }
        if !ddgst_ok {
            return self.respond(out, cid, Status::TRANSIENT_TRANSPORT, 0, 0);
        }
        let dir = direction(&sqe);
        let len = sqe.sgl_len();
        match sqe.sgl_id() {
            SGL_INCAPSULE => {
                if data.len() != len as usize || sqe.sgl_addr() != 0 {
                    return self.respond(out, cid, Status::SGL_LENGTH_INVALID, 0, 0);
                }
                if dir != Dir::H2C && len > 0 {
                    return self.respond(out, cid, Status::INVALID_FIELD, 0, 0);
                }
                self.dispatch(sqe, data, len, now, out)
            }
            SGL_TRANSPORT => {
                if !data.is_empty() {
                    return self.respond(out, cid, Status::SGL_LENGTH_INVALID, 0, 0);
                }
                if dir == Dir::H2C && len > 0 {
                    if len > self.target.config.max_transfer().max(8192) {
                        return self.respond(out, cid, Status::INVALID_FIELD, 0, 0);
                    }
                    if self.phase != Phase::Live {
                        return self.respond(out, cid, Status::SEQUENCE_ERROR, 0, 0);
                    }
                    self.enc.r2t(
                        &mut out.bytes,
                        &R2t {
                            cccid: cid,
                            ttag: cid,
                            r2to: 0,
                            r2tl: len,
                        },
                    );
                    self.inflight.insert(
                        cid,
                        Inflight::Data(AwaitData {
                            sqe,
                            buf: BytesMut::with_capacity(len as usize),
                            len,
                            digest_failed: false,
                        }),
                    );
                } else {
                    self.dispatch(sqe, Bytes::new(), len, now, out)
                }
            }
            _ if len == 0 && data.is_empty() => self.dispatch(sqe, Bytes::new(), 0, now, out),
            _ => self.respond(out, cid, Status::SGL_TYPE_INVALID, 0, 0),
        }
    }

    fn h2c_data(&mut self, d: DataPdu, now: Instant, out: &mut Output) {
        let Some(Inflight::Data(w)) = self.inflight.get_mut(&d.cccid) else {
            return self.fatal(out, fes::INVALID_HEADER_FIELD, 8, "H2CData for no R2T");
        };
        if d.ttag != d.cccid {
            return self.fatal(
                out,
                fes::INVALID_HEADER_FIELD,
                10,
                "H2CData with a wrong TTAG",
            );
        }
        if d.datao as usize != w.buf.len() || d.datao as u64 + d.data.len() as u64 > w.len as u64 {
            return self.fatal(out, fes::DATA_OUT_OF_RANGE, 12, "H2CData outside the R2T");
        }
        if d.data.len() > self.target.config.max_h2c_data as usize {
            return self.fatal(
                out,
                fes::DATA_LIMIT_EXCEEDED,
                16,
                "H2CData above MAXH2CDATA",
            );
        }
        w.digest_failed |= !d.ddgst_ok;
        w.buf.extend_from_slice(&d.data);
        let complete = w.buf.len() == w.len as usize;
        if d.last != complete {
            return self.fatal(
                out,
                fes::PDU_SEQUENCE_ERROR,
                1,
                "LAST_PDU flag disagrees with the data received",
            );
        }
        if !complete {
            return;
        }
        let Some(Inflight::Data(w)) = self.inflight.remove(&d.cccid) else {
            unreachable!("checked above");
        };
        if w.digest_failed {
            return self.respond(out, d.cccid, Status::TRANSIENT_TRANSPORT, 0, 0);
        }
        self.dispatch(w.sqe, w.buf.freeze(), w.len, now, out);
    }

    fn dispatch(&mut self, sqe: Box<Sqe>, data: Bytes, xfer: u32, now: Instant, out: &mut Output) {
        let cid = sqe.cid();
        if let Some(c) = &self.ctrl {
            c.traffic(now);
        }
        let r = if sqe.opcode() == admin_op::FABRICS
            && (self.qid == 0
                || sqe.fctype() == fctype::CONNECT
                || sqe.fctype() == fctype::DISCONNECT)
        {
            self.fabrics(&sqe, &data, now)
        } else if self.phase != Phase::Live {
            fail(Status::SEQUENCE_ERROR)
        } else if self.ctrl.as_ref().is_some_and(|c| !c.ready()) && self.qid > 0 {
            fail(Status::NS_NOT_READY)
        } else if self.qid == 0 {
            self.admin(&sqe, &data, xfer, now, out)
        } else {
            self.io(&sqe, data, xfer, out)
        };
        if matches!(r, Ok(None)) {
            // Answered later: remember it so a duplicate CID is refused.
            self.inflight.entry(cid).or_insert(Inflight::Held);
        }
        self.complete(out, cid, r, xfer);
        if let Some(reason) = self.pending_close.take() {
            return self.close(out, reason);
        }
        if self.phase == Phase::Live && self.qid == 0 {
            self.deliver_events(out);
        }
    }

    pub(crate) fn start_io(
        &mut self,
        cid: u16,
        kind: IoKind,
        compare: Option<Bytes>,
        xfer: u32,
        out: &mut Output,
    ) -> CmdResult {
        let Some((s, host)) = self
            .ctrl
            .as_ref()
            .and_then(|c| Some((c.subsystem()?, c.hostid)))
        else {
            return fail(Status::INVALID_OPCODE);
        };
        out.ios.push(IoRequest {
            cid,
            device: s.device.clone(),
            host,
            kind,
        });
        self.inflight.insert(cid, Inflight::Io { compare, xfer });
        Ok(None)
    }

    /// Reports the result of an [`IoRequest`]: the data of a read, or nothing.
    pub fn io_done(&mut self, cid: u16, result: Result<Bytes, BlockError>, out: &mut Output) {
        let Some(Inflight::Io { compare, xfer }) = self.inflight.remove(&cid) else {
            return;
        };
        if self.phase == Phase::Closed {
            return;
        }
        let mut at = None;
        let r = match (result, compare) {
            (Ok(d), Some(c)) => {
                if d == c {
                    Ok(Some(Resp::default()))
                } else {
                    fail(Status::COMPARE_FAILURE)
                }
            }
            (Ok(d), None) if !d.is_empty() => Ok(Some(Resp::data(d))),
            (Ok(_), None) => Ok(Some(Resp::default())),
            (Err(e), _) => {
                if let BlockError::Medium { lba, .. } = e {
                    at = Some((crate::identify::NSID, lba));
                }
                fail(block_status(&e))
            }
        };
        self.complete_at(out, cid, r, xfer, at);
    }

    /// Looks at the controller after a wake-up or at the deadline: keep-alive expiry, failure,
    /// asynchronous events.
    pub fn wake(&mut self, now: Instant, out: &mut Output) {
        let Some(c) = self.ctrl.clone() else {
            return;
        };
        if self.phase != Phase::Live {
            return;
        }
        if self.qid == 0 {
            if let Some(d) = c.keep_alive_deadline() {
                if now >= d {
                    let kato = c.inner.lock().kato;
                    c.fail(&format!(
                        "keep alive timeout ({} ms) expired",
                        kato.as_millis()
                    ));
                }
            }
        }
        if let Some(reason) = c.failed() {
            return self.close(out, format!("controller {} failed: {reason}", c.cntlid));
        }
        if self.qid == 0 {
            self.deliver_events(out);
        }
    }

    fn deliver_events(&mut self, out: &mut Output) {
        let Some(c) = self.ctrl.clone() else {
            return;
        };
        for (cid, dw0) in c.take_event_completions() {
            self.inflight.remove(&cid);
            self.respond(out, cid, Status::SUCCESS, dw0, 0);
        }
    }

    /// A new command reuses the id of an Asynchronous Event Request this controller still
    /// holds: the host has given that request up (SPDK's host completes its AERs itself before
    /// it shuts a controller down, then reuses their ids for the shutdown's Property Get and
    /// Set). As Linux's nvmet and SPDK's target, which keep no command ids, run such a
    /// command, so does this target; unlike them it also drops the given-up AER, so no event
    /// is ever completed under an id the host has reused. False when `cid` is not a held AER
    /// (a real Command ID Conflict).
    fn retire_aer(&mut self, cid: u16) -> bool {
        if self.qid != 0 || !matches!(self.inflight.get(&cid), Some(Inflight::Held)) {
            return false;
        }
        let Some(c) = self.ctrl.clone() else {
            return false;
        };
        let mut i = c.inner.lock();
        let Some(at) = i.aer_cids.iter().position(|&a| a == cid) else {
            return false;
        };
        i.aer_cids.remove(at);
        self.inflight.remove(&cid);
        true
    }

    pub(crate) fn aer(&mut self, cid: u16) -> CmdResult {
        let c = self
            .ctrl
            .clone()
            .expect("live admin queue has a controller");
        let mut i = c.inner.lock();
        if i.aer_cids.len() >= 4 {
            return fail(Status::AER_LIMIT);
        }
        i.aer_cids.push_back(cid);
        Ok(None)
    }

    pub(crate) fn connected(&mut self, ctrl: Arc<Controller>, qid: u16, sqsize: u16, cattr: u8) {
        self.ctrl = Some(ctrl);
        self.qid = qid;
        self.sqsize = sqsize;
        self.sqflow_disabled = cattr & 0b100 != 0;
        self.phase = Phase::Live;
    }

    pub(crate) fn close_after_reply(&mut self, reason: &str) {
        self.pending_close = Some(reason.to_string());
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    None,
    H2C,
    C2H,
    Both,
}

/// The data direction of a command: opcode bits 1:0 (Base 1.4 figure 104), or by fabrics type.
fn direction(sqe: &Sqe) -> Dir {
    if sqe.opcode() == admin_op::FABRICS {
        return match sqe.fctype() {
            fctype::CONNECT | fctype::AUTH_SEND => Dir::H2C,
            fctype::AUTH_RECV => Dir::C2H,
            _ => Dir::None,
        };
    }
    match sqe.opcode() & 3 {
        0 => Dir::None,
        1 => Dir::H2C,
        2 => Dir::C2H,
        _ => Dir::Both,
    }
}

/// The NVMe status for a device error.
pub fn block_status(e: &BlockError) -> Status {
    match e {
        BlockError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE,
        BlockError::Misaligned { .. } | BlockError::TooLarge { .. } => Status::INVALID_FIELD,
        BlockError::Medium { .. } => Status::UNRECOVERED_READ,
        BlockError::Backend(_) => Status::NS_NOT_READY,
        BlockError::DeviceFailed(_) => Status::WRITE_FAULT,
        BlockError::Unavailable(_) => Status::ANA_INACCESSIBLE,
        BlockError::ReservationConflict => Status::RESERVATION_CONFLICT,
        BlockError::InvalidField(_) => Status::INVALID_FIELD,
    }
}
