//! The iSCSI target (RFC 7143) that serves volumes to hosts on port 3260, beside NVMe/TCP.
//!
//! Owns: the PDU codec with CRC32C digests ([`pdu`]), the login state machine with CHAP and
//! the negotiation of every operational key ([`login`]), the full feature phase of a connection
//! ([`conn`]: CmdSN window, R2T, Data-In, NOP, task management, Text/SendTargets, Logout,
//! Reject), the SCSI command layer over a `BlockDevice` ([`scsi`]), the target registry
//! ([`target`]: a target name per volume, LUN 0) and the tokio driver ([`driver`]).
//!
//! Invariants:
//! 1. The state machines do no I/O; the driver performs what they return.
//! 2. A write is acknowledged (SCSI Response GOOD) only after the device's write returned `Ok`
//!    (durable on every in-sync replica).
//! 3. Malformed input ends only its own connection, or gets the protocol's Reject or CHECK
//!    CONDITION with sense data; nothing panics.
//!
//! Error recovery level 0, one connection per session; implicit ALUA with a target port group
//! per node. Not yet: multi-PDU text, unit attentions across nodes (docs/design/iscsi.md).

pub mod conn;
pub mod driver;
pub mod harness;
pub mod login;
mod opcodes;
pub mod pdu;
mod pr;
pub mod scsi;
pub mod sense;
pub mod target;

pub use target::{volume_iqn, Export, Target};

/// Commands the target accepts at once (MaxCmdSN - ExpCmdSN + 1).
pub const QUEUE_DEPTH: u32 = 128;

/// The largest write a command may carry (EDTL); larger ones are refused.
pub const MAX_WRITE: usize = 16 << 20;
