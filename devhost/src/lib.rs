//! Faithful local stand-ins for the Azure services the handler talks to.
//!
//! Neither Azure nor the Functions host can be reached from a developer's
//! machine or CI, so tests (and the local-run binary) use these emulators.
//! Each one follows a fact from `docs/azure.md`, cited in its doc comment.
//!
//! Layout:
//!
//! - [`pki`]: a throw-away CA and a `localhost`/`127.0.0.1` server
//!   certificate (TLS for the Redis stand-in).
//! - [`redis_server`]: a real `redis-server` child process with a TLS port
//!   for the handler and a plain admin port for the emulators
//!   ([`redis_server::RedisServer`], [`redis_server::RedisAdmin`]).
//! - [`redis_cluster`]: a TLS Redis Cluster of such servers (3 masters with a
//!   replica each by default), nodes announced by IP under a host-name-only
//!   certificate, ACL users on every node, and failover, crash, shard-down
//!   and slot-migration operations that wait on the resulting state
//!   ([`redis_cluster::RedisCluster`], [`redis_cluster::ClusterAdmin`]).
//! - [`identity`]: the App Service managed-identity endpoint that
//!   `azure_identity`'s `ManagedIdentityCredential` calls; its tokens are
//!   signed JWTs and, with a Redis attached, valid ACL passwords
//!   ([`identity::IdentityEndpoint`]; JWT details in `identity/jwt.rs`).
//! - [`entra`]: Microsoft Entra ID's token endpoint over HTTPS (client
//!   secret, workload identity) and stand-in `az`/`azd` executables, minting
//!   tokens the Redis stand-in accepts ([`entra::EntraEndpoint`],
//!   [`entra::DeveloperCli`]).
//! - [`gateway`]: Azure's Redis front end: Entra ID enforcement (tokens
//!   checked, connections closed at their token's expiry) and the faults of
//!   maintenance on demand (cuts, silence, refused addresses,
//!   `AzureRedisEvents`, injected RESP3 pushes).
//! - [`functions_host`]: the Functions host's side of the custom-handler
//!   protocol: start, readiness probe, forwarded HTTP and envelope
//!   invocations ([`functions_host::HandlerProcess`]; envelope builders in
//!   `functions_host/envelope.rs`).
//! - [`otlp`]: an OTLP/HTTP receiver for the handler's OpenTelemetry
//!   traces and metrics (decoded with the OTLP protobuf definitions, a
//!   collector that hangs or fails on demand), and [`otlp::waterfall()`],
//!   one invocation's spans drawn on a time line.
//! - `util`: loopback port picking and random ids (private).
//!
//! The `devhost` binary runs the function app on a developer's machine with
//! these stand-ins, and packages it for Azure:
//!
//! - [`local`]: `devhost start`, a local Functions host in front of the
//!   handler (routes, forwarding, timers, invocation log).
//! - [`invoke`]: `devhost invoke`, one invocation sent by hand.
//! - [`package`]: `devhost package`, the deployable zip.
//! - [`doctor`]: `devhost doctor`, the handler's first-run check with the
//!   app's local settings.
//! - [`app_manifest`]: host.json and function.json as the host reads them;
//!   [`schedule`]: NCRONTAB timer schedules; [`local_settings`]:
//!   `local.settings.json`; [`cargo_build`]: building the handler.
//!
//! Everything listens on 127.0.0.1 only, and every child process is killed
//! when its owner is dropped.

#![warn(missing_docs)]

pub mod app_manifest;
pub mod cargo_build;
pub mod doctor;
pub mod entra;
pub mod functions_host;
pub mod gateway;
pub mod identity;
pub mod invoke;
pub mod local;
pub mod local_settings;
pub mod otlp;
pub mod package;
pub mod pki;
pub mod redis_cluster;
pub mod redis_server;
pub mod schedule;
mod util;

pub use util::RefusingPort;
