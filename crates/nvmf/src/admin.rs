//! Fabrics commands (Connect, Property Get/Set, Disconnect; Fabrics 1.1 section 3) and admin
//! commands (Identify, Get Log Page, Set/Get Features, Asynchronous Event Request, Keep Alive,
//! Abort; Base 1.4 section 5) of a [`QueuePair`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::capsule::Sqe;
use crate::controller::{Controller, CtrlState, Kind};
use crate::identify;
use crate::queue::{fail, CmdResult, Output, QueuePair, Resp};
use crate::spec::{admin_op, cns, fctype, feat, log_id, prop, DISCOVERY_NQN};
use crate::status::Status;

/// Connect command data (Fabrics 1.1 figure 20).
struct ConnectData {
    hostid: [u8; 16],
    cntlid: u16,
    subnqn: String,
    hostnqn: String,
}

fn nqn_at(d: &[u8], o: usize) -> Option<String> {
    let f = &d[o..o + 256];
    let end = f.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&f[..end]).ok().map(str::to_string)
}

/// dword 0 of a Connect Invalid Parameters completion: IATTR (0 SQE, 1 data) and IPO.
fn invalid_param(in_data: bool, offset: u16) -> CmdResult {
    Err((
        Status::CONNECT_INVALID_PARAM,
        in_data as u32 | ((offset as u32) << 16),
    ))
}

impl QueuePair {
    pub(crate) fn fabrics(&mut self, sqe: &Sqe, data: &Bytes, now: Instant) -> CmdResult {
        match sqe.fctype() {
            fctype::CONNECT => self.connect(sqe, data, now),
            fctype::PROPERTY_GET if self.qid() == Some(0) => self.property_get(sqe),
            fctype::PROPERTY_SET if self.qid() == Some(0) => self.property_set(sqe),
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => fail(Status::SEQUENCE_ERROR),
            fctype::DISCONNECT => {
                if self.qid().is_none() {
                    return fail(Status::SEQUENCE_ERROR);
                }
                // The response goes out first; then the queue closes.
                self.close_after_reply("host disconnected");
                Ok(Some(Resp::default()))
            }
            _ => fail(Status::INVALID_OPCODE),
        }
    }

