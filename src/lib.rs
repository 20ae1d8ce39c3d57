//! An Azure Functions custom handler that keeps one Microsoft Entra ID
//! authenticated, TLS Redis connection per process.
//!
//! # Layout
//!
//! - [`settings`]: app settings, read once into typed structs.
//! - [`secret`]: the wrapper that keeps secrets out of logs and `Debug`.
//! - [`credential`]: builds the `azure_identity` credential the settings name.
//! - [`token`]: the current token, its lazy single-flight refresh, `oid` decoding.
//! - [`cache`]: the one Redis connection: connect, re-AUTH, reconnect, deadlines.
//! - [`host`]: the Functions host protocol (envelopes, TimerInfo, HTTP data)
//!   and the envelope adapter.
//! - [`functions`]: one file per function, and the registry of them all.
//! - [`body`]: reading request bodies within a limit.
//! - [`error`]: the error every function answers with.
//! - [`state`]: start-up wiring: the process's cache (a process-wide
//!   once-cell), the state functions share, the typed start-up error.
//! - [`router`]: the axum router built from the registry, per-invocation logging.
//! - [`telemetry`]: tracing set-up, stdout written in batches.
//! - [`malloc`]: one glibc malloc arena (less resident memory).
//! - [`server`]: bind, serve, graceful shutdown.
//! - [`doctor`]: `handler doctor`, the first-run check of sign-in, network,
//!   certificate, access policy and PING, step by step.
//! - [`tls`]: the roots TLS trusts (`SSL_CERT_FILE`), the crypto provider.

#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_code)]

pub(crate) mod body;
pub(crate) mod cache;
pub mod credential;
pub mod doctor;
pub mod error;
pub mod functions;
pub mod host;
pub mod malloc;
pub mod router;
pub mod secret;
pub mod server;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod token;
