//! Allocator tuning for glibc: one malloc arena for the whole process.
//!
//! glibc gives each thread that allocates its own arena. The per-connection
//! buffers of the HTTP server are allocated on one worker thread and often
//! freed on another, so with an arena per worker each arena keeps its own
//! free space: about 1.4 MiB more resident memory at 64 connections, for no
//! measurable gain in throughput on the few threads this process has. An
//! explicit `MALLOC_ARENA_MAX` in the environment still wins.

/// Limits glibc to one arena, unless `MALLOC_ARENA_MAX` is set. Call before
/// any other thread starts. Does nothing on other C libraries.
pub(crate) fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// `M_ARENA_MAX` from glibc's `<malloc.h>`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // The crate's one unsafe block: a C call with no Rust-side invariant.
        // SAFETY: mallopt only sets an allocator tunable, is safe to call at
        // any time, and is called before other threads exist.
        #[allow(unsafe_code)]
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
