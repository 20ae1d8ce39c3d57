//! `Health`: `GET /api/health`, 200 when the cache answers, 503 when not.
//!
//! Shows the connection state, the token's remaining lifetime and refresh
//! count (never the token), and the last timer check. On a cluster it
//! also PINGs every master and shows each one (`shards`): its slots, its
//! connection state and re-AUTH count; any master failing makes it a 503.

use super::{elapsed_ms, Endpoint, Function, HttpMethod, Trigger};
use crate::cache::ShardInfo;
use crate::error::AppError;
use crate::state::AppState;
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
    let ping = state.cache.query::<String>(&redis::cmd("PING")).await;
    let latency_ms = elapsed_ms(start);
    // On a cluster: every master, PINGed at once on its own connection.
    let shards = match &ping {
        Ok(_) => state.cache.shards().await.ok().flatten(),
        Err(_) => None,
    };
    let shard_reports = match &shards {
        Some(shards) => {
            Some(futures_util::future::join_all(shards.iter().map(|shard| shard_report(&state, shard))).await)
        }
        None => None,
    };
    let token = state.cache.tokens().map(|t| {
        let current = t.peek();
        json!({
            "user": current.as_ref().map(|c| c.user.clone()),
            "expires_in_s": current.as_ref().map(|c| c.expires_in().as_secs()),
            "refreshes": t.stats.refreshes.load(Ordering::Relaxed),
            "fetches": t.stats.fetches.load(Ordering::Relaxed),
            "fetch_failures": t.stats.failures.load(Ordering::Relaxed),
        })
    });
    let last_check = state.last_check.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut body = json!({
        "status": "ok",
        "mode": state.cache.mode_name(),
        "connection": state.cache.status(),
        "token": token,
        "last_check": last_check,
        "latency_ms": latency_ms,
    });
    let mut failed_shard = None;
    if let Some(reports) = shard_reports {
        let mut shards = Vec::with_capacity(reports.len());
        for (report, err) in reports {
            failed_shard = failed_shard.or(err);
            shards.push(report);
        }
        body["shards"] = Value::Array(shards);
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

/// One master: its connection's state and re-AUTH count, and a PING on it.
async fn shard_report(state: &AppState, shard: &ShardInfo) -> (Value, Option<AppError>) {
    let start = Instant::now();
    let ping = state.cache.query_node::<String>(&shard.node, &redis::cmd("PING")).await;
    let mut report = serde_json::to_value(shard).unwrap_or_default();
    // The state after the PING, which may have connected.
    report["connected"] = json!(state.cache.shards().await.ok().flatten().and_then(|all| all
        .into_iter()
        .find(|s| s.node == shard.node)
        .map(|s| s.status.connected)));
    match ping {
        Ok(_) => {
            report["ok"] = json!(true);
            report["ping_ms"] = json!(elapsed_ms(start));
            (report, None)
        }
        Err(e) => {
            let err = AppError::from(e);
            report["ok"] = json!(false);
            report["error"] = json!(format!("{}: {}", shard.node, err.message()));
            (report, Some(err))
        }
    }
}