    fn connect(&mut self, sqe: &Sqe, data: &Bytes, now: Instant) -> CmdResult {
        if self.qid().is_some() {
            return fail(Status::SEQUENCE_ERROR);
        }
        if data.len() < 1024 {
            return fail(Status::SGL_LENGTH_INVALID);
        }
        if sqe.connect_recfmt() != 0 {
            return Err((
                Status {
                    sct: 1,
                    sc: 0x80,
                    dnr: true,
                },
                0,
            ));
        }
        let cd = ConnectData {
            hostid: data[0..16].try_into().expect("16 bytes"),
            cntlid: u16::from_le_bytes([data[16], data[17]]),
            subnqn: match nqn_at(data, 256) {
                Some(s) => s,
                None => return invalid_param(true, 256),
            },
            hostnqn: match nqn_at(data, 512) {
                Some(s) => s,
                None => return invalid_param(true, 512),
            },
        };
        let qid = sqe.connect_qid();
        let sqsize = sqe.connect_sqsize();
        let cfg = &self.target.config;
        if sqsize == 0 || sqsize >= cfg.max_queue_entries || (qid == 0 && sqsize < 31) {
            return invalid_param(false, 44);
        }
        if qid == 0 {
            let kind = if cd.subnqn == DISCOVERY_NQN {
                Kind::Discovery
            } else {
                match self.target.subsystem(&cd.subnqn) {
                    Some(s) => Kind::Io(s),
                    None => return invalid_param(true, 256),
                }
            };
            if let Kind::Io(s) = &kind {
                if !s.allows(&cd.hostnqn) {
                    tracing::warn!(host = %cd.hostnqn, subsystem = %cd.subnqn, "connect refused: host not allowed");
                    return fail(Status::CONNECT_INVALID_HOST);
                }
            }
            if cd.cntlid != 0xffff && cd.cntlid != 0xfffe {
                return invalid_param(true, 16);
            }
            let kato = Duration::from_millis(sqe.connect_kato() as u64);
            let io_queues = match kind {
                Kind::Io(_) => cfg.max_io_queues,
                Kind::Discovery => 0,
            };
            let sub = kind.clone();
            let Some(ctrl) = self.target.register_controller(|id| {
                Controller::new(
                    id,
                    kind,
                    cd.hostnqn.clone(),
                    cd.hostid,
                    kato,
                    io_queues,
                    now,
                )
            }) else {
                return fail(Status::CONTROLLER_BUSY);
            };
            if let Kind::Io(s) = sub {
                let sink: std::sync::Weak<dyn crate::subsystem::EventSink> =
                    Arc::downgrade(&ctrl) as _;
                s.add_controller(sink);
            }
            tracing::info!(cntlid = ctrl.cntlid, host = %cd.hostnqn, subsystem = %cd.subnqn, "controller created");
            let id = ctrl.cntlid;
            self.connected(ctrl, 0, sqsize, sqe.connect_cattr());
            Ok(Some(Resp::dw0(id as u32)))
        } else {
            let Some(ctrl) = self.target.controller(cd.cntlid) else {
                return invalid_param(true, 16);
            };
            if ctrl.hostnqn != cd.hostnqn {
                return invalid_param(true, 512);
            }
            if ctrl.hostid != cd.hostid {
                return invalid_param(true, 0);
            }
            match &ctrl.kind {
                Kind::Io(s) if s.nqn == cd.subnqn => {}
                Kind::Io(_) => return invalid_param(true, 256),
                Kind::Discovery => return invalid_param(false, 42),
            }
            {
                let mut i = ctrl.inner.lock();
                if i.state != CtrlState::Ready {
                    return fail(Status::SEQUENCE_ERROR);
                }
                if qid > i.io_queues || i.connected_qids.contains(&qid) {
                    drop(i);
                    return invalid_param(false, 42);
                }
                i.connected_qids.push(qid);
            }
            let id = ctrl.cntlid;
            self.connected(ctrl, qid, sqsize, sqe.connect_cattr());
            Ok(Some(Resp::dw0(id as u32)))
        }
    }

    fn cap(&self) -> u64 {
        let mqes = (self.target.config.max_queue_entries - 1) as u64;
        // MQES, CQR (bit 16), TO = 15 x 500 ms (bits 31:24), CSS NVM (bit 37), MPSMIN/MPSMAX 4K.
        mqes | (1 << 16) | (15 << 24) | (1 << 37)
    }

    fn csts(&self) -> u32 {
        match self.ctrl.as_ref().map(|c| c.inner.lock().state.clone()) {
            Some(CtrlState::Ready) => 1,
            Some(CtrlState::ShutDown) => 1 | (2 << 2),
            Some(CtrlState::Failed(_)) => 0b10,
            _ => 0,
        }
    }

    fn property_get(&mut self, sqe: &Sqe) -> CmdResult {
        let eight = sqe.prop_attrib() & 1 != 0;
        let v: u64 = match (sqe.prop_offset(), eight) {
            (prop::CAP, true) => self.cap(),
            (prop::VS, false) => identify::VERSION as u64,
            (prop::CC, false) => self.ctrl.as_ref().map_or(0, |c| c.inner.lock().cc) as u64,
            (prop::CSTS, false) => self.csts() as u64,
            (prop::NSSR, false) => 0,
            _ => return fail(Status::INVALID_FIELD),
        };
        Ok(Some(Resp {
            dw0: v as u32,
            dw1: (v >> 32) as u32,
            data: None,
        }))
    }

