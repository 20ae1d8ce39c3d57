//! An Azure Functions custom handler that keeps one Microsoft Entra ID
//! authenticated, TLS Redis connection per process (one per master on a
//! cluster), refreshes its token without making an invocation wait, and
//! rides through Azure's maintenance.
//!
//! # Use it as a library
//!
//! The connection, and the handler around it, for a function app of your
//! own:
//!
//! - **Connect** from [`Settings`] (the app settings the handler reads,
//!   `Redis__redisHostName` and the rest, from the environment or any
//!   lookup) with [`Cache::from_settings`] or [`Cache::from_env`]: no I/O
//!   until the first command.
//! - **Run a command** with [`Cache::query`]: the token fetched and
//!   refreshed, every connection re-AUTHed, the cluster routed
//!   (`MOVED`/`ASK`), a lost or silent connection ridden through, and a
//!   command that may have been applied sent again only if it is safe to
//!   send twice ([`Replay`]).
//! - **Add your functions** beside the built-in ones: declare each as a
//!   [`Function`] and hand them to [`run`], the handler's whole `main` (as
//!   `lambda_runtime::run` takes a service); or build the router yourself
//!   with [`router`] and an [`AppState`] ([`AppState::with_functions`]).
//!   A handler returns [`AppError`] (a [`CacheError`] converts into it).
//!
//! `examples/visits.rs` is a function app with one function of its own.
//! The crate re-exports the [`axum`] and [`redis`] it is built on, so the
//! versions match.
//!
//! # Layout
//!
//! - [`settings`]: app settings, read once into typed structs.
//! - `secret`: the wrapper that keeps secrets out of logs and `Debug`.
//! - `credential`: builds the `azure_identity` credential the settings name.
//! - `token`: the current token, its lazy single-flight refresh, `oid` decoding.
//! - `cache`: the connections: connect, re-AUTH, ride through, route on a
//!   cluster, maintenance notifications.
//! - [`host`]: the Functions host protocol, typed (envelopes, TimerInfo, HTTP
//!   data).
//! - `functions`: one file per function, the registry of them all, and the
//!   state they share ([`AppState`]); `functions::json` the hot path's JSON
//!   answers, written by hand.
//! - `body`: reading request bodies within a limit, and the type of the
//!   server's answer bodies.
//! - `clock`: the time of day as answers write it.
//! - `error`: the error every function answers with.
//! - `state`: start-up wiring: a cache from the settings, the process's one
//!   (a process-wide once-cell), the typed start-up error.
//! - `router`: the axum router built from the functions, the envelope
//!   adapter, per-invocation logging; `router::fast` the hottest routes
//!   matched by hand in front of it (what [`run`] serves).
//! - `run`: the handler as a program ([`run`]).
//! - `telemetry`: tracing set-up; `log_writer` stdout written in batches by
//!   a logging thread; `log_line` an invocation's lines, written by hand
//!   from a task-local.
//! - `otel`: OpenTelemetry traces and metrics over OTLP (`OTEL_*`).
//! - `trace_context`: W3C `traceparent`/`tracestate` of an invocation
//!   ([`TraceContext`], in each request's extensions).
//! - `malloc`: a glibc malloc arena per runtime worker (not eight per core),
//!   for apps on the system allocator (the `handler` binary uses mimalloc).
//! - `server`: bind, hyper's accept loop and connections, graceful shutdown.
//! - `doctor`: `handler doctor`, the first-run check of sign-in, network,
//!   certificate, access policy and PING, step by step.
//! - `tls`: the roots TLS trusts (`SSL_CERT_FILE`), the crypto provider.
//! - `experiment`: what the `experiment-*` builds (features for the
//!   bench's `--profile` mode only) put in place of what they turn off.

#![warn(missing_docs, unreachable_pub, rustdoc::broken_intra_doc_links)]
#![deny(unsafe_code)]
// What an experiment build leaves out leaves code unused (see Cargo.toml).
#![cfg_attr(
    any(
        feature = "experiment-no-json",
        feature = "experiment-no-token-check",
        feature = "experiment-no-log"
    ),
    allow(dead_code)
)]

mod body;
mod cache;
mod clock;
mod credential;
mod doctor;
mod error;
#[cfg(feature = "experiment-no-json")]
mod experiment;
mod functions;
pub mod host;
mod http_client;
mod log_line;
mod log_writer;
mod malloc;
mod otel;
mod router;
mod run;
mod secret;
mod server;
pub mod settings;
mod state;
mod telemetry;
mod tls;
mod token;
mod trace_context;

pub use cache::{Cache, CacheError, Replay};
pub use error::AppError;
pub use functions::{AppState, Endpoint, ExtraRoute, Function, HttpMethod, TimerRun, Trigger, FUNCTIONS};
pub use router::router;
pub use run::run;
pub use secret::Secret;
pub use settings::{Settings, SettingsError};
pub use state::StartupError;
pub use token::TokenError;
pub use trace_context::{Hex, TraceContext};

/// The web framework the functions are written with (this crate's version).
pub use axum;
/// The Redis client whose commands [`Cache::query`] runs (this crate's version).
pub use redis;
