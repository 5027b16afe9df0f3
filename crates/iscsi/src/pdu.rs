//! iSCSI PDUs (RFC 7143 section 11): the 48-byte Basic Header Segment, additional header
//! segments, the data segment padded to 4 bytes, and the optional CRC32C header and data
//! digests.
//!
//! ```text
//!  0        1        2        3        4        5  6  7   8 ........ 15
//! +--------+--------+--------+--------+--------+--------+------------+
//! |.I|opcode| flags  | opcode-specific | AHSlen | DataSegmentLength | LUN / specific |
//! +--------+--------+--------+--------+--------+--------+------------+
//!  16..19 Initiator Task Tag, 20..47 opcode-specific (CmdSN, StatSN, CDB, ...)
//! then: AHS (AHSlen x 4 bytes), header digest (4), data (padded to 4), data digest (4)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// The Basic Header Segment's length.
pub const BHS_LEN: usize = 48;

/// Opcodes (RFC 7143 section 11.1.1).
pub mod op {
    /// NOP-Out.
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command.
    pub const SCSI_CMD: u8 = 0x01;
    /// SCSI Task Management Function Request.
    pub const TMF_REQ: u8 = 0x02;
    /// Login Request.
    pub const LOGIN_REQ: u8 = 0x03;
    /// Text Request.
    pub const TEXT_REQ: u8 = 0x04;
    /// SCSI Data-Out.
    pub const DATA_OUT: u8 = 0x05;
    /// Logout Request.
    pub const LOGOUT_REQ: u8 = 0x06;
    /// SNACK Request.
    pub const SNACK: u8 = 0x10;
    /// NOP-In.
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response.
    pub const SCSI_RESP: u8 = 0x21;
    /// SCSI Task Management Function Response.
    pub const TMF_RESP: u8 = 0x22;
    /// Login Response.
    pub const LOGIN_RESP: u8 = 0x23;
    /// Text Response.
    pub const TEXT_RESP: u8 = 0x24;
    /// SCSI Data-In.
    pub const DATA_IN: u8 = 0x25;
    /// Logout Response.
    pub const LOGOUT_RESP: u8 = 0x26;
    /// Ready To Transfer.
    pub const R2T: u8 = 0x31;
    /// Asynchronous Message.
    pub const ASYNC: u8 = 0x32;
    /// Reject.
    pub const REJECT: u8 = 0x3f;
}

/// A Basic Header Segment, with accessors for its common fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bhs(op {:#04x} flags {:#04x} itt {:#x} dlen {})",
            self.opcode(),
            self.flags(),
            self.itt(),
            self.data_len()
        )
    }
}

impl Bhs {
    /// A zeroed header with `opcode`.
    pub fn new(opcode: u8) -> Self {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode;
        Self(b)
    }
    /// The opcode (6 bits).
    pub fn opcode(&self) -> u8 {
        self.0[0] & 0x3f
    }
    /// The immediate-delivery bit.
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }
    /// Byte 1.
    pub fn flags(&self) -> u8 {
        self.0[1]
    }
    /// Sets byte 1.
    pub fn set_flags(&mut self, f: u8) {
        self.0[1] = f;
    }
    /// The final bit (bit 7 of byte 1).
    pub fn final_bit(&self) -> bool {
        self.0[1] & 0x80 != 0
    }
    /// AHS length in 4-byte words.
    pub fn ahs_words(&self) -> usize {
        self.0[4] as usize
    }
    /// The data segment's length (without padding).
    pub fn data_len(&self) -> usize {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]]) as usize
    }
    /// Sets the data segment's length.
    pub fn set_data_len(&mut self, n: usize) {
        let b = (n as u32).to_be_bytes();
        self.0[5..8].copy_from_slice(&b[1..]);
    }
    /// The LUN field (bytes 8..16).
    pub fn lun(&self) -> u64 {
        self.u64_at(8)
    }
    /// The Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }
    /// A big-endian u16 at `at`.
    pub fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }
    /// A big-endian u32 at `at`.
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
    /// A big-endian u64 at `at`.
    pub fn u64_at(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }
    /// Sets a big-endian u16 at `at`.
    pub fn put_u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets a big-endian u32 at `at`.
    pub fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets a big-endian u64 at `at`.
    pub fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }
}

/// A PDU: header, additional header segments and data (unpadded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    /// The Basic Header Segment.
    pub bhs: Bhs,
    /// Additional header segments (raw).
    pub ahs: Bytes,
    /// The data segment.
    pub data: Bytes,
}

impl Pdu {
    /// A PDU with `bhs` and `data` (the header's data length is set when encoded).
    pub fn new(bhs: Bhs, data: Bytes) -> Self {
        Self {
            bhs,
            ahs: Bytes::new(),
            data,
        }
    }
}

/// Why bytes are not a PDU; each ends the connection (error recovery level 0), except a data
/// digest error, which the target answers with a Reject and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// The header digest does not match.
    #[error("header digest mismatch")]
    HeaderDigest,
    /// The data digest does not match (the PDU's header is good).
    #[error("data digest mismatch")]
    DataDigest(Box<Bhs>),
    /// The data segment is longer than negotiated.
    #[error("data segment of {len} bytes exceeds MaxRecvDataSegmentLength {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Digests and limits in force on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// CRC32C header digests.
    pub header_digest: bool,
    /// CRC32C data digests.
    pub data_digest: bool,
    /// The largest data segment this side accepts.
    pub max_recv: usize,
}

