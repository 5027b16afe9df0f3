//! A global allocator that counts live heap bytes, for memory measurements in tests and
//! benchmarks: `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting the bytes currently allocated through it.
pub struct CountingAlloc;

impl CountingAlloc {
    /// Bytes allocated and not yet freed (by the program using this as its global allocator).
    pub fn live_bytes() -> isize {
        LIVE.load(Ordering::SeqCst)
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it keeps
// System's guarantees; the counter has no effect on the memory returned.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr was allocated by System (through us) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for dealloc, and new_size is the caller's valid new size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
