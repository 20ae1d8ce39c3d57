//! The one error type every function answers with.
//!
//! The caller gets `{"error": "<a sentence>", "code": "<kind>"}` with the
//! status docs/contract.md names; the log gets the cause, once, for server-side
//! failures. Messages are already free of secrets (see [`crate::secret::redact`]).

use crate::cache::CacheError;
use crate::token::TokenError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What went wrong in an invocation.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed (bad key, ttl, body, envelope).
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such key or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// 413: the value is larger than the limit.
    #[error("the value is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 422: an `Idempotency-Key` reused for another request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// 503/504/409/502: the cache or the identity failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        Self::Cache(CacheError::Token(e))
    }
}

impl AppError {
    /// The HTTP status and the short machine-readable code.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::IdempotencyKeyReused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Self::Cache(CacheError::Token(_)) => (StatusCode::SERVICE_UNAVAILABLE, "identity_unavailable"),
            Self::Cache(CacheError::Auth(_)) => (StatusCode::SERVICE_UNAVAILABLE, "cache_authentication_failed"),
            Self::Cache(CacheError::Unavailable(_) | CacheError::Certificate(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "cache_unavailable")
            }
            Self::Cache(CacheError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, "cache_timeout"),
            Self::Cache(CacheError::WrongType(_)) => (StatusCode::CONFLICT, "wrong_type"),
            Self::Cache(CacheError::NotAnInteger(_)) => (StatusCode::CONFLICT, "not_an_integer"),
            Self::Cache(CacheError::Command(_) | CacheError::NoScript(_)) => (StatusCode::BAD_GATEWAY, "cache_error"),
        }
    }

    /// The sentence the caller reads.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Cache(CacheError::Token(e)) => format!("authentication token unavailable: {e}"),
            other => other.to_string(),
        }
    }
}

/// The JSON body of an error answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// What happened, in words.
    pub error: String,
    /// The kind, for programs.
    pub code: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let error = self.message();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), code, error = %error, "invocation failed");
        }
        (
            status,
            Json(ErrorBody {
                error,
                code: code.to_owned(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every error kind maps to the status docs/contract.md gives it.
    #[test]
    fn status_mapping() {
        let cases: Vec<(AppError, u16, &str)> = vec![
            (AppError::BadRequest("x".into()), 400, "bad_request"),
            (AppError::NotFound("x".into()), 404, "not_found"),
            (AppError::MethodNotAllowed("POST".into()), 405, "method_not_allowed"),
            (AppError::PayloadTooLarge(10), 413, "payload_too_large"),
            (
                AppError::IdempotencyKeyReused("x".into()),
                422,
                "idempotency_key_reused",
            ),
            (
                TokenError::Timeout(Duration::from_secs(5)).into(),
                503,
                "identity_unavailable",
            ),
            (
                CacheError::Auth("WRONGPASS".into()).into(),
                503,
                "cache_authentication_failed",
            ),
            (
                CacheError::Unavailable("refused".into()).into(),
                503,
                "cache_unavailable",
            ),
            (CacheError::Timeout(Duration::from_secs(5)).into(), 504, "cache_timeout"),
            (
                CacheError::WrongType("WRONGTYPE Operation".into()).into(),
                409,
                "wrong_type",
            ),
            (
                CacheError::NotAnInteger("ERR value is not an integer".into()).into(),
                409,
                "not_an_integer",
            ),
            (CacheError::Command("ERR unknown".into()).into(), 502, "cache_error"),
        ];
        for (err, status, code) in cases {
            let (s, c) = err.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{err:?}");
        }
    }

    /// The messages say which part failed: the identity, authentication, the cache.
    #[test]
    fn messages_name_the_failing_part() {
        let id: AppError = TokenError::Timeout(Duration::from_secs(5)).into();
        assert!(id.message().contains("token"), "{}", id.message());
        assert!(id.message().contains("identity"), "{}", id.message());
        let auth: AppError = CacheError::Auth("WRONGPASS".into()).into();
        assert!(auth.message().contains("authentication"));
        let down: AppError = CacheError::Unavailable("refused".into()).into();
        assert!(down.message().contains("cache"));
    }
}
