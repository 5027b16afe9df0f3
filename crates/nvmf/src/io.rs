//! NVM command set I/O commands of a [`QueuePair`] (Base 1.4 section 6): Read, Write, Compare,
//! Write Zeroes, Dataset Management, Flush and the reservation commands.

use alcubierre_block::{Op, ResvCommand};
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
                let read = IoKind::Op(Op::Read { lba, count });
                match op {
                    io_op::READ => self.start_io(cid, read, None, xfer, out),
                    io_op::WRITE => {
                        self.start_io(cid, IoKind::Op(Op::Write { lba, data }), None, 0, out)
                    }
                    _ => self.start_io(cid, read, Some(data), 0, out),
                }
            }
            io_op::WRITE_ZEROES => {
                let (lba, count) = match range(sqe.slba(), sqe.nlb() as u64) {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                let deallocate = sqe.cdw(12) & (1 << 25) != 0;
                let kind = IoKind::Op(if deallocate {
                    Op::Unmap { lba, count }
                } else {
                    Op::WriteZeroes { lba, count }
                });
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
                if ranges.is_empty() {
                    return Ok(Some(Resp::default()));
                }
                self.start_io(cid, IoKind::Unmap { ranges }, None, 0, out)
            }
            io_op::FLUSH => self.start_io(cid, IoKind::Op(Op::Flush), None, 0, out),
            io_op::RESV_REGISTER
            | io_op::RESV_ACQUIRE
            | io_op::RESV_RELEASE
            | io_op::RESV_REPORT => {
                let cdw10 = sqe.cdw(10);
                let action = (cdw10 & 7) as u8;
                let rtype = (cdw10 >> 8) as u8;
                let key = |i: usize| {
                    data.get(i * 8..i * 8 + 8)
                        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                };
                let (cmd, report, xfer) = match op {
                    io_op::RESV_REGISTER => {
                        let (Some(current), Some(new)) = (key(0), key(1)) else {
                            return fail(Status::SGL_LENGTH_INVALID);
                        };
                        // Changing Persist Through Power Loss is not supported: reservations
                        // already survive a failover, and are kept in the cluster's store.
                        if matches!(cdw10 >> 30, 1 | 2) {
                            return fail(Status::INVALID_FIELD);
                        }
                        let ignore_key = cdw10 & 8 != 0;
                        let cmd = ResvCommand::Register {
                            action,
                            ignore_key,
                            current,
                            new,
                        };
                        (cmd, None, 0)
                    }
                    io_op::RESV_ACQUIRE => {
                        let (Some(current), Some(preempt)) = (key(0), key(1)) else {
                            return fail(Status::SGL_LENGTH_INVALID);
                        };
                        let cmd = ResvCommand::Acquire {
                            action,
                            current,
                            preempt,
                            rtype,
                        };
                        (cmd, None, 0)
                    }
                    io_op::RESV_RELEASE => {
                        let Some(current) = key(0) else {
                            return fail(Status::SGL_LENGTH_INVALID);
                        };
                        let cmd = ResvCommand::Release {
                            action,
                            current,
                            rtype,
                        };
                        (cmd, None, 0)
                    }
                    _ => {
                        let numd = sqe.cdw(10) as u64 + 1;
                        let eds = sqe.cdw(11) & 1 != 0;
                        let len = (numd * 4).min(xfer as u64) as usize;
                        (ResvCommand::Report, Some((eds, len)), xfer)
                    }
                };
                let kind = IoKind::Reserve {
                    cntlid: ctrl.cntlid,
                    cmd,
                    report,
                };
                self.start_io(cid, kind, None, xfer, out)
            }
            _ => fail(Status::INVALID_OPCODE),
        }
    }
}