    fn property_set(&mut self, sqe: &Sqe) -> CmdResult {
        if sqe.prop_attrib() & 1 != 0 || sqe.prop_offset() != prop::CC {
            return fail(Status::INVALID_FIELD);
        }
        let cc = sqe.prop_value() as u32;
        let ctrl = self.ctrl.clone().expect("live queue");
        let mut i = ctrl.inner.lock();
        if matches!(i.state, CtrlState::Failed(_)) {
            return fail(Status::INTERNAL);
        }
        let en = cc & 1 != 0;
        let shn = (cc >> 14) & 3;
        if shn != 0 {
            i.state = CtrlState::ShutDown;
        } else if en && i.state == CtrlState::Disabled {
            // IOSQES must be 6 (64 bytes) and IOCQES 4 (16 bytes) on I/O controllers.
            let sqes = (cc >> 16) & 0xf;
            let cqes = (cc >> 20) & 0xf;
            let css = (cc >> 4) & 7;
            let mps = (cc >> 7) & 0xf;
            let io = matches!(ctrl.kind, Kind::Io(_));
            if css != 0 || mps != 0 || (io && (sqes != 6 || cqes != 4)) {
                return fail(Status::INVALID_FIELD);
            }
            i.state = CtrlState::Ready;
        } else if !en {
            i.state = CtrlState::Disabled;
        }
        i.cc = cc;
        Ok(Some(Resp::default()))
    }

    pub(crate) fn admin(
        &mut self,
        sqe: &Sqe,
        data: &Bytes,
        xfer: u32,
        now: Instant,
        _out: &mut Output,
    ) -> CmdResult {
        let ctrl = self.ctrl.clone().expect("live queue");
        if !ctrl.ready() {
            return fail(Status::SEQUENCE_ERROR);
        }
        let discovery = matches!(ctrl.kind, Kind::Discovery);
        match sqe.opcode() {
            admin_op::IDENTIFY => self.identify(&ctrl, sqe),
            admin_op::GET_LOG_PAGE => self.get_log_page(&ctrl, sqe, xfer),
            admin_op::SET_FEATURES => self.set_features(&ctrl, sqe, data, discovery),
            admin_op::GET_FEATURES => self.get_features(&ctrl, sqe, discovery),
            admin_op::ASYNC_EVENT => self.aer(sqe.cid()),
            admin_op::KEEP_ALIVE => {
                ctrl.keep_alive(now);
                Ok(Some(Resp::default()))
            }
            // Abort: the command was not aborted (dword 0 bit 0 set); it completes normally.
            admin_op::ABORT if !discovery => Ok(Some(Resp::dw0(1))),
            _ => fail(Status::INVALID_OPCODE),
        }
    }

    fn identify(&mut self, ctrl: &Arc<Controller>, sqe: &Sqe) -> CmdResult {
        let cns_v = (sqe.cdw(10) & 0xff) as u8;
        let nsid = sqe.nsid();
        let csi = (sqe.cdw(11) >> 24) as u8;
        let s = match (&ctrl.kind, cns_v) {
            (_, cns::CONTROLLER) => {
                return Ok(Some(Resp::data(identify::controller(&self.target, ctrl))))
            }
            (Kind::Discovery, _) => return fail(Status::INVALID_FIELD),
            (Kind::Io(s), _) => s.clone(),
        };
        let d = match cns_v {
            cns::NAMESPACE => match nsid {
                identify::NSID => identify::namespace(&s),
                0xffff_ffff => {
                    let mut b = identify::namespace(&s);
                    b[0..24].fill(0);
                    b[92..128].fill(0);
                    b
                }
                _ => return fail(Status::INVALID_NS),
            },
            cns::ACTIVE_NS_LIST | cns::CS_ACTIVE_NS_LIST => {
                if nsid >= 0xffff_fffe || (cns_v == cns::CS_ACTIVE_NS_LIST && csi != 0) {
                    return fail(Status::INVALID_NS);
                }
                identify::active_ns_list(nsid)
            }
            cns::NS_DESC_LIST => {
                if nsid != identify::NSID {
                    return fail(Status::INVALID_NS);
                }
                identify::ns_descriptors(&s)
            }
            cns::CS_NAMESPACE | cns::CS_CONTROLLER if csi == 0 => {
                if cns_v == cns::CS_NAMESPACE && nsid != identify::NSID {
                    return fail(Status::INVALID_NS);
                }
                vec![0; 4096]
            }
            _ => return fail(Status::INVALID_FIELD),
        };
        Ok(Some(Resp::data(d)))
    }

