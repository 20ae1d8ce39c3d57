//! `Health`: `GET /api/health`, 200 when the cache answers, 503 when not.
//!
//! Shows the connection state, the token's remaining lifetime and refresh
//! count (never the token), the last timer check (from the cache, so the
//! timer may have run on another instance: with `instance`, `age_s` and
//! `stale`), and the maintenance the
//! cache announced (`maintenance`: type, node, start time; `null` when
//! none is under way). On a cluster it
//! also PINGs every master and shows each one (`shards`): its slots, its
//! connection state and re-AUTH count; any master failing makes it a 503.

use super::{elapsed_ms, last_check, Endpoint, Function, HttpMethod, Trigger};
use crate::error::AppError;
use crate::functions::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// `Health`: `GET /api/health`.
pub(crate) const FUNCTION: Function = Function {
    name: "Health",
    trigger: Trigger::Http {
        route: "health",
        endpoints: &[Endpoint {
            method: HttpMethod::Get,
            handler: |on| axum::routing::on(on, health),
        }],
        also: &[],
    },
};

/// Pings the cache and reports the handler's state.
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let start = Instant::now();
    let ping_cmd = redis::cmd("PING");
    let ping = async {
        let ping = state.cache().query::<String>(&ping_cmd).await;
        (ping, elapsed_ms(start))
    };
    let ((ping, latency_ms), last_check) = tokio::join!(ping, last_check::load(&state));
    let shard_reports = match &ping {
        Ok(_) => shard_reports(&state).await,
        Err(_) => None,
    };
    let token = state.cache().tokens().map(|t| {
        let current = t.peek();
        json!({
            "user": current.as_ref().map(|c| c.user.clone()),
            "expires_in_s": current.as_ref().map(|c| c.expires_in().as_secs()),
            "refreshes": t.stats.refreshes.load(Ordering::Relaxed),
            "fetches": t.stats.fetches.load(Ordering::Relaxed),
            "fetch_failures": t.stats.failures.load(Ordering::Relaxed),
        })
    });
    // Written by the timer on whichever instance ran it; when the cache
    // cannot be read, Health is a 503 anyway and this says why.
    let last_check = last_check.unwrap_or_else(|e| Some(json!({ "error": AppError::from(e).message() })));
    let mut body = json!({
        "status": "ok",
        "mode": state.cache().mode_name(),
        "connection": state.cache().status(),
        "token": token,
        "last_check": last_check,
        "maintenance": state.cache().maintenance(),
        "latency_ms": latency_ms,
        // OTLP span export (null when off): a collector that is slow or
        // down shows here as dropped spans, never as slow invocations.
        "telemetry": crate::otel::span_stats(),
    });
    if state.cache().mode_name() == "cluster" {
        body["topology_reads"] = json!(state.cache().topology_reads());
    }
    let mut failed_shard = None;
    if let Some((reports, failed)) = shard_reports {
        failed_shard = failed;
        body["shards"] = Value::Array(reports);
    }
    match ping
        .map_err(AppError::from)
        .and_then(|_| failed_shard.map_or(Ok(()), Err))
    {
        Ok(()) => (StatusCode::OK, Json(body)),
        Err(err) => {
            let (_, code) = err.status_and_code();
            body["status"] = json!("unavailable");
            body["error"] = json!(err.message());
            body["code"] = json!(code);
            body["latency_ms"] = Value::Null;
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}

/// On a cluster, every master PINGed at once on its own connection, and
/// each one's slots, connection state and re-AUTH count as they are after
/// the PINGs (which may have connected); with the first failure. `None` for a
/// standalone cache.
async fn shard_reports(state: &AppState) -> Option<(Vec<Value>, Option<AppError>)> {
    let shards = state.cache().shards().await.ok().flatten()?;
    let ping = redis::cmd("PING");
    let pings = futures_util::future::join_all(shards.iter().map(|shard| async {
        let start = Instant::now();
        let result = state.cache().query_node::<String>(&shard.node, &ping).await;
        (result, elapsed_ms(start))
    }))
    .await;
    let after = state.cache().shards().await.ok().flatten().unwrap_or_default();
    let mut failed = None;
    let reports = shards
        .iter()
        .zip(pings)
        .map(|(shard, (ping, ping_ms))| {
            let now = after.iter().find(|s| s.node == shard.node).unwrap_or(shard);
            let mut report = serde_json::to_value(now).unwrap_or_default();
            match ping {
                Ok(_) => {
                    report["ok"] = json!(true);
                    report["ping_ms"] = json!(ping_ms);
                }
                Err(e) => {
                    let err = AppError::from(e);
                    report["ok"] = json!(false);
                    report["error"] = json!(format!("{}: {}", shard.node, err.message()));
                    if failed.is_none() {
                        failed = Some(err);
                    }
                }
            }
            report
        })
        .collect();
    Some((reports, failed))
}
