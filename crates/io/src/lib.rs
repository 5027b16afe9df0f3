//! Aligned buffers and direct access to the media a cache lives on.
//!
//! Owns: [`AlignedBuf`] (heap memory aligned to [`ALIGN`], as `O_DIRECT` requires), the
//! [`Medium`] trait (positional read, write and sync of a cache device), [`DirectFile`] (a block
//! device or regular file opened with `O_DIRECT`), [`MemMedium`] (memory, for tests and CPU
//! benchmarks), [`Ring`]: completion-based reads through io_uring, and, behind the
//! `fault-injection` feature, [`fault`]: a power-loss model that keeps durable bytes apart from
//! written ones.
//!
//! Invariants: every `unsafe` block is in `buf`, `counting`, `dsync`, `punch` or `uring`, with a
//! `SAFETY:` comment; a [`Medium`]'s
//! `sync` returns only after every write that completed before it is durable.
#![deny(unsafe_op_in_unsafe_fn)]

mod buf;
mod counting;
mod direct;
mod dsync;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod mem;
mod punch;
mod space;
mod uring;

pub use buf::{AlignedBuf, ALIGN};
pub use counting::CountingAlloc;
pub use direct::DirectFile;
pub use mem::MemMedium;
pub use punch::punch_hole;
pub use space::fs_space;
pub use uring::{ReadAt, Ring, WriteAt};

/// A cache device: positional I/O in multiples of [`ALIGN`] at offsets aligned to [`ALIGN`].
///
/// `write_at` may leave data in a volatile cache; only [`Medium::sync`] makes it durable.
/// After power loss, any subset of the 512-byte sectors written since the last completed `sync`
/// may be missing (sectors themselves are atomic).
pub trait Medium: Send + Sync {
    /// The medium's size in bytes.
    fn len(&self) -> u64;
    /// True when the medium has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Writes `buf` at `offset` (not yet durable).
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Makes every completed write durable (`fdatasync`, i.e. a device cache flush).
    fn sync(&self) -> std::io::Result<()>;
    /// Writes `buf` at `offset` and returns once *this* write is durable. Writes completed
    /// earlier are not covered (a FUA write, not a flush): callers use it when everything
    /// before is already durable. The default is a write then a sync.
    fn write_durable(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_at(buf, offset)?;
        self.sync()
    }
    /// A human name for logs and errors (a path, or "memory").
    fn describe(&self) -> String;
    /// The file descriptor reads may go to directly (through a [`Ring`]), when the medium is a
    /// file or device whose reads have no other effect; `None` (the default) keeps every read
    /// on [`Medium::read_at`] (memory, and the fault models, which must see each read).
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}