impl Default for Framing {
    fn default() -> Self {
        // Login PDUs: no digests; RFC 7143 section 13.12 default of 8192 bytes.
        Self {
            header_digest: false,
            data_digest: false,
            max_recv: 8192,
        }
    }
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

impl Framing {
    /// Decodes one PDU from the start of `buf`: the PDU and the bytes it took, or `None` when
    /// more bytes are needed.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Pdu, usize)>, PduError> {
        if buf.len() < BHS_LEN {
            return Ok(None);
        }
        let bhs = Bhs(buf[..BHS_LEN].try_into().expect("48 bytes"));
        let ahs_len = bhs.ahs_words() * 4;
        let dlen = bhs.data_len();
        // Login PDUs may carry up to 8192 bytes before anything is negotiated.
        if dlen > self.max_recv.max(8192) {
            return Err(PduError::TooLong {
                len: dlen,
                max: self.max_recv,
            });
        }
        let hd = if self.header_digest { 4 } else { 0 };
        let dd = if self.data_digest && dlen > 0 { 4 } else { 0 };
        let head = BHS_LEN + ahs_len;
        let total = head + hd + dlen + pad4(dlen) + dd;
        if buf.len() < total {
            return Ok(None);
        }
        if hd > 0 {
            let want = u32::from_le_bytes(buf[head..head + 4].try_into().expect("4"));
            if crc32c::crc32c(&buf[..head]) != want {
                return Err(PduError::HeaderDigest);
            }
        }
        let data_at = head + hd;
        let padded = dlen + pad4(dlen);
        if dd > 0 {
            let at = data_at + padded;
            let want = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4"));
            if crc32c::crc32c(&buf[data_at..data_at + padded]) != want {
                return Err(PduError::DataDigest(Box::new(bhs)));
            }
        }
        let pdu = Pdu {
            ahs: Bytes::copy_from_slice(&buf[BHS_LEN..head]),
            data: Bytes::copy_from_slice(&buf[data_at..data_at + dlen]),
            bhs,
        };
        Ok(Some((pdu, total)))
    }

    /// The bytes a PDU of this framing takes on the wire, for a header of `bhs` (so a reader
    /// knows how much to wait for), or an error for an oversized data segment.
    pub fn wire_len(&self, bhs: &Bhs) -> usize {
        let dlen = bhs.data_len();
        BHS_LEN
            + bhs.ahs_words() * 4
            + if self.header_digest { 4 } else { 0 }
            + dlen
            + pad4(dlen)
            + if self.data_digest && dlen > 0 { 4 } else { 0 }
    }

    /// Appends `pdu` to `out` with this framing's digests (the header's AHS and data lengths
    /// are set from the PDU).
    pub fn encode(&self, pdu: &Pdu, out: &mut BytesMut) {
        let mut bhs = pdu.bhs.clone();
        bhs.0[4] = (pdu.ahs.len() / 4) as u8;
        bhs.set_data_len(pdu.data.len());
        let start = out.len();
        out.put_slice(&bhs.0);
        out.put_slice(&pdu.ahs);
        if self.header_digest {
            let c = crc32c::crc32c(&out[start..]);
            out.put_u32_le(c);
        }
        if !pdu.data.is_empty() {
            let at = out.len();
            out.put_slice(&pdu.data);
            out.put_bytes(0, pad4(pdu.data.len()));
            if self.data_digest {
                let c = crc32c::crc32c(&out[at..]);
                out.put_u32_le(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_digests_and_padding() {
        let f = Framing {
            header_digest: true,
            data_digest: true,
            max_recv: 65536,
        };
        let mut bhs = Bhs::new(op::SCSI_CMD);
        bhs.put_u32(16, 0x1234);
        let pdu = Pdu::new(bhs, Bytes::from_static(b"hello"));
        let mut out = BytesMut::new();
        f.encode(&pdu, &mut out);
        assert_eq!(out.len(), 48 + 4 + 8 + 4);
        assert_eq!(f.wire_len(&Bhs(out[..48].try_into().unwrap())), out.len());
        assert_eq!(f.decode(&out[..out.len() - 1]).unwrap(), None);
        let (got, n) = f.decode(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert_eq!(got.data, pdu.data);
        assert_eq!(got.bhs.itt(), 0x1234);
        // A flipped data bit is a data digest error; a flipped header bit a header one.
        let mut bad = out.clone();
        bad[53] ^= 1;
        assert!(matches!(f.decode(&bad), Err(PduError::DataDigest(_))));
        let mut bad = out.clone();
        bad[20] ^= 1;
        assert_eq!(f.decode(&bad), Err(PduError::HeaderDigest));
    }

    #[test]
    fn oversized_segments_are_refused() {
        let f = Framing {
            max_recv: 8192,
            ..Framing::default()
        };
        let mut bhs = Bhs::new(op::SCSI_CMD);
        bhs.set_data_len(1 << 20);
        assert!(matches!(f.decode(&bhs.0), Err(PduError::TooLong { .. })));
    }
}
