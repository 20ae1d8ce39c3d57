//! `POST /{tenant}/oauth2/v2.0/token`, the client credentials grant.
//!
//! What `azure_identity` 1.0.0 sends (client_secret_credential.rs,
//! client_assertion_credential.rs): a form body with `client_id`,
//! `grant_type=client_credentials`, `scope` (the scopes joined by spaces) and
//! either `client_secret`, or `client_assertion` with `client_assertion_type`
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`. What it reads
//! back (`handle_entra_response`): on success `access_token` and
//! `expires_in`; on failure `error_description` and `error_codes`. The
//! checks and error codes below are Entra ID's own (`AADSTS…`), with its
//! error body shape.

use super::model::{EntraRequest, EntraState, FederatedClaims, Presented, TOKEN_EXCHANGE_AUDIENCE};
use crate::identity::verify_jwt_signature;
use crate::util::{unix_now, uuid_v4};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `client_assertion_type` of a JWT assertion.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(super) fn router(shared: Arc<EntraState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .with_state(shared)
}

/// A refused request: status, OAuth error, AADSTS code and message.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
}

fn refuse(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        code,
        message: message.into(),
    }
}

fn missing(name: &str) -> Refusal {
    refuse(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// Checks the request, mints a token on success, logs it, answers.
async fn token(
    State(s): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let presented = if form.contains_key("client_secret") {
        Presented::Secret
    } else if form.contains_key("client_assertion") {
        Presented::Assertion
    } else {
        Presented::Neither
    };
    let mut record = EntraRequest {
        tenant,
        grant_type: form.get("grant_type").cloned(),
        client_id: form.get("client_id").cloned(),
        scope: form.get("scope").cloned(),
        presented,
        status: 200,
        error_code: None,
    };
    let response = match check(&s, &record.tenant, &headers, &form) {
        Ok(resource) => {
            let issued = s.issuer.issue(&resource).await;
            let body = json!({
                "token_type": "Bearer",
                "expires_in": issued.lifetime_s,
                "ext_expires_in": issued.lifetime_s,
                "access_token": issued.token,
            });
            let no_store = [
                (header::CACHE_CONTROL, "no-store, no-cache"),
                (header::PRAGMA, "no-cache"),
            ];
            (StatusCode::OK, no_store, Json(body)).into_response()
        }
        Err(refusal) => {
            record.status = refusal.status.as_u16();
            record.error_code = Some(refusal.code);
            error_response(&s.authority, refusal)
        }
    };
    s.log.lock().unwrap().push(record);
    response
}

/// Entra ID's error body.
fn error_response(authority: &str, r: Refusal) -> Response {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    let timestamp = time::OffsetDateTime::now_utc().format(&format).unwrap_or_default();
    let (trace_id, correlation_id) = (uuid_v4(), uuid_v4());
    let body = json!({
        "error": r.error,
        "error_description": format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            r.code, r.message
        ),
        "error_codes": [r.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("{authority}/error?code={}", r.code),
    });
    (r.status, Json(body)).into_response()
}

/// Checks what Entra ID checks, in its order; the resource on success.
fn check(
    s: &EntraState,
    tenant: &str,
    headers: &HeaderMap,
    form: &BTreeMap<String, String>,
) -> Result<String, Refusal> {
    let cfg = &s.cfg;
    if tenant != cfg.principal.tenant_id {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        ));
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let grant = form
        .get("grant_type")
        .filter(|_| form_type)
        .ok_or_else(|| missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let client_id = form.get("client_id").ok_or_else(|| missing("client_id"))?;
    if *client_id != cfg.client_id {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        ));
    }
    check_credential(s, form)?;
    let scope = form.get("scope").ok_or_else(|| missing("scope"))?;
    let resource = match scope.split(' ').collect::<Vec<_>>()[..] {
        [one] => one.strip_suffix("/.default"),
        _ => None,
    }
    .ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )
    })?;
    if !cfg.resources.iter().any(|r| r == resource) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant named {tenant}."),
        ));
    }
    Ok(resource.to_owned())
}

/// The client secret, or the federated assertion, the app accepts.
fn check_credential(s: &EntraState, form: &BTreeMap<String, String>) -> Result<(), Refusal> {
    let invalid_client = |code, message: &str| refuse(StatusCode::UNAUTHORIZED, "invalid_client", code, message);
    if let Some(secret) = form.get("client_secret") {
        return match &s.cfg.client_secret {
            Some(expected) if expected == secret => Ok(()),
            _ => Err(invalid_client(
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            )),
        };
    }
    let Some(assertion) = form.get("client_assertion") else {
        return Err(invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
        return Err(missing("client_assertion_type"));
    }
    let Some(fic) = &s.cfg.federated else {
        return Err(invalid_client(
            70021,
            "No matching federated identity record found for presented assertion.",
        ));
    };
    let claims: FederatedClaims = verify_jwt_signature(&s.assertion_key, assertion)
        .map_err(|_| invalid_client(700027, "Client assertion contains an invalid signature."))?;
    if claims.iss != fic.issuer {
        return Err(invalid_client(
            700211,
            "No matching federated identity record found for presented assertion issuer.",
        ));
    }
    if claims.sub != fic.subject {
        return Err(invalid_client(
            700213,
            "No matching federated identity record found for presented assertion subject.",
        ));
    }
    if !claims.aud.iter().any(|a| a == TOKEN_EXCHANGE_AUDIENCE) {
        return Err(invalid_client(
            700212,
            "No matching federated identity record found for presented assertion audience.",
        ));
    }
    if claims.exp <= unix_now() {
        return Err(invalid_client(
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}
