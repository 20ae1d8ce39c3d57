//! `Health`: `GET /api/health`, 200 when the cache answers, 503 when not.
//!
//! Shows the connection state, the token's remaining lifetime and refresh
//! count (never the token), and the last timer check.

use super::elapsed_ms;
use crate::app::AppState;
use crate::error::AppError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Pings the cache and reports the handler's state.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let start = Instant::now();
    let ping = state.cache.query::<String>(&redis::cmd("PING")).await;
    let latency_ms = elapsed_ms(start);
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
        "connection": state.cache.status(),
        "token": token,
        "last_check": last_check,
        "latency_ms": latency_ms,
    });
    match ping {
        Ok(_) => (StatusCode::OK, Json(body)),
        Err(e) => {
            let err = AppError::from(e);
            let (_, code) = err.status_and_code();
            body["status"] = json!("unavailable");
            body["error"] = json!(err.message());
            body["code"] = json!(code);
            body["latency_ms"] = Value::Null;
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}
