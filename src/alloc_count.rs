//! A heap allocator that counts, in the `handler` binary built with the
//! `count-allocs` feature only (the bench's `--profile` mode builds it into
//! `target/variants`): the system allocator (glibc malloc, as in every other
//! build) behind two counters, served as `<allocations> <bytes>` at
//! `GET /api/__allocs`, a function of the binary's own beside the built-in
//! ones. Allocations are the calls to `alloc`, `alloc_zeroed` and `realloc`;
//! bytes are the sizes they asked for. Every allocation touches the two
//! counters, so this build counts and is never timed or deployed.

use azure_redis_handler::axum::routing;
use azure_redis_handler::{Endpoint, Function, HttpMethod, Trigger};
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

/// `GET /api/__allocs`: allocations and bytes since the process started.
pub(crate) const FUNCTION: Function = Function {
    name: "__allocs",
    trigger: Trigger::Http {
        route: "__allocs",
        endpoints: &[Endpoint {
            method: HttpMethod::Get,
            handler: |on| routing::on(on, counts),
        }],
        also: &[],
    },
};

async fn counts() -> String {
    format!("{} {}", ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed))
}
