//! How a SCSI command ends: status codes, sense keys, fixed-format sense data, and the
//! outcome a command returns (status, sense, Data-In).

use bytes::{BufMut, Bytes, BytesMut};

/// SCSI status codes (SAM-5).
pub mod status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION (sense data follows).
    pub const CHECK_CONDITION: u8 = 0x02;
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
}

/// Sense keys (SPC-4 table 51).
pub mod key {
    /// NOT READY.
    pub const NOT_READY: u8 = 0x02;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x03;
    /// HARDWARE ERROR.
    pub const HARDWARE_ERROR: u8 = 0x04;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x05;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x06;
    /// COPY ABORTED.
    pub const COPY_ABORTED: u8 = 0x0a;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0x0b;
    /// MISCOMPARE.
    pub const MISCOMPARE: u8 = 0x0e;
}

/// Sense data: key, additional sense code and qualifier, and the information field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// ASC.
    pub asc: u8,
    /// ASCQ.
    pub ascq: u8,
    /// The information field (e.g. the miscompare offset).
    pub info: Option<u32>,
    /// The command-specific information field (e.g. the failing EXTENDED COPY segment).
    pub command: Option<u32>,
}

impl Sense {
    /// UNIT ATTENTION with `(asc, ascq)`.
    pub const fn unit_attention(asc: u8, ascq: u8) -> Self {
        Self::new(key::UNIT_ATTENTION, asc, ascq)
    }

    pub(crate) const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Self {
            key,
            asc,
            ascq,
            info: None,
            command: None,
        }
    }
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00);
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB.
    pub const INVALID_FIELD: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST.
    pub const INVALID_PARAMETER: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x00);
    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR.
    pub const PARAMETER_LENGTH: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x1a, 0x00);
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00);
    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
    pub const LUN_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00);
    /// MEDIUM ERROR, UNRECOVERED READ ERROR.
    pub const UNRECOVERED_READ: Sense = Sense::new(key::MEDIUM_ERROR, 0x11, 0x00);
    /// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION.
    pub const TRANSITIONING: Sense = Sense::new(key::NOT_READY, 0x04, 0x0a);
    /// HARDWARE ERROR, INTERNAL TARGET FAILURE.
    pub const INTERNAL_FAILURE: Sense = Sense::new(key::HARDWARE_ERROR, 0x44, 0x00);
    /// UNIT ATTENTION, CAPACITY DATA HAS CHANGED.
    pub const CAPACITY_CHANGED: Sense = Sense::new(key::UNIT_ATTENTION, 0x2a, 0x09);
    /// UNIT ATTENTION, ASYMMETRIC ACCESS STATE CHANGED.
    pub const ALUA_CHANGED: Sense = Sense::new(key::UNIT_ATTENTION, 0x2a, 0x06);
    /// UNIT ATTENTION, BUS DEVICE RESET FUNCTION OCCURRED (after a LUN or target reset).
    pub const RESET_OCCURRED: Sense = Sense::new(key::UNIT_ATTENTION, 0x29, 0x03);
    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION.
    pub const MISCOMPARE: Sense = Sense::new(key::MISCOMPARE, 0x1d, 0x00);
    /// The fixed-format sense data (18 bytes).
    pub fn encode(&self) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70 | if self.info.is_some() { 0x80 } else { 0 };
        s[2] = self.key;
        if let Some(i) = self.info {
            s[3..7].copy_from_slice(&i.to_be_bytes());
        }
        s[7] = 10;
        if let Some(c) = self.command {
            s[8..12].copy_from_slice(&c.to_be_bytes());
        }
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

/// How a command ended: status, sense, and the Data-In bytes (already cut to the allocation
/// length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// SCSI status.
    pub status: u8,
    /// Sense data with CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Data-In.
    pub data: Bytes,
}

impl Outcome {
    pub(crate) fn good(data: Bytes) -> Self {
        Self {
            status: status::GOOD,
            sense: None,
            data,
        }
    }
    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: status::CHECK_CONDITION,
            sense: Some(sense),
            data: Bytes::new(),
        }
    }
}

/// Encodes sense data as a SCSI Response's data segment (2-byte length, then the sense).
pub fn sense_segment(s: &Sense) -> Bytes {
    let mut b = BytesMut::with_capacity(20);
    b.put_u16(18);
    b.put_slice(&s.encode());
    b.freeze()
}
