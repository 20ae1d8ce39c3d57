//! The `handler` binary: the function app with the built-in functions,
//! served as the Functions host expects (see [`azure_redis_handler::run`];
//! `handler doctor` checks the connection it would make instead).

#[cfg(feature = "count-allocs")]
mod alloc_count;

fn main() -> std::process::ExitCode {
    azure_redis_handler::run(&[
        #[cfg(feature = "count-allocs")]
        alloc_count::FUNCTION,
    ])
}

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
#[cfg(all(
    feature = "mimalloc",
    not(feature = "count-allocs"),
    not(feature = "experiment-system-allocator")
))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
