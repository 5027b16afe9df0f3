//! Copy offload and provisioning status: EXTENDED COPY (LID1, SPC-4 section 6.4) with
//! block-to-block segments inside the LU, RECEIVE COPY RESULTS (COPY STATUS, OPERATING
//! PARAMETERS), the Third-party Copy VPD page, and GET LBA STATUS (SBC-4 section 5.8).
//!
//! A copy runs inside the command: it reads and writes through the same device path as READ
//! and WRITE, so every block it writes is durable on every in-sync replica before GOOD, and a
//! reservation that refuses the nexus's writes refuses the copy.

use alcubierre_block::{HostId, Op};
use alcubierre_types::Lba;
use bytes::Bytes;

use super::{key, Lun, Outcome, Sense};

/// The most copy target (CSCD) descriptors in one EXTENDED COPY.
pub const MAX_TARGET_DESCRIPTORS: u16 = 8;
/// The most segment descriptors in one EXTENDED COPY.
pub const MAX_SEGMENT_DESCRIPTORS: u16 = 128;
/// The most bytes of target and segment descriptors in one EXTENDED COPY.
pub const MAX_DESCRIPTOR_LIST: u32 = 8192;
/// The most bytes one segment copies (a block-to-block segment's 16-bit block count).
const MAX_SEGMENT_BYTES: u32 = 0xffff * 4096;
/// The most bytes read and written at a time while copying.
const CHUNK_BYTES: u64 = 1 << 20;

/// Identification descriptor CSCD descriptor (the only copy target type served).
const TARGET_IDENT: u8 = 0xe4;
/// Block device to block device segment descriptor (the only segment type served).
const SEGMENT_BLOCK_TO_BLOCK: u8 = 0x02;

const TOO_MANY_TARGETS: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x06);
const UNSUPPORTED_TARGET: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x07);
const TOO_MANY_SEGMENTS: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x08);
const UNSUPPORTED_SEGMENT: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x09);
const OPERATION_IN_PROGRESS: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x00, 0x16);
/// COPY ABORTED, UNREACHABLE COPY TARGET.
const UNREACHABLE_TARGET: Sense = Sense::new(key::COPY_ABORTED, 0x08, 0x04);
/// COPY ABORTED with no further code: the failing segment is in the command-specific
/// information field.
const SEGMENT_FAILED: Sense = Sense::new(key::COPY_ABORTED, 0x00, 0x00);

/// What the copy manager holds for RECEIVE COPY RESULTS of one list identifier of a nexus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CopyStatus {
    /// Running.
    InProgress,
    /// Ended: whether it failed, the segments done, the bytes copied.
    Done {
        failed: bool,
        segments: u16,
        bytes: u64,
    },
}

/// What a parameter list's LIST ID USAGE asks of its list identifier.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListUse {
    /// 00b: the copy's status is held for RECEIVE COPY RESULTS.
    Held,
    /// 10b: the identifier is only checked against copies in progress.
    Checked,
    /// 11b: no list identifier.
    Unused,
}

/// A checked EXTENDED COPY parameter list.
struct CopyList {
    list_id: u8,
    usage: ListUse,
    segments: Vec<Segment>,
}

/// One block-to-block segment: source and destination LBAs and the block count.
struct Segment {
    src: u64,
    dst: u64,
    blocks: u64,
}

fn abort_segment(index: usize) -> Outcome {
    Outcome::check(Sense {
        command: Some(index as u32),
        ..SEGMENT_FAILED
    })
}