    fn get_log_page(&mut self, ctrl: &Arc<Controller>, sqe: &Sqe, xfer: u32) -> CmdResult {
        let cdw10 = sqe.cdw(10);
        let lid = (cdw10 & 0xff) as u8;
        let lsp = ((cdw10 >> 8) & 0x7f) as u8;
        let rae = cdw10 & (1 << 15) != 0;
        let numd = (((sqe.cdw(11) & 0xffff) as u64) << 16 | (cdw10 >> 16) as u64) + 1;
        let offset = sqe.cdw(12) as u64 | ((sqe.cdw(13) as u64) << 32);
        let len = numd * 4;
        if len > xfer as u64 {
            return fail(Status::SGL_LENGTH_INVALID);
        }
        if !offset.is_multiple_of(4) {
            return fail(Status::INVALID_FIELD);
        }
        let page = match (&ctrl.kind, lid) {
            (Kind::Discovery, log_id::DISCOVERY) => identify::discovery_log(
                &self.target,
                &ctrl.hostnqn,
                std::slice::from_ref(&self.local),
            ),
            (_, log_id::ERROR) => identify::error_log(&ctrl.inner.lock().errors),
            (Kind::Io(_), log_id::SMART) => identify::smart_log(ctrl.inner.lock().error_count),
            (Kind::Io(_), log_id::FIRMWARE) => identify::firmware_log(&self.target.config.firmware),
            (Kind::Io(_), log_id::CHANGED_NS) => {
                identify::changed_ns_log(ctrl.inner.lock().ns_changed)
            }
            (Kind::Io(_), log_id::CMD_EFFECTS) => identify::effects_log(),
            (Kind::Io(s), log_id::ANA) => identify::ana_log(s, lsp & 1 != 0),
            (Kind::Io(_), log_id::RESV_NOTIFICATION) => vec![0; 64],
            _ => return fail(Status::INVALID_LOG_PAGE),
        };
        // Hosts size some pages from Identify limits (the ANA log from NANAGRPID and MNAN) and
        // read them in chunks: bytes past the current content read as zeroes.
        let start = (offset.min(page.len() as u64)) as usize;
        let mut d = page[start..].to_vec();
        d.resize(len as usize, 0);
        if !rae {
            ctrl.clear_event(lid);
        }
        Ok(Some(Resp::data(d)))
    }

