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
