//! The full feature phase of one connection (RFC 7143 sections 3-4, 11): the CmdSN window,
//! SCSI commands with immediate, unsolicited and solicited (R2T) data, Data-In with phase
//! collapse and residuals, NOP, task management, Text (SendTargets), Logout and Reject. A
//! pure state machine: it takes PDUs and command outcomes, and returns [`Action`]s (PDUs to
//! send, commands to run, close) for the driver to perform. Error recovery level 0: a protocol
//! error the RFC lets a target reject is rejected; anything worse closes the connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::login::{encode_keys, parse_keys, Params, SessionType};
use crate::pdu::{op, Bhs, Pdu};
use crate::scsi::{Direction, Lun};
use crate::sense::{sense_segment, status, Outcome, Sense};

pub use crate::{MAX_WRITE, QUEUE_DEPTH};

/// Task Management Function Response codes (RFC 7143 section 11.6.1).
mod tmf_response {
    pub const COMPLETE: u8 = 0;
    pub const NO_TASK: u8 = 1;
    pub const REASSIGN_UNSUPPORTED: u8 = 4;
    pub const NOT_SUPPORTED: u8 = 5;
}

const NO_TAG: u32 = 0xffff_ffff;

/// Reject reasons (RFC 7143 section 11.17.1).
pub mod reject {
    /// Data (payload) digest error.
    pub const DATA_DIGEST: u8 = 0x02;
    /// Protocol error.
    pub const PROTOCOL: u8 = 0x04;
    /// Command not supported.
    pub const NOT_SUPPORTED: u8 = 0x05;
    /// Invalid PDU field.
    pub const INVALID_FIELD: u8 = 0x09;
}

/// What the driver does.
#[derive(Debug)]
pub enum Action {
    /// Send a PDU.
    Send(Pdu),
    /// Run a SCSI command on the LUN; report with [`Conn::completed`].
    Execute {
        /// The task.
        itt: u32,
        /// The CDB.
        cdb: Vec<u8>,
        /// Data-Out.
        data: Bytes,
    },
    /// Close the connection after sending what came before.
    Close,
    /// A LUN or target reset: drop the LUN's RESERVE(6) reservation.
    ResetLun,
}

/// What the connection needs of the target to answer Text requests.
pub trait Portals: Send + Sync {
    /// `(target name, addresses "host:port,tpgt")` for SendTargets: the targets `initiator` may
    /// log in to (their access lists admit it), only `only` when given.
    fn send_targets(&self, initiator: &str, only: Option<&str>) -> Vec<(String, Vec<String>)>;
}

/// A command that runs.
struct Task {
    lun: [u8; 8],
    edtl: usize,
    /// A read: its data goes out as Data-In.
    read: bool,
    /// Data-Out bytes the command used (writes), for the residual.
    used: usize,
}

/// A command that takes Data-Out.
struct WriteCmd {
    lun_field: [u8; 8],
    cdb: Vec<u8>,
    edtl: usize,
    /// Bytes the command needs (from the CDB).
    needed: usize,
    /// The command takes no data: what came is dropped and only its status goes back.
    sink: bool,
}

/// A write gathering its Data-Out.
struct Write {
    cmd: WriteCmd,
    buf: BytesMut,
    received: usize,
    /// Next offset to ask for with an R2T.
    next_r2t: usize,
    /// Outstanding R2Ts: TTT -> (offset, length, received).
    outstanding: HashMap<u32, (usize, usize, usize)>,
    r2t_sn: u32,
    /// The DataSN each sequence expects next: unsolicited data under the reserved tag, each
    /// R2T's under its TTT.
    data_sn: HashMap<u32, u32>,
}

/// A connection in the full feature phase.
pub struct Conn {
    params: Params,
    /// The initiator's name (from its login).
    initiator: String,
    session: SessionType,
    target: Option<String>,
    lun: Option<Arc<Lun>>,
    portals: Arc<dyn Portals>,
    stat_sn: u32,
    exp_cmd_sn: u32,
    writes: HashMap<u32, Write>,
    /// Commands running.
    running: HashMap<u32, Task>,
    aborted: HashSet<u32>,
    next_ttt: u32,
}

