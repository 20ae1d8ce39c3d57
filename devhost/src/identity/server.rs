//! The HTTP side of the identity endpoint.
//!
//! Follows docs/azure.md "azure_identity 1.0.0" (request and response shape;
//! 400 means "identity not assigned", other errors surface their body).
//! Every request is logged on arrival and again when answered, so a caller
//! can see when a fetch was in flight.

use super::{IdentityMode, IdentityState, Issued, TokenRequest};
use crate::util::uuid_v4;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API version App Service's endpoint speaks and the client sends.
const API_VERSION: &str = "2019-08-01";

/// Longest a `Hang` request is held.
const HANG_LIMIT: Duration = Duration::from_secs(600);

pub(super) fn router(shared: Arc<IdentityState>) -> Router {
    Router::new().route("/msi/token", get(token)).with_state(shared)
}

/// An App Service style JSON error.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "correlationId": uuid_v4(),
    });
    (status, Json(body)).into_response()
}

/// Waits while the mode is `Hang`; `None` if the endpoint went away or the
/// hang limit passed.
async fn mode_after_hang(s: &IdentityState) -> Option<IdentityMode> {
    let mut rx = s.mode.clone();
    let limit = tokio::time::sleep(HANG_LIMIT);
    tokio::pin!(limit);
    loop {
        let mode = *rx.borrow_and_update();
        if mode != IdentityMode::Hang {
            return Some(mode);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return None },
            _ = &mut limit => return None,
        }
    }
}

/// Logs the request, holds it for the configured delay, answers it, and
/// logs the answer.
async fn token(
    State(s): State<Arc<IdentityState>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let index = {
        let mut log = s.log.lock().unwrap();
        log.push(TokenRequest {
            received: Instant::now(),
            answered: None,
            status: None,
            exp: None,
        });
        log.len() - 1
    };
    *s.last_query.lock().unwrap() = Some(q.clone());
    let delay = *s.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (response, exp) = match answer(&s, &q, &headers).await {
        Ok((response, exp)) => (response, Some(exp)),
        Err(response) => (response, None),
    };
    let entry = &mut s.log.lock().unwrap()[index];
    entry.answered = Some(Instant::now());
    entry.status = Some(response.status().as_u16());
    entry.exp = exp;
    response
}

/// The answer per the mode and the request: a minted token and its `exp`,
/// or an error response.
async fn answer(
    s: &IdentityState,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Response, i64), Response> {
    match mode_after_hang(s).await {
        None => return Err(error(StatusCode::SERVICE_UNAVAILABLE, "endpoint shutting down")),
        Some(IdentityMode::Fail500) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure")),
        Some(IdentityMode::Unauthorized) => return Err(error(StatusCode::UNAUTHORIZED, "Unauthorized (injected)")),
        Some(IdentityMode::Normal | IdentityMode::Hang) => {}
    }
    let header = headers.get("x-identity-header").and_then(|v| v.to_str().ok());
    if header != Some(s.secret.as_str()) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing or wrong X-IDENTITY-HEADER",
        ));
    }
    if q.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return Err(error(StatusCode::BAD_REQUEST, "unsupported or missing api-version"));
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return Err(error(StatusCode::BAD_REQUEST, "resource is required"));
    };
    let cfg = &s.cfg;
    let wrong_client = q.get("client_id").is_some_and(|c| Some(c) != cfg.client_id.as_ref());
    let wrong_object = q.get("object_id").is_some_and(|o| *o != cfg.oid);
    if wrong_client || wrong_object || q.contains_key("msi_res_id") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "No MI found for specified ClientId/ResourceId.",
        ));
    }

    let Issued { token, exp, .. } = s.issuer.issue(resource).await;
    let body = json!({
        "access_token": token,
        "expires_on": exp.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": cfg.client_id.clone().unwrap_or_else(|| "00000000-0000-4000-8000-0000000c11e7".into()),
    });
    Ok(((StatusCode::OK, Json(body)).into_response(), exp))
}
