//! devhost's integration tests, in one binary (one link instead of one per
//! file): the stand-ins against real clients and a real `redis-server`, the
//! local Functions host, `devhost start` (and its trace view), `doctor` and
//! `package` end to end.
//! The fake handler they drive is `tests/fixtures/fake_handler.py`.
//!
//! Tests in one binary share a process: none sets an environment variable
//! (the one that must, `stand_in_chain`'s managed-identity client, runs in a
//! child process), every server listens on a free port of its own, and the
//! tests that share the repository's `.devhost/run.json` take `local_run`'s
//! lock.

mod doctor;
mod functions_host;
mod identity_http;
mod local_run;
mod package;
mod redis_cluster;
mod stand_in_chain;
mod traces;
