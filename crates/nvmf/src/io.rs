//! NVM command set I/O commands of a [`QueuePair`] (Base 1.4 section 6): Read, Write, Compare,
//! Write Zeroes, Dataset Management, Flush and the reservation commands.

use alcubierre_types::{BlockCount, Lba};
use bytes::Bytes;

use crate::capsule::Sqe;
use crate::identify::{self, NSID};
use crate::queue::{fail, CmdResult, IoKind, Output, QueuePair, Resp};
use crate::spec::io_op;
use crate::status::Status;

impl QueuePair {
    pub(crate) fn io(&mut self, sqe: &Sqe, data: Bytes, xfer: u32, out: &mut Output) -> CmdResult {
        let ctrl = self.ctrl.clone().expect("live queue");
        let Some(s) = ctrl.subsystem().cloned() else {
            return fail(Status::INVALID_OPCODE);
        };
        let op = sqe.opcode();
        let nsid = sqe.nsid();
        if nsid != NSID && !(op == io_op::FLUSH && nsid == 0xffff_ffff) {
            return fail(Status::INVALID_NS);
        }
        if !matches!(op, io_op::RESV_REPORT | io_op::RESV_REGISTER)
            && !identify::ana_accessible(s.ana().0)
        {
            return fail(Status::ANA_INACCESSIBLE);
        }
        let g = s.device.geometry();
        let bs = g.block_size().bytes();
        let cid = sqe.cid();
        let check_resv = |write: bool| s.reservations.lock().check_io(&ctrl.hostid, write);
        let range = |lba: u64, nlb: u64| -> Result<(Lba, BlockCount), Status> {
            let (l, c) = (Lba(lba), BlockCount(nlb));
            if lba.checked_add(nlb).is_none() || !g.contains(l, c) {
                return Err(Status::LBA_OUT_OF_RANGE);
            }
            Ok((l, c))
        };
        let max = self.target.config.max_transfer() as u64;
        match op {
            io_op::READ | io_op::WRITE | io_op::COMPARE => {
                let (lba, count) = match range(sqe.slba(), sqe.nlb() as u64) {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                let bytes = count.0 * bs;
                if bytes > max {
                    return fail(Status::INVALID_FIELD);
                }
                if bytes != xfer as u64 {
                    return fail(Status::SGL_LENGTH_INVALID);
                }
                if let Err(e) = check_resv(op == io_op::WRITE) {
                    return fail(e);
                }
                match op {
                    io_op::READ => self.start_io(cid, IoKind::Read { lba, count }, None, xfer, out),
                    io_op::WRITE => self.start_io(cid, IoKind::Write { lba, data }, None, 0, out),
                    _ => self.start_io(cid, IoKind::Read { lba, count }, Some(data), 0, out),
                }
            }
            io_op::WRITE_ZEROES => {
                let (lba, count) = match range(sqe.slba(), sqe.nlb() as u64) {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                if let Err(e) = check_resv(true) {
                    return fail(e);
                }
                let deallocate = sqe.cdw(12) & (1 << 25) != 0;
                let kind = if deallocate {
                    IoKind::Unmap {
                        ranges: vec![(lba, count)],
                    }
                } else {
                    IoKind::WriteZeroes { lba, count }
                };
                self.start_io(cid, kind, None, 0, out)
            }
            io_op::DSM => {
                let nr = (sqe.cdw(10) & 0xff) as usize + 1;
                if data.len() < nr * 16 {
                    return fail(Status::SGL_LENGTH_INVALID);
                }
                // Only Attribute Deallocate acts; the other attributes are hints.
                if sqe.cdw(11) & 0b100 == 0 {
                    return Ok(Some(Resp::default()));
                }
                let mut ranges = Vec::with_capacity(nr);
                for i in 0..nr {
                    let r = &data[i * 16..i * 16 + 16];
                    let nlb = u32::from_le_bytes(r[4..8].try_into().expect("4 bytes")) as u64;
                    let slba = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
                    if nlb == 0 {
                        continue;
                    }
                    match range(slba, nlb) {
                        Ok(r) => ranges.push(r),
                        Err(e) => return fail(e),
                    }
                }
                if let Err(e) = check_resv(true) {
                    return fail(e);
                }
                if ranges.is_empty() {
                    return Ok(Some(Resp::default()));
                }
                self.start_io(cid, IoKind::Unmap { ranges }, None, 0, out)
            }
            io_op::FLUSH => self.start_io(cid, IoKind::Flush, None, 0, out),
            io_op::RESV_REGISTER => {
                let Some((crkey, nrkey)) = two_keys(&data) else {
                    return fail(Status::SGL_LENGTH_INVALID);
                };
                let cdw10 = sqe.cdw(10);
                let cptpl = cdw10 >> 30;
                if cptpl == 2 || cptpl == 1 {
                    return fail(Status::INVALID_FIELD);
                }
                let r = s.reservations.lock().register(
                    ctrl.hostid,
                    ctrl.cntlid,
                    (cdw10 & 7) as u8,
                    cdw10 & 8 != 0,
                    crkey,
                    nrkey,
                );
                r.map(|()| Some(Resp::default())).map_err(|e| (e, 0))
            }
            io_op::RESV_ACQUIRE => {
                let Some((crkey, prkey)) = two_keys(&data) else {
                    return fail(Status::SGL_LENGTH_INVALID);
                };
                let cdw10 = sqe.cdw(10);
                let r = s.reservations.lock().acquire(
                    ctrl.hostid,
                    (cdw10 & 7) as u8,
                    crkey,
                    prkey,
                    (cdw10 >> 8) as u8,
                );
                r.map(|()| Some(Resp::default())).map_err(|e| (e, 0))
            }
            io_op::RESV_RELEASE => {
                if data.len() < 8 {
                    return fail(Status::SGL_LENGTH_INVALID);
                }
                let crkey = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
                let cdw10 = sqe.cdw(10);
                let r = s.reservations.lock().release(
                    ctrl.hostid,
                    (cdw10 & 7) as u8,
                    crkey,
                    (cdw10 >> 8) as u8,
                );
                r.map(|()| Some(Resp::default())).map_err(|e| (e, 0))
            }
            io_op::RESV_REPORT => {
                let numd = sqe.cdw(10) as u64 + 1;
                let eds = sqe.cdw(11) & 1 != 0;
                let mut d = s.reservations.lock().report(eds);
                d.resize((numd * 4).min(xfer as u64) as usize, 0);
                Ok(Some(Resp::data(d)))
            }
            _ => fail(Status::INVALID_OPCODE),
        }
    }
}

fn two_keys(d: &[u8]) -> Option<(u64, u64)> {
    if d.len() < 16 {
        return None;
    }
    Some((
        u64::from_le_bytes(d[0..8].try_into().ok()?),
        u64::from_le_bytes(d[8..16].try_into().ok()?),
    ))
}
