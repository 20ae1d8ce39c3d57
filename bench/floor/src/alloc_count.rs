//! A heap allocator that counts, in the floor built with the
//! `count-allocs` feature only (the bench's `--profile` mode): the system
//! allocator behind two counters, answered as `<allocations> <bytes>` to
//! `GET /api/__allocs`, as the handler's `count-allocs` build answers them
//! (`src/alloc_count.rs` at the repository root). Allocations are the calls
//! to `alloc`, `alloc_zeroed` and `realloc`; bytes are the sizes they asked
//! for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// [`System`], counting.
struct Counting;

fn count(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Relaxed);
    BYTES.fetch_add(bytes as u64, Relaxed);
}

// SAFETY: every call goes to `System` unchanged; the counters allocate
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The path the counts are answered at.
pub const PATH: &str = "/api/__allocs";

/// `<allocations> <bytes>` since the process started.
pub fn counts() -> String {
    format!("{} {}", ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed))
}
