//! The `handler` binary: the function app with the built-in functions,
//! served as the Functions host expects (see [`azure_redis_handler::run`];
//! `handler doctor` checks the connection it would make instead).

#[cfg(feature = "count-allocs")]
mod alloc_count;

fn main() -> std::process::ExitCode {
    #[cfg(all(
        feature = "mimalloc",
        not(feature = "count-allocs"),
        not(feature = "experiment-system-allocator")
    ))]
    allocator::purge_after(allocator::DELAY_MS);
    azure_redis_handler::run(&[
        #[cfg(feature = "count-allocs")]
        alloc_count::FUNCTION,
    ])
}

/// The `handler` binary's allocator, mimalloc, and how it is tuned.
#[cfg(all(
    feature = "mimalloc",
    not(feature = "count-allocs"),
    not(feature = "experiment-system-allocator")
))]
mod allocator {
    use std::ffi::{c_int, c_long};

    /// mimalloc, not glibc's malloc: about 4% less CPU per GET at 64
    /// connections and 7% at 256, none measurable at 16 (medians over four
    /// sessions of paired runs; `bench/notes.md`, item 7, and the message of
    /// the commit that added this line), for about 1 MiB more resident memory
    /// at idle and none at 256 connections. A request's buffers
    /// are often allocated on one runtime worker and freed on the other, which
    /// mimalloc's per-thread pages take without a lock. Built without
    /// transparent huge pages (`no_thp`). The `count-allocs` build counts over
    /// the system allocator instead, and `experiment-system-allocator` measures
    /// what this choice buys.
    #[global_allocator]
    static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

    /// When mimalloc gives freed memory back to the system: the delay the
    /// handler sets, in milliseconds.
    ///
    /// mimalloc 3 keeps a page it has emptied for 1000 ms before it purges it
    /// (`MADV_DONTNEED`). Under load, a runtime worker empties pages the other
    /// then cannot use, so each worker holds its own peak for that second. In
    /// `wrk` runs of the static build, the handler's peak RSS was 10.0 MiB
    /// after 64 connections and 19.2 MiB at 256 with the default, 9.1 and 15.4
    /// MiB purged after 10 ms (mimalloc 2's default), 9.4 and 16.0 MiB after
    /// 30 ms, and 8.7 and 14.5 MiB purged at once. The price is CPU: page
    /// faults when a purged page is used again (0.07 per GET at 64 connections
    /// and 0.18 at 256 with 10 ms, against 0.004 and 0.013 with the default)
    /// and the `madvise` calls. In paired runs of the same binary, 10 ms took
    /// 5% more CPU per GET at 64 connections and 2% more at 256 than 1000 ms
    /// did (medians of 6 rounds; the noise here is of that order too). An
    /// explicit `MIMALLOC_PURGE_DELAY` in the environment still wins: 1000
    /// restores mimalloc's default where CPU is short and memory is not.
    pub const DELAY_MS: c_long = 10;

    /// `mi_option_purge_delay` in the `mi_option_t` enum of the mimalloc
    /// that libmimalloc-sys builds (`c_src/mimalloc/v3/include/mimalloc.h`);
    /// the test below tells if an update renumbers it.
    const PURGE_DELAY: c_int = 15;

    extern "C" {
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
        fn mi_option_set(option: c_int, value: c_long);
    }

    /// Sets mimalloc's purge delay to `ms`, unless `MIMALLOC_PURGE_DELAY`
    /// is set. Call before other threads start.
    pub fn purge_after(ms: c_long) {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: sets one of mimalloc's tunables, which it allows at
            // any time; no Rust-side invariant is involved.
            #[allow(unsafe_code)]
            unsafe {
                mi_option_set(PURGE_DELAY, ms);
            }
        }
    }

    /// The option's current value, in milliseconds.
    #[cfg(test)]
    fn purge_delay() -> c_long {
        // SAFETY: reads one of mimalloc's tunables.
        #[allow(unsafe_code)]
        unsafe {
            mi_option_get(PURGE_DELAY)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The option at [`PURGE_DELAY`] is the purge delay: it holds
        /// mimalloc 3's default for it, 1000 ms (the options beside it
        /// default to 1 and 0), and `purge_after` changes it.
        #[test]
        fn the_purge_delay_option_is_the_one_set() {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
                return;
            }
            assert_eq!(
                purge_delay(),
                1000,
                "option {PURGE_DELAY} is not mimalloc's purge delay"
            );
            purge_after(DELAY_MS);
            assert_eq!(purge_delay(), DELAY_MS);
        }
    }
}
