//! What the local host's HTTP front, its proxy and its admin API share:
//! the app, its routes and timers, the running handler, the invocation log
//! and the built-in cache.

use super::console::{InvocationLog, Outcome};
use super::routes::RouteTable;
use super::stack::LocalCache;
use super::timer::Timer;
use crate::app_manifest::AppManifest;
use crate::functions_host::HandlerClient;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// What the HTTP front and the timers share.
pub struct HostState {
    /// The app.
    pub manifest: AppManifest,
    /// Its HTTP routes.
    pub routes: RouteTable,
    /// The running handler.
    pub handler: HandlerClient,
    /// Its timer functions.
    pub timers: Vec<Arc<Timer>>,
    /// Where finished invocations are printed.
    pub log: InvocationLog,
    /// The built-in cache, which `devhost maintenance` plays against.
    pub local: Option<Arc<LocalCache>>,
}

impl HostState {
    /// Prints a finished invocation (see [`InvocationLog::record_outcome`]).
    pub fn record(&self, function: &str, what: &str, outcome: Outcome, started: Instant, id: &str) {
        self.log.record_outcome(function, what, outcome, started, id);
    }

    /// Records a failed invocation and answers 500, as the host does when an
    /// invocation fails without an answer.
    pub(super) fn failed(&self, function: &str, what: &str, e: &anyhow::Error, started: Instant, id: &str) -> Response {
        self.record(function, what, Outcome::Failed(format!("{e:#}")), started, id);
        (StatusCode::INTERNAL_SERVER_ERROR, format!("devhost: {e:#}\n")).into_response()
    }
}
