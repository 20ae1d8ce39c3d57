//! `CacheIncr`: `POST /api/cache/{key}/incr?by=N` adds `N` (default 1, may
//! be negative) to the integer stored under the key, atomically (`INCRBY`),
//! and answers the new value. A missing key counts from 0; a value that is
//! not an integer, or a sum that would overflow 64 bits, is a 409 and the
//! value stays as it was.

use super::cache_item::validate_key;
use super::{Endpoint, Function, HttpMethod, Trigger};
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
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
pub(crate) struct Incremented {
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

/// The HTTP function.
async fn incr(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Incremented>, AppError> {
    let key = validate_key(key)?;
    let Query(query) = query.map_err(|_| AppError::BadRequest("the query string is malformed".into()))?;
    let by = parse_by(&query)?;
    let value: i64 = state.cache.query(redis::cmd("INCRBY").arg(&key).arg(by)).await?;
    Ok(Json(Incremented { key, value }))
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
