//! The root crate's integration tests, in one binary (one link instead of
//! one per file): each module is one area, `support` is their shared set-up
//! (a real TLS `redis-server`, the identity endpoint, the Entra-enforcing
//! gateway, the cluster rig, the built `handler` started as the host starts
//! it). Host payload fixtures are in `tests/data/`, shared with `src/`'s
//! unit tests.
//!
//! Tests in one binary share a process: none sets an environment variable
//! or a process-wide static that another reads (each handler gets its
//! settings through its own child environment), and every server a test
//! starts listens on a free port of its own.

mod support;

mod bad_input;
mod cluster;
mod connection;
mod function_app;
mod functions;
mod instances;
mod process;
mod proxying;
mod resilience;
mod ride_through;
mod sign_in;
mod telemetry;
