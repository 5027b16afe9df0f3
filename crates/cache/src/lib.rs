//! The write-back cache engine of one cache device (an NVMe block device or a file).
//!
//! Owns: the on-disk journal ([`format`]), the index from (volume, block) to cache location,
//! group commit, reads that merge cache and backend, destage to the [`Backend`] under a rate
//! limit, eviction of clean data, and recovery after power loss. Design and byte layouts:
//! `docs/design/cache-format.md`.
//!
//! Layers, bottom up:
//! * [`Partition`]: one independent journal; synchronous, no threads of its own. Its
//!   [`Partition::commit`], [`Partition::read`] and [`Partition::destage_round`] are what the
//!   deterministic crash and model tests drive directly.
//! * [`Engine`]: a device's partitions, volumes and request validation.
//! * [`CacheService`]: threads (a writer and a destager per partition, a read pool), with
//!   io_uring a reaper task that completes cache hits and journal batches (whole-block writes
//!   are staged by the writing task, see `ring_writer`), and [`CacheVolume`], the asynchronous
//!   [`alcubierre_block::BlockDevice`] front ends use.
//!
//! Invariants:
//! 1. A write is acknowledged only after the batch holding it is written *and* the device
//!    synced; batches are written one after another, each synced before the next starts.
//! 2. The log space of a batch is reused only after its data is in the backend, the backend was
//!    flushed, and a checkpoint past it is durable.
//! 3. Every entry carries a CRC-32C over its descriptor and data; recovery never indexes an
//!    entry whose CRC fails (torn entries are discarded, corrupt ones poisoned).
//! 4. After a device write or sync error the partition refuses all further writes (fail-stop).
#![forbid(unsafe_code)]

mod batches;
pub mod blockmap;
mod build;
mod commit;
mod destage;
mod engine;
mod error;
pub mod format;
pub mod index;
mod logread;
mod partition;
mod read;
mod reaper;
mod recovery;
mod replay;
mod requests;
mod ring_writer;
mod service;

pub use alcubierre_backend::Backend;
pub use alcubierre_block::RateLimiter;
pub use alcubierre_types::LogPos;
pub use destage::RoundStats;
pub use engine::{CacheStats, Engine, FormatOptions, RecoveryReport};
pub use error::CacheError;
pub use partition::{ClaimState, DestageFence, Op, Partition, RepLog, ReplicaRole};
pub use recovery::PartitionReport;
pub use replay::{ReplayEnd, Replayed};
pub use service::{CacheService, CacheVolume, ServiceConfig, VolumeOpener, WriteCallback};