impl Conn {
    /// The connection after login: `stat_sn` and `exp_cmd_sn` continue the login's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: Params,
        initiator: String,
        session: SessionType,
        target: Option<String>,
        lun: Option<Arc<Lun>>,
        portals: Arc<dyn Portals>,
        stat_sn: u32,
        exp_cmd_sn: u32,
    ) -> Self {
        Self {
            params,
            initiator,
            session,
            target,
            lun,
            portals,
            stat_sn,
            exp_cmd_sn,
            writes: HashMap::new(),
            running: HashMap::new(),
            aborted: HashSet::new(),
            next_ttt: 1,
        }
    }

    fn header(&mut self, opcode: u8, itt: u32, advance: bool) -> Bhs {
        let mut b = Bhs::new(opcode);
        b.put_u32(16, itt);
        b.put_u32(24, self.stat_sn);
        if advance {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        b.put_u32(28, self.exp_cmd_sn);
        b.put_u32(32, self.exp_cmd_sn.wrapping_add(QUEUE_DEPTH - 1));
        b
    }

    fn reject(&mut self, reason: u8, bad: &Bhs) -> Action {
        let mut b = self.header(op::REJECT, NO_TAG, true);
        b.set_flags(0x80);
        b.0[2] = reason;
        Action::Send(Pdu::new(b, Bytes::copy_from_slice(&bad.0)))
    }

    /// A data digest error on a PDU whose header was good: Reject it (RFC 7143 section 7.8).
    pub fn data_digest_error(&mut self, bad: &Bhs) -> Vec<Action> {
        vec![self.reject(reject::DATA_DIGEST, bad)]
    }

    /// Checks and advances the CmdSN window for a command; false: ignore the command (outside
    /// the window, or a duplicate).
    fn accept_cmd_sn(&mut self, b: &Bhs) -> bool {
        let sn = b.u32_at(24);
        if b.immediate() {
            return true;
        }
        let ahead = sn.wrapping_sub(self.exp_cmd_sn);
        if ahead >= QUEUE_DEPTH {
            return false;
        }
        // One connection over TCP: commands arrive in CmdSN order.
        self.exp_cmd_sn = sn.wrapping_add(1);
        true
    }

    /// Handles one PDU from the initiator.
    pub fn handle(&mut self, pdu: Pdu) -> Vec<Action> {
        let b = pdu.bhs.clone();
        match b.opcode() {
            op::NOP_OUT => {
                if !self.accept_cmd_sn(&b) {
                    return vec![];
                }
                if b.itt() == NO_TAG {
                    return vec![]; // an answer to our NOP-In
                }
                let mut h = self.header(op::NOP_IN, b.itt(), true);
                h.set_flags(0x80);
                h.0[8..16].copy_from_slice(&b.0[8..16]);
                h.put_u32(20, NO_TAG);
                vec![Action::Send(Pdu::new(h, pdu.data))]
            }
            op::SCSI_CMD => self.command(pdu),
            op::DATA_OUT => self.data_out(pdu),
            op::TMF_REQ => self.task_management(&b),
            op::TEXT_REQ => self.text(&b, &pdu.data),
            op::LOGOUT_REQ => {
                self.accept_cmd_sn(&b);
                let mut h = self.header(op::LOGOUT_RESP, b.itt(), true);
                h.set_flags(0x80);
                // Reason 2 (remove the connection for recovery) needs ERL 2.
                h.0[2] = if b.flags() & 0x7f == 2 { 2 } else { 0 };
                h.put_u16(40, self.params.time2wait);
                h.put_u16(42, self.params.time2retain);
                vec![Action::Send(Pdu::new(h, Bytes::new())), Action::Close]
            }
            op::SNACK => vec![self.reject(reject::NOT_SUPPORTED, &b)],
            op::LOGIN_REQ => vec![self.reject(reject::PROTOCOL, &b)],
            _ => vec![self.reject(reject::PROTOCOL, &b)],
        }
    }

    fn response(&mut self, itt: u32, edtl: usize, got: usize, o: &Outcome, data_sn: u32) -> Pdu {
        let mut h = self.header(op::SCSI_RESP, itt, true);
        let mut flags = 0x80;
        if got < edtl {
            flags |= 0x02;
            h.put_u32(44, (edtl - got) as u32);
        } else if got > edtl {
            flags |= 0x04;
            h.put_u32(44, (got - edtl) as u32);
        }
        h.set_flags(flags);
        h.0[3] = o.status;
        h.put_u32(36, data_sn);
        let data = o.sense.as_ref().map(sense_segment).unwrap_or_default();
        Pdu::new(h, data)
    }

    fn check(&mut self, itt: u32, edtl: usize, sense: Sense) -> Vec<Action> {
        let o = Outcome::check(sense);
        vec![Action::Send(self.response(itt, edtl, 0, &o, 0))]
    }

    fn command(&mut self, pdu: Pdu) -> Vec<Action> {
        let b = &pdu.bhs;
        if !self.accept_cmd_sn(b) {
            return vec![];
        }
        let itt = b.itt();
        let mut lun_field = [0u8; 8];
        lun_field.copy_from_slice(&b.0[8..16]);
        let edtl = b.u32_at(20) as usize;
        let cdb = b.0[32..48].to_vec();
        if self.session == SessionType::Discovery {
            return vec![self.reject(reject::PROTOCOL, b)];
        }
        let Some(lun) = self.lun.clone() else {
            return vec![self.reject(reject::PROTOCOL, b)];
        };
        let lun_no = (u16::from(lun_field[0] & 0x3f) << 8) | u16::from(lun_field[1]);
        if lun_no != 0 || lun_field[2..].iter().any(|&x| x != 0) {
            return match cdb[0] {
                // INQUIRY of a LUN that is not there: peripheral qualifier 3.
                0x12 if cdb[1] & 1 == 0 => {
                    let mut d = vec![0u8; 36];
                    d[0] = 0x7f;
                    d[2] = 0x06;
                    d[3] = 0x12;
                    d[4] = 31;
                    let n = (u16::from_be_bytes([cdb[3], cdb[4]]) as usize).min(36);
                    self.data_in(
                        itt,
                        lun_field,
                        edtl,
                        &Outcome {
                            status: status::GOOD,
                            sense: None,
                            data: Bytes::from(d).slice(..n),
                        },
                    )
                }
                0xa0 => self.start(itt, lun_field, edtl, cdb),
                _ => self.check(itt, edtl, Sense::LUN_NOT_SUPPORTED),
            };
        }
        let write = b.flags() & 0x20 != 0;
        let declared = lun.direction(&cdb);
        // A command that takes no data, flagged as a write with data: the data is taken and
        // dropped, and the command runs (its status only; libiscsi's Read10Invalid).
        let sink = !matches!(declared, Direction::Out(_));
        let direction = match declared {
            Direction::In | Direction::None if write && edtl > 0 => Direction::Out(0),
            d => d,
        };
        match direction {
            Direction::Out(needed) => {
                if !write && needed > 0 {
                    // The CDB moves data the initiator did not say it would send.
                    return self.check(itt, edtl, Sense::INVALID_FIELD);
                }
                if edtl > MAX_WRITE {
                    return self.check(itt, edtl, Sense::INVALID_FIELD);
                }
                // COMPARE AND WRITE of 0 blocks carrying data: a length that did not fit the
                // CDB's one byte (256 and up) is refused, not run as a no-op.
                if cdb[0] == 0x89 && needed == 0 && edtl > 0 {
                    return self.check(itt, edtl, Sense::INVALID_FIELD);
                }
                // WRITE SAME's one block and COMPARE AND WRITE's two halves are the whole
                // Data-Out: another length is a mistake about the block size, refused rather
                // than cut or padded into a write (libiscsi's InvalidDataOutSize; LIO does so).
                if matches!(cdb[0], 0x41 | 0x93 | 0x89) && needed > 0 && edtl != needed {
                    return self.check(itt, edtl, Sense::INVALID_FIELD);
                }
                let immediate = pdu.data.len();
                if immediate > edtl || (immediate > 0 && !self.params.immediate_data) {
                    return vec![self.reject(reject::PROTOCOL, b)];
                }
                if immediate == edtl {
                    // All of it came with the command: no buffer to gather it in.
                    let (w, data) = (
                        WriteCmd {
                            lun_field,
                            cdb,
                            edtl,
                            needed,
                            sink,
                        },
                        pdu.data,
                    );
                    return self.run_write(itt, w, data);
                }
                let mut buf = BytesMut::zeroed(edtl);
                buf[..immediate].copy_from_slice(&pdu.data);
                let unsolicited = if self.params.initial_r2t {
                    immediate
                } else {
                    edtl.min(self.params.first_burst as usize).max(immediate)
                };
                let mut w = Write {
                    cmd: WriteCmd {
                        lun_field,
                        cdb,
                        edtl,
                        needed,
                        sink,
                    },
                    buf,
                    received: immediate,
                    next_r2t: unsolicited,
                    outstanding: HashMap::new(),
                    r2t_sn: 0,
                    data_sn: HashMap::new(),
                };
                let mut out = Vec::new();
                self.solicit(itt, &mut w, &mut out);
                if w.received >= w.cmd.edtl {
                    out.extend(self.finish_write(itt, w));
                } else {
                    self.writes.insert(itt, w);
                }
                out
            }
            Direction::Unsupported => self.check(itt, edtl, Sense::INVALID_OPCODE),
            Direction::In | Direction::None => self.start(itt, lun_field, edtl, cdb),
        }
    }

    fn start(&mut self, itt: u32, lun: [u8; 8], edtl: usize, cdb: Vec<u8>) -> Vec<Action> {
        self.running.insert(
            itt,
            Task {
                lun,
                edtl,
                read: true,
                used: 0,
            },
        );
        vec![Action::Execute {
            itt,
            cdb,
            data: Bytes::new(),
        }]
    }

    /// Sends R2Ts for `w` while fewer than MaxOutstandingR2T are out.
    fn solicit(&mut self, itt: u32, w: &mut Write, out: &mut Vec<Action>) {
        while w.next_r2t < w.cmd.edtl
            && (w.outstanding.len() as u32) < self.params.max_outstanding_r2t
        {
            let len = (w.cmd.edtl - w.next_r2t).min(self.params.max_burst as usize);
            let ttt = self.next_ttt;
            self.next_ttt = self.next_ttt.wrapping_add(1).max(1);
            let mut h = self.header(op::R2T, itt, false);
            h.set_flags(0x80);
            h.0[8..16].copy_from_slice(&w.cmd.lun_field);
            h.put_u32(20, ttt);
            h.put_u32(36, w.r2t_sn);
            h.put_u32(40, w.next_r2t as u32);
            h.put_u32(44, len as u32);
            w.r2t_sn += 1;
            w.outstanding.insert(ttt, (w.next_r2t, len, 0));
            w.next_r2t += len;
            out.push(Action::Send(Pdu::new(h, Bytes::new())));
        }
    }

    fn data_out(&mut self, pdu: Pdu) -> Vec<Action> {
        let b = &pdu.bhs;
        let itt = b.itt();
        let Some(mut w) = self.writes.remove(&itt) else {
            // Unsolicited data of a command that already ended (refused at once, or aborted)
            // is dropped; solicited data for no R2T of ours is an error.
            if b.u32_at(20) == NO_TAG || self.aborted.contains(&itt) {
                return vec![];
            }
            return vec![self.reject(reject::INVALID_FIELD, b)];
        };
        let ttt = b.u32_at(20);
        // DataSN counts from 0 within each sequence (RFC 7143 section 11.7.5); a gap is a
        // protocol error: the PDU is rejected, which fails the command at the initiator, and
        // the command is dropped here (error recovery level 0 recovers no data).
        let want = w.data_sn.entry(ttt).or_insert(0);
        if b.u32_at(36) != *want {
            self.aborted.insert(itt);
            return vec![self.reject(reject::PROTOCOL, b)];
        }
        *want += 1;
        let offset = b.u32_at(40) as usize;
        let len = pdu.data.len();
        let end = offset + len;
        if end > w.cmd.edtl {
            self.writes.insert(itt, w);
            return vec![self.reject(reject::PROTOCOL, b)];
        }
        if ttt != NO_TAG {
            match w.outstanding.get_mut(&ttt) {
                Some((at, n, got)) if offset >= *at && end <= *at + *n => {
                    *got += len;
                    if *got >= *n {
                        w.outstanding.remove(&ttt);
                    }
                }
                _ => {
                    self.writes.insert(itt, w);
                    return vec![self.reject(reject::PROTOCOL, b)];
                }
            }
        }
        w.buf[offset..end].copy_from_slice(&pdu.data);
        w.received += len;
        let mut out = Vec::new();
        if w.received >= w.cmd.edtl {
            out.extend(self.finish_write(itt, w));
        } else {
            self.solicit(itt, &mut w, &mut out);
            self.writes.insert(itt, w);
        }
        out
    }

    fn finish_write(&mut self, itt: u32, w: Write) -> Vec<Action> {
        self.run_write(itt, w.cmd, w.buf.freeze())
    }

    /// Runs write `w` with all its Data-Out (`data`, EDTL bytes).
    fn run_write(&mut self, itt: u32, w: WriteCmd, data: Bytes) -> Vec<Action> {
        // EDTL below what the CDB needs: the command gets what came (an overflow residual);
        // above it: the extra is not used (an underflow residual).
        let data = data.slice(..w.needed.min(w.edtl));
        self.running.insert(
            itt,
            Task {
                lun: w.lun_field,
                edtl: w.edtl,
                read: false,
                used: if w.sink { w.edtl } else { w.needed },
            },
        );
        vec![Action::Execute {
            itt,
            cdb: w.cdb,
            data,
        }]
    }

    /// A command finished: its Data-In and response.
    pub fn completed(&mut self, itt: u32, o: Outcome) -> Vec<Action> {
        let Some(t) = self.running.remove(&itt) else {
            return vec![];
        };
        if self.aborted.remove(&itt) {
            return vec![];
        }
        if t.read {
            return self.data_in(itt, t.lun, t.edtl, &o);
        }
        // A write: the residual compares EDTL with what the command used.
        vec![Action::Send(self.response(itt, t.edtl, t.used, &o, 0))]
    }

    fn data_in(&mut self, itt: u32, lun: [u8; 8], edtl: usize, o: &Outcome) -> Vec<Action> {
        let data = o.data.slice(..o.data.len().min(edtl));
        let max = self.params.initiator_max_recv as usize;
        let collapse = o.status == status::GOOD && o.sense.is_none();
        let mut out = Vec::new();
        let mut at = 0;
        let mut sn = 0u32;
        while at < data.len() {
            let n = (data.len() - at).min(max);
            let last = at + n == data.len();
            let with_status = last && collapse;
            let mut h = self.header(op::DATA_IN, itt, with_status);
            let mut flags = if last { 0x80 } else { 0 };
            if with_status {
                flags |= 0x01;
                h.0[3] = o.status;
                if o.data.len() < edtl {
                    flags |= 0x02;
                    h.put_u32(44, (edtl - o.data.len()) as u32);
                } else if o.data.len() > edtl {
                    flags |= 0x04;
                    h.put_u32(44, (o.data.len() - edtl) as u32);
                }
            } else {
                // Only a PDU with status carries a StatSN.
                h.put_u32(24, 0);
            }
            h.set_flags(flags);
            h.0[8..16].copy_from_slice(&lun);
            h.put_u32(20, NO_TAG);
            h.put_u32(36, sn);
            h.put_u32(40, at as u32);
            out.push(Action::Send(Pdu::new(h, data.slice(at..at + n))));
            sn += 1;
            at += n;
        }
        if !collapse || data.is_empty() {
            out.push(Action::Send(self.response(itt, edtl, o.data.len(), o, sn)));
        }
        out
    }

    fn task_management(&mut self, b: &Bhs) -> Vec<Action> {
        if !self.accept_cmd_sn(b) {
            return vec![];
        }
        let function = b.flags() & 0x7f;
        let referenced = b.u32_at(20);
        let response = match function {
            // ABORT TASK (RFC 7143 section 11.5.1): a task still here is aborted ("Function
            // complete"), and a running one gets no response. A task that is not here has
            // finished (its response went out before this one) or was never received: only
            // a RefCmdSN in the command window and before this request's CmdSN is one not
            // received yet, which counts as aborted; anything else is "Task does not exist",
            // so the initiator knows the command's own response is the outcome.
            1 => {
                let waiting_for_data = self.writes.remove(&referenced).is_some();
                if self.running.contains_key(&referenced) {
                    self.aborted.insert(referenced);
                    tmf_response::COMPLETE
                } else if waiting_for_data {
                    tmf_response::COMPLETE
                } else {
                    let ref_cmd_sn = b.u32_at(32);
                    let in_window = ref_cmd_sn.wrapping_sub(self.exp_cmd_sn) < QUEUE_DEPTH;
                    let before_this = (b.u32_at(24).wrapping_sub(ref_cmd_sn) as i32) > 0;
                    if in_window && before_this {
                        tmf_response::COMPLETE
                    } else {
                        tmf_response::NO_TASK
                    }
                }
            }
            // ABORT TASK SET, CLEAR TASK SET, LUN RESET, TARGET WARM RESET
            2 | 4 | 5 | 6 => {
                self.writes.clear();
                let all: Vec<u32> = self.running.keys().copied().collect();
                self.aborted.extend(all);
                if function >= 5 {
                    let mut h = self.header(op::TMF_RESP, b.itt(), true);
                    h.set_flags(0x80);
                    return vec![Action::ResetLun, Action::Send(Pdu::new(h, Bytes::new()))];
                }
                tmf_response::COMPLETE
            }
            // CLEAR ACA: no ACA here.
            3 => tmf_response::COMPLETE,
            // TARGET COLD RESET: answer, then the connection ends.
            7 => {
                let mut h = self.header(op::TMF_RESP, b.itt(), true);
                h.set_flags(0x80);
                return vec![
                    Action::ResetLun,
                    Action::Send(Pdu::new(h, Bytes::new())),
                    Action::Close,
                ];
            }
            // TASK REASSIGN needs ERL 2.
            8 => tmf_response::REASSIGN_UNSUPPORTED,
            _ => tmf_response::NOT_SUPPORTED,
        };
        let mut h = self.header(op::TMF_RESP, b.itt(), true);
        h.set_flags(0x80);
        h.0[2] = response;
        vec![Action::Send(Pdu::new(h, Bytes::new()))]
    }

    fn text(&mut self, b: &Bhs, data: &[u8]) -> Vec<Action> {
        if !self.accept_cmd_sn(b) {
            return vec![];
        }
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in parse_keys(data) {
            if k == "SendTargets" {
                let only = match (self.session, v.as_str()) {
                    (SessionType::Discovery, "All") => None,
                    (SessionType::Normal, "All") => self.target.clone(),
                    (_, "") => self.target.clone(),
                    (_, name) => Some(name.to_string()),
                };
                for (name, addrs) in self.portals.send_targets(&self.initiator, only.as_deref()) {
                    out.push(("TargetName".into(), name));
                    for a in addrs {
                        out.push(("TargetAddress".into(), a));
                    }
                }
            } else {
                out.push((k, "NotUnderstood".into()));
            }
        }
        let mut h = self.header(op::TEXT_RESP, b.itt(), true);
        h.set_flags(0x80);
        h.put_u32(20, NO_TAG);
        vec![Action::Send(Pdu::new(h, encode_keys(&out)))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn conn() -> Conn {
        let params = Params {
            header_digest: false,
            data_digest: false,
            initiator_max_recv: 8192,
            target_max_recv: 8192,
            max_burst: 1 << 20,
            first_burst: 65536,
            initial_r2t: false,
            immediate_data: true,
            max_outstanding_r2t: 1,
            time2wait: 2,
            time2retain: 0,
        };
        let g = alcubierre_types::VolumeGeometry::new(
            alcubierre_types::BlockSize::B512,
            alcubierre_types::ByteSize::mib(1),
        )
        .unwrap();
        let dev = Arc::new(alcubierre_block::MemBlockDevice::new(g));
        Conn::new(
            params,
            "iqn.2024-01.org.example:host".into(),
            SessionType::Normal,
            Some(crate::harness::TARGET.into()),
            Some(Arc::new(Lun::new(dev, [7; 16], 1))),
            Target::new(),
            1,
            10,
        )
    }

    /// A WRITE(10) of one 512-byte block with its data immediate.
    fn write(itt: u32, cmd_sn: u32) -> Pdu {
        let mut b = Bhs::new(op::SCSI_CMD);
        b.set_flags(0xa0);
        b.put_u32(16, itt);
        b.put_u32(20, 512);
        b.put_u32(24, cmd_sn);
        b.0[32..42].copy_from_slice(&[0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]);
        Pdu::new(b, Bytes::from(vec![7u8; 512]))
    }

    /// An immediate ABORT TASK of `itt` (sent as `cmd_sn`, referencing `ref_cmd_sn`): its
    /// response code.
    fn abort(c: &mut Conn, itt: u32, ref_cmd_sn: u32, cmd_sn: u32) -> u8 {
        let mut b = Bhs::new(op::TMF_REQ | 0x40);
        b.set_flags(0x81);
        b.put_u32(16, 0x100 + itt);
        b.put_u32(20, itt);
        b.put_u32(24, cmd_sn);
        b.put_u32(32, ref_cmd_sn);
        let out = c.handle(Pdu::new(b, Bytes::new()));
        match out.as_slice() {
            [Action::Send(p)] if p.bhs.opcode() == op::TMF_RESP => p.bhs.0[2],
            _ => panic!("one TMF response, not {} actions", out.len()),
        }
    }

    /// A write's outcome: GOOD.
    fn good() -> Outcome {
        Outcome {
            status: 0,
            sense: None,
            data: Bytes::new(),
        }
    }

    fn executes(out: &[Action]) -> bool {
        matches!(out, [Action::Execute { .. }])
    }

    #[test]
    fn abort_of_a_running_command_completes_and_silences_it() {
        let mut c = conn();
        assert!(executes(&c.handle(write(1, 10))));
        assert_eq!(abort(&mut c, 1, 10, 11), tmf_response::COMPLETE);
        let o = good();
        assert!(
            c.completed(1, o).is_empty(),
            "no response for the aborted write"
        );
    }

    /// libiscsi's AbortTaskSimpleAsync: the write's response went out before the ABORT TASK
    /// arrived, so the answer is "Task does not exist", not "Function complete" (which would
    /// tell the initiator the write it saw complete had been aborted).
    #[test]
    fn abort_of_a_finished_command_is_task_does_not_exist() {
        let mut c = conn();
        assert!(executes(&c.handle(write(1, 10))));
        let o = good();
        let done = c.completed(1, o);
        assert!(matches!(done.as_slice(), [Action::Send(p)] if p.bhs.opcode() == op::SCSI_RESP));
        assert_eq!(abort(&mut c, 1, 10, 11), tmf_response::NO_TASK);
        assert_eq!(
            abort(&mut c, 77, 3, 11),
            tmf_response::NO_TASK,
            "never sent"
        );
    }

    /// A referenced command in the window and before the request's CmdSN was lost on its way:
    /// it counts as received and aborted (RFC 7143 section 11.5.1, b).
    #[test]
    fn abort_of_a_command_not_received_yet_completes() {
        let mut c = conn();
        assert_eq!(abort(&mut c, 5, 10, 12), tmf_response::COMPLETE);
        assert_eq!(
            abort(&mut c, 5, 12, 12),
            tmf_response::NO_TASK,
            "not before the TMF"
        );
    }

    /// SendTargets discloses only the targets whose access lists admit the asking initiator.
    #[test]
    fn send_targets_lists_only_targets_the_initiator_may_log_in_to() {
        use crate::login::Access;
        use crate::target::Export;
        let t = Target::new();
        let g = alcubierre_types::VolumeGeometry::new(
            alcubierre_types::BlockSize::B512,
            alcubierre_types::ByteSize::mib(1),
        )
        .unwrap();
        for (name, initiators) in [
            ("iqn.2024-01.test:open", None),
            ("iqn.2024-01.test:only-a", Some(vec!["iqn.a".to_string()])),
            ("iqn.2024-01.test:nobody", Some(vec![])),
        ] {
            let dev = Arc::new(alcubierre_block::MemBlockDevice::new(g));
            t.export(
                name,
                Export {
                    lun: Arc::new(Lun::new(dev, [1; 16], 1)),
                    access: Access {
                        initiators,
                        ..Access::default()
                    },
                    portals: vec!["127.0.0.1:3260,1".into()],
                },
            );
        }
        let names = |initiator: &str| -> Vec<String> {
            let mut n: Vec<String> = t
                .send_targets(initiator, None)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            n.sort();
            n
        };
        assert_eq!(names("iqn.b"), ["iqn.2024-01.test:open"]);
        assert_eq!(
            names("iqn.a"),
            ["iqn.2024-01.test:only-a", "iqn.2024-01.test:open"]
        );
        assert!(t
            .send_targets("iqn.b", Some("iqn.2024-01.test:only-a"))
            .is_empty());
    }
}
