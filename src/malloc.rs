//! Allocator tuning for glibc: an arena for each runtime worker, not one
//! for each thread, nor one for the process.
//!
//! The `handler` binary allocates with mimalloc (`src/main.rs`), so there
//! this tunes only what still calls glibc's malloc itself (the C library's
//! own calls). It is for an app built on this library with the system
//! allocator, and for the bench's `count-allocs` and
//! `experiment-system-allocator` builds, where what is said below holds.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight
//! per core. One arena for the whole process, as the handler had, kept
//! resident memory lowest, but costs CPU: the workers take its lock in
//! turn whenever their thread caches run dry or overflow, and the losers
//! wait in `futex` (6.6% of the handler's CPU at 64 connections, `perf
//! record`: `__lll_lock_wait_private`). In paired runs at 64 connections
//! on 2 cores, two arenas served 6.9% more GETs at 7.5% less CPU per
//! request than one, and an arena for each worker and one more (the main
//! thread's, which the logging thread shares) used 2% less CPU again than
//! two. What it costs is memory: a buffer freed by
//! the other worker goes back to its own arena, so each arena holds its own
//! peak, and peak RSS was about 1.3 MiB higher after 64 connections and
//! 4.5 MiB at 256 (20 against 15.8 MiB), as with glibc's default. As many
//! arenas as workers (one worker on the main arena) left it to chance
//! whether the two workers shared one: peak RSS at 256 connections 15.6 or
//! 20.3 MiB from run to run, and 2% more CPU than an arena each. On Flex
//! Consumption CPU is what an instance has least of (a quarter of a core at
//! 512 MB), not memory. An explicit `MALLOC_ARENA_MAX` in the environment
//! still wins.

/// Limits glibc to an arena for each of `workers` runtime workers and one
/// more, unless `MALLOC_ARENA_MAX` is set. Call before any other thread
/// starts. Does nothing on other C libraries.
pub(crate) fn use_an_arena_per_worker(workers: usize) {
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = workers;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// `M_ARENA_MAX` from glibc's `<malloc.h>`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        let arenas = std::ffi::c_int::try_from(workers.saturating_add(1)).unwrap_or(std::ffi::c_int::MAX);
        // The crate's one unsafe block: a C call with no Rust-side invariant.
        // SAFETY: mallopt only sets an allocator tunable, is safe to call at
        // any time, and is called before other threads exist.
        #[allow(unsafe_code)]
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }
}
