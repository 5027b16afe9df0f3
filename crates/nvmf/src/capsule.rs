//! Submission and completion queue entries as they travel in capsules (Base 1.4 section 4.2 and
//! 4.6, Fabrics 1.1 section 2.1). Fixed layouts; accessors read little-endian fields in place.

use crate::status::Status;

/// Size of a submission queue entry.
pub const SQE_LEN: usize = 64;
/// Size of a completion queue entry.
pub const CQE_LEN: usize = 16;

/// SGL descriptor identifier of in-capsule data: Data Block, Offset (Fabrics 1.1 section 2.3.1).
pub const SGL_INCAPSULE: u8 = 0x01;
/// SGL descriptor identifier of host-transferred data: Transport Data Block, Transport specific
/// (TCP 1.0 section 3.3.4).
pub const SGL_TRANSPORT: u8 = 0x5a;

/// A 64-byte submission queue entry (command).
#[derive(Clone, PartialEq, Eq)]
pub struct Sqe(pub [u8; SQE_LEN]);

impl Default for Sqe {
    fn default() -> Self {
        Sqe([0; SQE_LEN])
    }
}

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sqe(op={:#04x} cid={} nsid={} cdw10={:#x})",
            self.opcode(),
            self.cid(),
            self.nsid(),
            self.cdw(10)
        )
    }
}

impl Sqe {
    fn u16_at(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.0[o], self.0[o + 1]])
    }
    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.0[o..o + 4].try_into().expect("4 bytes"))
    }
    fn u64_at(&self, o: usize) -> u64 {
        u64::from_le_bytes(self.0[o..o + 8].try_into().expect("8 bytes"))
    }

    /// Command opcode (byte 0).
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }
    /// Fused operation bits (byte 1, bits 1:0).
    pub fn fuse(&self) -> u8 {
        self.0[1] & 3
    }
    /// PRP or SGL for Data Transfer (byte 1, bits 7:6); fabrics commands must use SGLs (01b).
    pub fn psdt(&self) -> u8 {
        self.0[1] >> 6
    }
    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.u16_at(2)
    }
    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.u32_at(4)
    }
    /// Fabrics command type (byte 4 of fabrics commands).
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }
    /// Command dword `n` (2..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.u32_at(n * 4)
    }
    /// SGL descriptor address (bytes 24..32).
    pub fn sgl_addr(&self) -> u64 {
        self.u64_at(24)
    }
    /// SGL descriptor length (bytes 32..36).
    pub fn sgl_len(&self) -> u32 {
        self.u32_at(32)
    }
    /// SGL descriptor identifier (byte 39: type in bits 7:4, subtype in 3:0).
    pub fn sgl_id(&self) -> u8 {
        self.0[39]
    }
    /// Starting LBA of NVM I/O commands (cdw10-11).
    pub fn slba(&self) -> u64 {
        self.u64_at(40)
    }
    /// Number of logical blocks of NVM I/O commands, 1-based (cdw12 bits 15:0 plus one).
    pub fn nlb(&self) -> u32 {
        (self.cdw(12) & 0xffff) + 1
    }
    /// Fabrics Property Get/Set: property size attribute (byte 40).
    pub fn prop_attrib(&self) -> u8 {
        self.0[40]
    }
    /// Fabrics Property Get/Set: offset (bytes 44..48).
    pub fn prop_offset(&self) -> u32 {
        self.u32_at(44)
    }
    /// Fabrics Property Set: value (bytes 48..56).
    pub fn prop_value(&self) -> u64 {
        self.u64_at(48)
    }
    /// Connect: record format (bytes 40..42).
    pub fn connect_recfmt(&self) -> u16 {
        self.u16_at(40)
    }
    /// Connect: queue id (bytes 42..44).
    pub fn connect_qid(&self) -> u16 {
        self.u16_at(42)
    }
    /// Connect: submission queue size, 0-based (bytes 44..46).
    pub fn connect_sqsize(&self) -> u16 {
        self.u16_at(44)
    }
    /// Connect: connect attributes (byte 46); bit 2 disables SQ flow control.
    pub fn connect_cattr(&self) -> u8 {
        self.0[46]
    }
    /// Connect: keep alive timeout in milliseconds (bytes 48..52).
    pub fn connect_kato(&self) -> u32 {
        self.u32_at(48)
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.0[2..4].copy_from_slice(&cid.to_le_bytes());
    }
    /// Sets the opcode.
    pub fn set_opcode(&mut self, op: u8) {
        self.0[0] = op;
    }
    /// Sets the namespace id.
    pub fn set_nsid(&mut self, nsid: u32) {
        self.0[4..8].copy_from_slice(&nsid.to_le_bytes());
    }
    /// Sets command dword `n`.
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        self.0[n * 4..n * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets byte `i` (for fields below dword granularity).
    pub fn set_byte(&mut self, i: usize, v: u8) {
        self.0[i] = v;
    }
    /// Sets the SGL descriptor: SGL use in PSDT, address, length and identifier.
    pub fn set_sgl(&mut self, addr: u64, len: u32, id: u8) {
        self.0[1] = (self.0[1] & 0x3f) | 0x40;
        self.0[24..32].copy_from_slice(&addr.to_le_bytes());
        self.0[32..36].copy_from_slice(&len.to_le_bytes());
        self.0[36..39].fill(0);
        self.0[39] = id;
    }
}

/// A 16-byte completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cqe {
    /// Command specific dword 0.
    pub dw0: u32,
    /// Command specific dword 1.
    pub dw1: u32,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status.
    pub status: Status,
}

impl Cqe {
    /// Encodes the entry (the phase tag is always 0 on fabrics).
    pub fn to_bytes(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.to_field().to_le_bytes());
        b
    }

    /// Decodes an entry.
    pub fn from_bytes(b: &[u8; CQE_LEN]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Self {
            dw0: u32_at(0),
            dw1: u32_at(4),
            sqhd: u16_at(8),
            sqid: u16_at(10),
            cid: u16_at(12),
            status: Status::from_field(u16_at(14)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_fields() {
        // Base 1.4 figure 105 (common command format) and figure 351 (Read command).
        let mut s = Sqe::default();
        s.set_opcode(0x02);
        s.set_cid(0x1234);
        s.set_nsid(1);
        s.set_cdw(10, 0x89ab_cdef);
        s.set_cdw(11, 0x0123_4567);
        s.set_cdw(12, 7);
        s.set_sgl(0, 4096, SGL_TRANSPORT);
        assert_eq!(s.opcode(), 2);
        assert_eq!(s.cid(), 0x1234);
        assert_eq!(s.nsid(), 1);
        assert_eq!(s.slba(), 0x0123_4567_89ab_cdef);
        assert_eq!(s.nlb(), 8);
        assert_eq!(s.psdt(), 1);
        assert_eq!(s.sgl_len(), 4096);
        assert_eq!(s.sgl_id(), SGL_TRANSPORT);
    }

    #[test]
    fn cqe_round_trip() {
        let c = Cqe {
            dw0: 7,
            dw1: 9,
            sqhd: 3,
            sqid: 2,
            cid: 77,
            status: Status::LBA_OUT_OF_RANGE,
        };
        assert_eq!(Cqe::from_bytes(&c.to_bytes()), c);
    }
}