impl Lun {
    /// GET LBA STATUS (16): one descriptor from the LBA asked for to the end of the LU, mapped
    /// or of unknown state (provisioning status 0h). The cache does not track which blocks the
    /// backend allocated, and a block the host unmapped reads zeroes either way.
    pub(super) fn get_lba_status(&self, cdb: &[u8]) -> Result<Outcome, Outcome> {
        let lba = u64::from_be_bytes(cdb[2..10].try_into().expect("8"));
        let alloc = u32::from_be_bytes(cdb[10..14].try_into().expect("4")) as usize;
        if lba >= self.blocks() {
            return Err(Outcome::check(Sense::LBA_OUT_OF_RANGE));
        }
        let mut d = vec![0u8; 24];
        d[..4].copy_from_slice(&20u32.to_be_bytes());
        d[8..16].copy_from_slice(&lba.to_be_bytes());
        let extent = (self.blocks() - lba).min(u64::from(u32::MAX)) as u32;
        d[16..20].copy_from_slice(&extent.to_be_bytes());
        d.truncate(alloc);
        Ok(Outcome::good(Bytes::from(d)))
    }

    /// The Third-party Copy VPD page's descriptors (SPC-4 section 7.8.17): supported commands,
    /// parameter data and supported descriptors.
    pub(super) fn third_party_copy_page() -> Vec<u8> {
        let mut b = Vec::new();
        // Supported commands: EXTENDED COPY (LID1), RECEIVE COPY RESULTS (COPY STATUS,
        // OPERATING PARAMETERS).
        let commands = [0x83u8, 1, 0x00, 0x84, 2, 0x00, 0x03];
        let mut body = vec![commands.len() as u8];
        body.extend_from_slice(&commands);
        body.resize(body.len().next_multiple_of(4), 0);
        descriptor(&mut b, 0x0001, &body);
        // Parameter data.
        let mut p = vec![0u8; 28];
        p[4..6].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
        p[6..8].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
        p[8..12].copy_from_slice(&MAX_DESCRIPTOR_LIST.to_be_bytes());
        descriptor(&mut b, 0x0004, &p);
        // Supported descriptors.
        let codes = [SEGMENT_BLOCK_TO_BLOCK, TARGET_IDENT];
        let mut s = vec![codes.len() as u8];
        s.extend_from_slice(&codes);
        s.resize(s.len().next_multiple_of(4), 0);
        descriptor(&mut b, 0x0008, &s);
        b
    }