    fn set_features(
        &mut self,
        ctrl: &Arc<Controller>,
        sqe: &Sqe,
        data: &Bytes,
        discovery: bool,
    ) -> CmdResult {
        let cdw10 = sqe.cdw(10);
        let fid = (cdw10 & 0xff) as u8;
        let cdw11 = sqe.cdw(11);
        if cdw10 & (1 << 31) != 0 {
            return fail(Status::FEATURE_NOT_SAVEABLE);
        }
        if discovery && !matches!(fid, feat::KATO | feat::ASYNC_EVENT) {
            return fail(Status::INVALID_FIELD);
        }
        let mut i = ctrl.inner.lock();
        match fid {
            feat::NUM_QUEUES => {
                let (nsq, ncq) = (cdw11 & 0xffff, cdw11 >> 16);
                if nsq == 0xffff || ncq == 0xffff {
                    return fail(Status::INVALID_FIELD);
                }
                let max = self.target.config.max_io_queues as u32;
                let granted = (nsq.min(ncq) + 1).min(max);
                i.io_queues = granted as u16;
                Ok(Some(Resp::dw0((granted - 1) | ((granted - 1) << 16))))
            }
            feat::ASYNC_EVENT => {
                i.aec = cdw11;
                Ok(Some(Resp::default()))
            }
            feat::KATO => {
                i.kato = Duration::from_millis(cdw11 as u64);
                Ok(Some(Resp::default()))
            }
            feat::TEMP_THRESHOLD => {
                i.temp_threshold = cdw11;
                Ok(Some(Resp::default()))
            }
            feat::POWER_MGMT if cdw11 & 0x1f != 0 => fail(Status::INVALID_FIELD),
            feat::ARBITRATION
            | feat::POWER_MGMT
            | feat::ERROR_RECOVERY
            | feat::IRQ_COALESCE
            | feat::WRITE_ATOMIC => Ok(Some(Resp::default())),
            feat::RESV_MASK => {
                i.resv_mask = cdw11;
                Ok(Some(Resp::default()))
            }
            // Persist Through Power Loss is not offered (RESCAP bit 0 clear).
            feat::RESV_PERSIST if cdw11 & 1 != 0 => fail(Status::FEATURE_NOT_CHANGEABLE),
            feat::RESV_PERSIST => Ok(Some(Resp::default())),
            // Fabrics 1.1 section 3.3: the host identifier comes from Connect.
            feat::HOST_ID => {
                let _ = data;
                fail(Status::SEQUENCE_ERROR)
            }
            _ => fail(Status::INVALID_FIELD),
        }
    }

    fn get_features(&mut self, ctrl: &Arc<Controller>, sqe: &Sqe, discovery: bool) -> CmdResult {
        let cdw10 = sqe.cdw(10);
        let fid = (cdw10 & 0xff) as u8;
        let sel = (cdw10 >> 8) & 7;
        if discovery && !matches!(fid, feat::KATO | feat::ASYNC_EVENT) {
            return fail(Status::INVALID_FIELD);
        }
        let changeable = matches!(
            fid,
            feat::NUM_QUEUES
                | feat::ASYNC_EVENT
                | feat::KATO
                | feat::TEMP_THRESHOLD
                | feat::RESV_MASK
        );
        if sel == 3 {
            // Supported capabilities: changeable (bit 2); reservation features are per namespace.
            let ns = matches!(fid, feat::RESV_MASK | feat::RESV_PERSIST) as u32;
            return Ok(Some(Resp::dw0(((changeable as u32) << 2) | (ns << 1))));
        }
        if sel > 3 {
            return fail(Status::INVALID_FIELD);
        }
        let i = ctrl.inner.lock();
        let default = sel == 1;
        let v = match fid {
            feat::NUM_QUEUES => {
                let q = if default {
                    self.target.config.max_io_queues
                } else {
                    i.io_queues
                } as u32;
                let q = q.max(1) - 1;
                q | (q << 16)
            }
            feat::ASYNC_EVENT => {
                if default {
                    0
                } else {
                    i.aec
                }
            }
            feat::KATO => {
                if default {
                    0
                } else {
                    i.kato.as_millis() as u32
                }
            }
            feat::TEMP_THRESHOLD => {
                if default {
                    0x0157
                } else {
                    i.temp_threshold
                }
            }
            feat::ARBITRATION
            | feat::POWER_MGMT
            | feat::ERROR_RECOVERY
            | feat::IRQ_COALESCE
            | feat::WRITE_ATOMIC => 0,
            feat::RESV_MASK => {
                if default {
                    0
                } else {
                    i.resv_mask
                }
            }
            feat::RESV_PERSIST => 0,
            feat::HOST_ID => {
                let ext = sqe.cdw(11) & 1 != 0;
                let d = if ext {
                    ctrl.hostid.to_vec()
                } else {
                    ctrl.hostid[8..].to_vec()
                };
                return Ok(Some(Resp::data(d)));
            }
            _ => return fail(Status::INVALID_FIELD),
        };
        Ok(Some(Resp::dw0(v)))
    }
}
