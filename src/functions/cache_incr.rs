//! `CacheIncr`: `POST /api/cache/{key}/incr?by=N` adds `N` (default 1, may
//! be negative) to the integer stored under the key, atomically (`INCRBY`),
//! once per invocation however the connection fares, and answers the new
//! value ([`super::once`]). A missing key counts from 0; a value that is
//! not an integer, or a sum that would overflow 64 bits, is a 409 and the
//! value stays as it was.
//!
//! With an `Idempotency-Key` header, a client's retry of the same request
//! (the same `by` and body) within 24 hours gets the first answer, applied
//! once, from any instance, with `Idempotent-Replayed: true`; the same key
//! with another request is a 422. The body is not used otherwise.

use super::cache_item::validate_key;
use super::once::{self, ClientRetry, Incremented};
use super::{Endpoint, Function, HttpMethod, Trigger};
use crate::error::AppError;
use crate::functions::AppState;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::collections::HashMap;

/// `CacheIncr`: `POST /api/cache/{key}/incr`.
pub(crate) const FUNCTION: Function = Function {
    name: "CacheIncr",
    trigger: Trigger::Http {
        route: "cache/{key}/incr",
        endpoints: &[Endpoint {
            method: HttpMethod::Post,
            handler: |on| axum::routing::on(on, incr),
        }],
        also: &[],
    },
};

/// The answer: the key and its value after the increment.
#[derive(Debug, Serialize)]
pub(crate) struct Answer {
    key: String,
    value: i64,
}

/// `?by=N`: a whole number (64-bit, may be negative); 1 when absent.
fn parse_by(query: &HashMap<String, String>) -> Result<i64, AppError> {
    match query.get("by") {
        None => Ok(1),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| AppError::BadRequest(format!("by must be a whole number (a 64-bit integer), not {raw:?}"))),
    }
}

/// `POST /api/cache/{key}/incr`: checks the key and `by`, then adds once.
async fn incr(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let key = validate_key(key)?;
    let Query(query) = query.map_err(|_| AppError::BadRequest("the query string is malformed".into()))?;
    let by = parse_by(&query)?;
    let retry = match once::idempotency_key(&headers)? {
        Some(idempotency_key) => {
            let body = crate::body::read_limited(body, state.max_value_bytes()).await?;
            Some(ClientRetry {
                fingerprint: once::fingerprint(&[by.to_string().as_bytes(), &body]),
                key: idempotency_key,
            })
        }
        None => None,
    };
    let invocation = once::invocation(&headers);
    match once::incr(state.cache(), &key, by, &invocation, retry.as_ref()).await? {
        Incremented::Applied(value) => Ok(Json(Answer { key, value }).into_response()),
        Incremented::Replayed(value) => {
            let mut answer = Json(Answer { key, value }).into_response();
            answer
                .headers_mut()
                .insert(once::REPLAYED, HeaderValue::from_static("true"));
            Ok(answer)
        }
        Incremented::KeyReused => Err(AppError::IdempotencyKeyReused(
            "this Idempotency-Key was used for another request (another by or body) on this key; \
             use a new key for a new request"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `by` defaults to 1, takes any 64-bit integer, and refuses the rest.
    #[test]
    fn by_rules() {
        let q = |v: &str| HashMap::from([("by".to_owned(), v.to_owned())]);
        assert_eq!(parse_by(&HashMap::new()).unwrap(), 1);
        assert_eq!(parse_by(&q("5")).unwrap(), 5);
        assert_eq!(parse_by(&q("-3")).unwrap(), -3);
        assert_eq!(parse_by(&q(&i64::MIN.to_string())).unwrap(), i64::MIN);
        for bad in ["", "1.5", "x", "9223372036854775808", "1e3"] {
            assert!(matches!(parse_by(&q(bad)), Err(AppError::BadRequest(_))), "{bad:?}");
        }
    }
}