    /// RECEIVE COPY RESULTS (SPC-4 section 6.18, LID1 service actions).
    pub(super) fn receive_copy_results(
        &self,
        host: &HostId,
        cdb: &[u8],
    ) -> Result<Outcome, Outcome> {
        let alloc = u32::from_be_bytes(cdb[10..14].try_into().expect("4")) as usize;
        let mut d = match cdb[1] & 0x1f {
            0x00 => {
                // COPY STATUS of the list identifier held for this nexus.
                let status = self.copies.lock().get(&(*host, cdb[2])).copied();
                let Some(status) = status else {
                    return Err(Outcome::check(Sense::INVALID_FIELD));
                };
                let mut d = vec![0u8; 12];
                d[..4].copy_from_slice(&8u32.to_be_bytes());
                match status {
                    CopyStatus::InProgress => d[4] = 0x10,
                    CopyStatus::Done {
                        failed,
                        segments,
                        bytes,
                    } => {
                        d[4] = u8::from(failed);
                        d[5..7].copy_from_slice(&segments.to_be_bytes());
                        // Bytes while they fit the field, else kibibytes (F1h).
                        let (units, count) = match u32::try_from(bytes) {
                            Ok(b) => (0x00, b),
                            Err(_) => (0xf1, (bytes >> 10).min(u64::from(u32::MAX)) as u32),
                        };
                        d[7] = units;
                        d[8..12].copy_from_slice(&count.to_be_bytes());
                    }
                }
                d
            }
            0x03 => {
                // OPERATING PARAMETERS.
                let codes = [SEGMENT_BLOCK_TO_BLOCK, TARGET_IDENT];
                let mut d = vec![0u8; 44];
                d.extend_from_slice(&codes);
                let len = (d.len() - 4) as u32;
                d[..4].copy_from_slice(&len.to_be_bytes());
                d[4] = 0x00; // no SNLID: list identifiers are per nexus
                d[8..10].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
                d[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
                d[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST.to_be_bytes());
                d[16..20].copy_from_slice(&MAX_SEGMENT_BYTES.to_be_bytes());
                // No inline data, no held data, no stream devices.
                d[34..36].copy_from_slice(&1u16.to_be_bytes()); // total concurrent copies
                d[36] = 1; // maximum concurrent copies
                d[37] = self.block_size().trailing_zeros() as u8; // data segment granularity
                d[43] = codes.len() as u8;
                d
            }
            _ => return Err(Outcome::check(Sense::INVALID_FIELD)),
        };
        d.truncate(alloc);
        Ok(Outcome::good(Bytes::from(d)))
    }

    /// EXTENDED COPY (LID1): validates the whole parameter list, then copies segment by
    /// segment inside this LU.
    pub(super) async fn extended_copy(
        &self,
        host: &HostId,
        cdb: &[u8],
        data: Bytes,
    ) -> Result<Outcome, Outcome> {
        if cdb[1] & 0x1f != 0 {
            // Only LID1 (service action 00h).
            return Err(Outcome::check(Sense::INVALID_FIELD));
        }
        if data.is_empty() {
            // A zero parameter list length is not an error (SPC-4 section 6.4.1).
            return Ok(Outcome::good(Bytes::new()));
        }
        let list = self.parse_copy(&data)?;
        let key = (*host, list.list_id);
        if list.usage != ListUse::Unused {
            let mut copies = self.copies.lock();
            if copies.get(&key) == Some(&CopyStatus::InProgress) {
                return Err(Outcome::check(OPERATION_IN_PROGRESS));
            }
            if list.usage == ListUse::Held {
                copies.insert(key, CopyStatus::InProgress);
            }
        }
        let mut bytes = 0u64;
        let mut result = Ok(Outcome::good(Bytes::new()));
        let mut done = 0u16;
        for (i, s) in list.segments.iter().enumerate() {
            match self.copy_segment(host, s).await {
                Ok(()) => {
                    bytes += s.blocks * self.block_size();
                    done += 1;
                }
                Err(o) => {
                    // A reservation conflict is reported as such; any other failure aborts
                    // the copy at this segment.
                    result = Err(if o.status == super::status::RESERVATION_CONFLICT {
                        o
                    } else {
                        abort_segment(i)
                    });
                    break;
                }
            }
        }
        if list.usage == ListUse::Held {
            self.copies.lock().insert(
                key,
                CopyStatus::Done {
                    failed: result.is_err(),
                    segments: done,
                    bytes,
                },
            );
        }
        result
    }

    /// Checks an EXTENDED COPY parameter list: its list identifier and its use, and its
    /// segments (bounds checked).
    fn parse_copy(&self, p: &[u8]) -> Result<CopyList, Outcome> {
        let param_len = Outcome::check(Sense::PARAMETER_LENGTH);
        if p.len() < 16 {
            return Err(param_len);
        }
        let list_id = p[0];
        let usage = (p[1] >> 3) & 3;
        let targets_len = u16::from_be_bytes([p[2], p[3]]) as usize;
        let segments_len = u32::from_be_bytes(p[8..12].try_into().expect("4")) as usize;
        let inline_len = u32::from_be_bytes(p[12..16].try_into().expect("4")) as usize;
        let total = targets_len as u64 + segments_len as u64;
        if 16 + total + inline_len as u64 > p.len() as u64 || total > u64::from(MAX_DESCRIPTOR_LIST)
        {
            return Err(param_len);
        }
        let usage = match usage {
            0 => ListUse::Held,
            2 => ListUse::Checked,
            3 if list_id == 0 => ListUse::Unused,
            _ => return Err(Outcome::check(Sense::INVALID_PARAMETER)),
        };
        // Copy target descriptors: each must name this LU.
        let targets = &p[16..16 + targets_len];
        let mut count = 0usize;
        let mut at = 0;
        while at < targets.len() {
            let len = if matches!(targets[at], 0xea | 0xeb) {
                64
            } else {
                32
            };
            count += 1;
            at += len;
        }
        if count > usize::from(MAX_TARGET_DESCRIPTORS) {
            return Err(Outcome::check(TOO_MANY_TARGETS));
        }
        if at != targets.len() {
            return Err(param_len);
        }
        let mut reachable = Vec::with_capacity(count);
        for t in targets.chunks(32) {
            if t[0] != TARGET_IDENT {
                return Err(Outcome::check(UNSUPPORTED_TARGET));
            }
            // Peripheral device type 0 (block) and our block length, or the target is not one
            // this copy manager can reach.
            let block_len = u32::from_be_bytes([0, t[29], t[30], t[31]]);
            reachable.push(
                t[1] & 0x1f == 0
                    && block_len == self.block_size() as u32
                    && self.designates_this_lu(&t[4..24]),
            );
        }
        // Segment descriptors.
        let mut segs = &p[16 + targets_len..16 + targets_len + segments_len];
        let mut segments = Vec::new();
        let mut index = 0usize;
        while !segs.is_empty() {
            if segs.len() < 4 {
                return Err(param_len);
            }
            let len = 4 + u16::from_be_bytes([segs[2], segs[3]]) as usize;
            if segments.len() >= usize::from(MAX_SEGMENT_DESCRIPTORS) {
                return Err(Outcome::check(TOO_MANY_SEGMENTS));
            }
            if segs.len() < len {
                return Err(param_len);
            }
            let d = &segs[..len];
            segs = &segs[len..];
            if d[0] != SEGMENT_BLOCK_TO_BLOCK {
                return Err(Outcome::check(UNSUPPORTED_SEGMENT));
            }
            if len != 28 {
                return Err(Outcome::check(Sense::INVALID_PARAMETER));
            }
            let src = u16::from_be_bytes([d[4], d[5]]) as usize;
            let dst = u16::from_be_bytes([d[6], d[7]]) as usize;
            if !reachable.get(src).copied().unwrap_or(false)
                || !reachable.get(dst).copied().unwrap_or(false)
            {
                return Err(Outcome::check(Sense {
                    command: Some(index as u32),
                    ..UNREACHABLE_TARGET
                }));
            }
            let s = Segment {
                blocks: u64::from(u16::from_be_bytes([d[10], d[11]])),
                src: u64::from_be_bytes(d[12..20].try_into().expect("8")),
                dst: u64::from_be_bytes(d[20..28].try_into().expect("8")),
            };
            if self.check_lba((s.src, s.blocks)).is_err()
                || self.check_lba((s.dst, s.blocks)).is_err()
            {
                return Err(abort_segment(index));
            }
            segments.push(s);
            index += 1;
        }
        Ok(CopyList {
            list_id,
            usage,
            segments,
        })
    }

    /// Whether a designation descriptor (code set, association and type, length, designator)
    /// names this LU: its NAA designator.
    fn designates_this_lu(&self, d: &[u8]) -> bool {
        let len = usize::from(d[3]);
        d[0] & 0x0f == 0x01
            && d[1] & 0x3f == 0x03
            && len == self.naa.len()
            && d[4..4 + len] == self.naa
    }

    /// Copies one segment in chunks, back to front when the destination overlaps the source
    /// from above (as a copy through a buffer of the whole segment would).
    async fn copy_segment(&self, host: &HostId, s: &Segment) -> Result<(), Outcome> {
        let chunk = (CHUNK_BYTES / self.block_size())
            .min(self.max_transfer_blocks())
            .max(1);
        let backwards = s.dst > s.src && s.dst < s.src + s.blocks;
        let mut done = 0;
        while done < s.blocks {
            let n = chunk.min(s.blocks - done);
            let off = if backwards { s.blocks - done - n } else { done };
            let d = self.read(host, s.src + off, n).await?;
            self.io(
                host,
                Op::Write {
                    lba: Lba(s.dst + off),
                    data: d,
                },
            )
            .await?;
            done += n;
        }
        Ok(())
    }
}

/// Appends a Third-party Copy descriptor: type, length, body.
fn descriptor(b: &mut Vec<u8>, kind: u16, body: &[u8]) {
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(body.len() as u16).to_be_bytes());
    b.extend_from_slice(body);
}
