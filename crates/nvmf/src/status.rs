//! Completion status: Status Code Type and Status Code (Base 1.4 section 4.6.1.2), with the
//! Do Not Retry bit. Each constant names the figure of the spec that defines it.

use std::fmt;

/// A completion status, as carried in bits 15:1 of CQE dword 3 (without the phase tag).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status Code Type (3 bits).
    pub sct: u8,
    /// Status Code.
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
}

impl Status {
    const fn new(sct: u8, sc: u8, dnr: bool) -> Self {
        Self { sct, sc, dnr }
    }

    /// Successful Completion.
    pub const SUCCESS: Status = Status::new(0, 0x00, false);
    /// Invalid Command Opcode (figure 128).
    pub const INVALID_OPCODE: Status = Status::new(0, 0x01, true);
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status::new(0, 0x02, true);
    /// Command ID Conflict.
    pub const CID_CONFLICT: Status = Status::new(0, 0x03, true);
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: Status = Status::new(0, 0x04, false);
    /// Internal Error.
    pub const INTERNAL: Status = Status::new(0, 0x06, false);
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: Status = Status::new(0, 0x07, false);
    /// Invalid Namespace or Format.
    pub const INVALID_NS: Status = Status::new(0, 0x0b, true);
    /// Command Sequence Error.
    pub const SEQUENCE_ERROR: Status = Status::new(0, 0x0c, true);
    /// Invalid SGL Segment Descriptor.
    pub const INVALID_SGL: Status = Status::new(0, 0x0d, true);
    /// Data SGL Length Invalid.
    pub const SGL_LENGTH_INVALID: Status = Status::new(0, 0x0f, true);
    /// SGL Descriptor Type Invalid.
    pub const SGL_TYPE_INVALID: Status = Status::new(0, 0x11, true);
    /// Transient Transport Error (retry may succeed).
    pub const TRANSIENT_TRANSPORT: Status = Status::new(0, 0x22, false);
    /// LBA Out of Range (figure 129).
    pub const LBA_OUT_OF_RANGE: Status = Status::new(0, 0x80, true);
    /// Namespace Not Ready (retry may succeed).
    pub const NS_NOT_READY: Status = Status::new(0, 0x82, false);
    /// Reservation Conflict.
    pub const RESERVATION_CONFLICT: Status = Status::new(0, 0x83, true);

    /// Invalid Queue Identifier (figure 130).
    pub const INVALID_QID: Status = Status::new(1, 0x01, true);
    /// Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT: Status = Status::new(1, 0x05, true);
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: Status = Status::new(1, 0x09, true);
    /// Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: Status = Status::new(1, 0x0d, true);
    /// Feature Not Changeable.
    pub const FEATURE_NOT_CHANGEABLE: Status = Status::new(1, 0x0e, true);
    /// Connect Invalid Parameters (Fabrics 1.1 figure 11).
    pub const CONNECT_INVALID_PARAM: Status = Status::new(1, 0x82, true);
    /// Connect Invalid Host.
    pub const CONNECT_INVALID_HOST: Status = Status::new(1, 0x84, true);
    /// Controller Busy (Fabrics 1.1 figure 11).
    pub const CONTROLLER_BUSY: Status = Status::new(1, 0x81, false);

    /// Write Fault (figure 131).
    pub const WRITE_FAULT: Status = Status::new(2, 0x80, false);
    /// Unrecovered Read Error.
    pub const UNRECOVERED_READ: Status = Status::new(2, 0x81, true);
    /// Compare Failure.
    pub const COMPARE_FAILURE: Status = Status::new(2, 0x85, true);

    /// Asymmetric Access Inaccessible (figure 132a): the host should use another path.
    pub const ANA_INACCESSIBLE: Status = Status::new(3, 0x02, false);

    /// The 15-bit field of CQE dword 3, bits 15:1 (without the phase tag).
    pub fn to_field(self) -> u16 {
        ((self.sc as u16) << 1) | ((self.sct as u16 & 7) << 9) | ((self.dnr as u16) << 15)
    }

    /// Parses bits 15:0 of CQE dword 3 (the phase bit is ignored).
    pub fn from_field(v: u16) -> Self {
        Self {
            sc: (v >> 1) as u8,
            sct: ((v >> 9) & 7) as u8,
            dnr: v & 0x8000 != 0,
        }
    }

    /// Whether this is Successful Completion.
    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Status(sct={:#x} sc={:#04x}{})",
            self.sct,
            self.sc,
            if self.dnr { " dnr" } else { "" }
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_round_trip() {
        // Base 1.4 figure 126: SC in bits 8:1, SCT in 11:9, DNR in 15 of the status field.
        let s = Status::CONNECT_INVALID_HOST;
        assert_eq!(s.to_field(), (0x84 << 1) | (1 << 9) | 0x8000);
        assert_eq!(Status::from_field(s.to_field()), s);
        assert!(Status::from_field(0).is_success());
        assert_eq!(Status::from_field(1), Status::SUCCESS);
    }
}
