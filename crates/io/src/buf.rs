//! Heap buffers aligned for `O_DIRECT`.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The alignment of every [`AlignedBuf`] and of direct I/O: 4096 bytes.
pub const ALIGN: usize = 4096;

/// A zero-initialised heap buffer whose start is aligned to [`ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Vec<u8>); &AlignedBuf only gives
// shared byte access, so sending or sharing it between threads is sound.
unsafe impl Send for AlignedBuf {}
// SAFETY: see Send above; no interior mutability.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (the allocation is rounded up to [`ALIGN`]).
    pub fn zeroed(len: usize) -> Self {
        let size = len.div_ceil(ALIGN).max(1) * ALIGN;
        let layout = Layout::from_size_align(size, ALIGN).expect("buffer size overflows");
        // SAFETY: layout has a non-zero size (at least ALIGN bytes).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, len, layout }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shortens the visible length to `len` (no reallocation); `len` must not exceed the length.
    pub fn truncate(&mut self, len: usize) {
        assert!(len <= self.len, "truncate beyond length");
        self.len = len;
    }

    /// Bytes allocated (the most [`AlignedBuf::set_len`] allows).
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// Sets the visible length to any `len` within the capacity, for reusing a buffer. Bytes
    /// beyond the old length hold whatever an earlier use left there (they are initialised).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "set_len beyond capacity");
        self.len = len;
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to an allocation of layout.size() >= len bytes, all initialised
        // (alloc_zeroed, then only written through &mut [u8]), owned by self and alive for
        // &self's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 4096, 10_000] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            b.fill(9);
            b.truncate(len / 2);
            assert_eq!(b.len(), len / 2);
        }
    }
}
