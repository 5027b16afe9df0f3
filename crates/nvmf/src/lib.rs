//! NVMe over Fabrics, TCP transport: Alcubierre's NVMe/TCP target and a test initiator.
//!
//! Layers, bottom up:
//! * [`pdu`]: the PDU codec (NVMe/TCP 1.0 section 3.6), with digests; validates every field
//!   before allocating; fuzzed (`fuzz/fuzz_targets/decode_pdu.rs`).
//! * [`queue`] ([`QueuePair`]), with `admin.rs` and `io.rs`: the state machine of one connection.
//!   It does no I/O: it takes PDUs, I/O completions and wake-ups and returns PDUs to send and I/O
//!   to run. [`controller`] and [`subsystem`] hold the state queues share.
//! * [`driver`]: the tokio TCP driver: accept, read, feed, run I/O, write; one task per
//!   connection, nothing polls while idle.
//! * [`initiator`]: a small host (discovery, connect, read/write at any queue depth, digests)
//!   for tests and benchmarks.
//!
//! Invariants:
//! 1. A malformed PDU ends only its own connection, after a C2HTermReq; nothing panics.
//! 2. A write is acknowledged only after the volume's `BlockDevice::write` returned `Ok`
//!    (durable on the cache).
//! 3. Every command gets exactly one completion (or the connection closes).

pub mod capsule;
pub mod controller;
pub mod driver;
pub mod harness;
pub mod identify;
pub mod initiator;
pub mod pdu;
pub mod queue;
pub mod spec;
pub mod status;
pub mod subsystem;
pub mod target;

mod admin;
mod io;
mod resv_report;

pub use driver::{serve, Listener};
pub use queue::QueuePair;
pub use status::Status;
pub use subsystem::{volume_nqn, AnaState, HostAcl, Portal, Subsystem, SubsystemEvent};
pub use target::{Target, TargetConfig};
