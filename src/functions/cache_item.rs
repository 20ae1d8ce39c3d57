//! `CacheItem`: `GET`, `PUT` and `DELETE /api/cache/{key}`.
//!
//! Keys are 1 to 1024 bytes of UTF-8 (percent-decoded from the path); values
//! are UTF-8 text up to the configured limit; `?ttl=` is a whole number of
//! seconds, at least 1. Bad input is refused before Redis is touched.

use super::json::{self, Json};
use super::Answer;
use super::{Endpoint, Function, HttpMethod, Trigger};
use crate::body::Out;
use crate::error::AppError;
use crate::functions::AppState;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use base64::Engine;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;

/// Largest key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// Checks a key taken from the path.
pub(crate) fn validate_key(key: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    let Path(key) = key.map_err(|_| AppError::BadRequest("the key must be valid UTF-8 once percent-decoded".into()))?;
    check_key(&key)?;
    Ok(key)
}

/// Checks a key's length: 1 to [`MAX_KEY_BYTES`] bytes.
fn check_key(key: &str) -> Result<(), AppError> {
    if key.is_empty() {
        return Err(AppError::BadRequest("the key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(AppError::BadRequest(format!(
            "the key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Reads `?ttl=` (other parameters, such as the function key `code`, are ignored).
pub(crate) fn parse_ttl(query: &HashMap<String, String>) -> Result<Option<u64>, AppError> {
    let Some(raw) = query.get("ttl") else {
        return Ok(None);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=i64::MAX as u64 / 1000).contains(&n) => Ok(Some(n)),
        _ => Err(AppError::BadRequest(format!(
            "ttl must be a whole number of seconds, at least 1 (got {:?})",
            raw.chars().take(40).collect::<String>()
        ))),
    }
}

/// The answer to `GET` (typed, so the hot path builds no JSON tree); the
/// key borrowed from the request on the fast path.
#[derive(Debug, Serialize)]
pub(crate) struct Item<'a> {
    /// The key asked for.
    pub key: Cow<'a, str>,
    /// The value, when it is UTF-8 text; `null` otherwise.
    pub value: Option<String>,
    /// The value as base64, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl<'a> Item<'a> {
    /// `key`'s stored `bytes`: as text when they are UTF-8, else as base64.
    fn new(key: Cow<'a, str>, bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Item {
                key,
                value: Some(text),
                value_base64: None,
            },
            // Written by another client: never mangle it, hand it over as base64.
            Err(e) => Item {
                key,
                value: None,
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
            },
        }
    }
}

/// The answer to `PUT`.
#[derive(Debug, Serialize)]
pub(crate) struct Stored {
    /// The key written.
    pub key: String,
    /// Always true: a failed write is an error answer.
    pub stored: bool,
}

/// The answer to `DELETE`.
#[derive(Debug, Serialize)]
pub(crate) struct Deleted {
    /// The key removed.
    pub key: String,
    /// Whether it existed.
    pub deleted: bool,
}

impl Json for Item<'_> {
    fn json_len(&self) -> usize {
        let value = self.value.as_deref().map_or(4, json::string_len);
        let base64 = self
            .value_base64
            .as_deref()
            .map_or(0, |b| json::name_len("value_base64", false) + json::string_len(b));
        json::name_len("key", true) + json::string_len(&self.key) + json::name_len("value", false) + value + base64 + 2
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json::name(out, "key", true);
        json::string(out, &self.key);
        json::name(out, "value", false);
        match &self.value {
            Some(value) => json::string(out, value),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(base64) = &self.value_base64 {
            json::name(out, "value_base64", false);
            json::string(out, base64);
        }
        out.push(b'}');
    }
}

/// `{"key":…,"<flag>":true}` (or `false`): `Stored`'s and `Deleted`'s shape.
struct KeyAndFlag<'a> {
    key: &'a str,
    flag: &'static str,
    value: bool,
}

impl Json for KeyAndFlag<'_> {
    fn json_len(&self) -> usize {
        json::name_len("key", true)
            + json::string_len(self.key)
            + json::name_len(self.flag, false)
            + json::boolean_len(self.value)
            + 2
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json::name(out, "key", true);
        json::string(out, self.key);
        json::name(out, self.flag, false);
        json::boolean(out, self.value);
        out.push(b'}');
    }
}

impl Stored {
    fn shape(&self) -> KeyAndFlag<'_> {
        KeyAndFlag {
            key: &self.key,
            flag: "stored",
            value: self.stored,
        }
    }
}

impl Json for Stored {
    fn json_len(&self) -> usize {
        self.shape().json_len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.shape().write(out);
    }
}

impl Deleted {
    fn shape(&self) -> KeyAndFlag<'_> {
        KeyAndFlag {
            key: &self.key,
            flag: "deleted",
            value: self.deleted,
        }
    }
}

impl Json for Deleted {
    fn json_len(&self) -> usize {
        self.shape().json_len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.shape().write(out);
    }
}

/// `CacheItem`: `GET`, `PUT` and `DELETE /api/cache/{key}`; `/api/cache`
/// without a key is a 400.
pub(crate) const FUNCTION: Function = Function {
    name: "CacheItem",
    trigger: Trigger::Http {
        route: "cache/{key}",
        endpoints: &[
            Endpoint {
                method: HttpMethod::Get,
                handler: |on| axum::routing::on(on, get),
            },
            Endpoint {
                method: HttpMethod::Put,
                handler: |on| axum::routing::on(on, put),
            },
            Endpoint {
                method: HttpMethod::Delete,
                handler: |on| axum::routing::on(on, delete),
            },
        ],
        also: &[
            ("/api/cache/", || axum::routing::any(empty_key)),
            ("/api/cache", || axum::routing::any(empty_key)),
        ],
    },
};

/// `GET`: the value, or 404.
pub(crate) async fn get(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Answer<Item<'static>>, AppError> {
    let key = validate_key(key)?;
    let value = read(&state, &key).await?;
    Ok(Answer(Item::new(Cow::Owned(key), value)))
}

/// [`get`] of a key the fast path took from the path as it is (no
/// percent-decoding to do): the same answers, without a copy of the key.
pub(crate) async fn get_key(State(state): State<AppState>, key: &str) -> axum::http::Response<Out> {
    let answer = async {
        check_key(key)?;
        let value = read(&state, key).await?;
        Ok::<_, AppError>(Answer(Item::new(Cow::Borrowed(key), value)))
    };
    super::out(answer.await)
}

/// The value stored under `key`, or 404.
async fn read(state: &AppState, key: &str) -> Result<Vec<u8>, AppError> {
    let value: Option<Vec<u8>> = state.cache().query(redis::cmd("GET").arg(key)).await?;
    value.ok_or_else(|| AppError::NotFound(format!("no value is stored under key {key:?}")))
}

/// `PUT`: stores the body, with an optional TTL.
pub(crate) async fn put(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Body,
) -> Result<Answer<Stored>, AppError> {
    let key = validate_key(key)?;
    let Query(query) = query.map_err(|_| AppError::BadRequest("the query string is malformed".into()))?;
    let ttl = parse_ttl(&query)?;
    let bytes = crate::body::read_limited(body, state.max_value_bytes()).await?;
    let value = std::str::from_utf8(&bytes).map_err(|_| AppError::BadRequest("the value must be UTF-8 text".into()))?;
    let mut cmd = redis::cmd("SET");
    cmd.arg(&key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("EX").arg(ttl);
    }
    let _: String = state.cache().query(&cmd).await?;
    Ok(Answer(Stored { key, stored: true }))
}

/// `DELETE`: removes the key; `deleted` says whether this invocation
/// removed it, even when its first answer was lost with a connection (see
/// [`super::once`]).
pub(crate) async fn delete(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Answer<Deleted>, AppError> {
    let key = validate_key(key)?;
    let deleted = super::once::delete(state.cache(), &key, &super::once::invocation(&headers)).await?;
    Ok(Answer(Deleted { key, deleted }))
}

/// `/api/cache/` with no key.
pub(crate) async fn empty_key() -> AppError {
    AppError::BadRequest("the key must not be empty".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// ttl accepts whole seconds from 1 and refuses everything else.
    #[test]
    fn ttl_rules() {
        assert_eq!(parse_ttl(&q(&[])).unwrap(), None);
        assert_eq!(parse_ttl(&q(&[("ttl", "1")])).unwrap(), Some(1));
        assert_eq!(parse_ttl(&q(&[("ttl", "86400"), ("code", "x")])).unwrap(), Some(86400));
        for bad in ["0", "-1", "1.5", "abc", "", "5,6", "99999999999999999999"] {
            assert!(
                matches!(parse_ttl(&q(&[("ttl", bad)])), Err(AppError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    /// Keys from 1 to 1024 bytes pass; empty and longer ones do not.
    #[test]
    fn key_rules() {
        assert_eq!(validate_key(Ok(Path("k".into()))).unwrap(), "k");
        assert!(validate_key(Ok(Path("é".repeat(512)))).is_ok());
        assert!(matches!(
            validate_key(Ok(Path(String::new()))),
            Err(AppError::BadRequest(_))
        ));
        assert!(matches!(
            validate_key(Ok(Path("x".repeat(1025)))),
            Err(AppError::BadRequest(_))
        ));
    }

    /// Each answer with nothing to escape fills its buffer exactly (so
    /// `Bytes` takes it without allocating).
    #[test]
    fn plain_answers_fill_their_buffers() {
        fn exact(value: &impl Json) {
            let out = json::to_vec(value);
            assert_eq!(out.len(), out.capacity(), "{}", String::from_utf8_lossy(&out));
        }
        let key = || Cow::Borrowed("key:000000000001");
        exact(&Item::new(key(), vec![b'x'; 100]));
        exact(&Item::new(key(), vec![0xff, 0xfe, 0]));
        exact(&Item::new(key(), Vec::new()));
        for flag in [true, false] {
            exact(&Stored {
                key: "k".into(),
                stored: flag,
            });
            exact(&Deleted {
                key: "k".into(),
                deleted: flag,
            });
        }
    }

    /// The hand-sized answers are axum's `Json` answers byte for byte, with
    /// the same content type, for text, escapes, base64 and large values.
    #[tokio::test]
    async fn answers_as_json_writes_them() {
        use axum::response::IntoResponse;
        use http_body_util::BodyExt;
        async fn parts(r: axum::response::Response) -> (u16, Option<String>, Vec<u8>) {
            let status = r.status().as_u16();
            let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            (status, ct, r.into_body().collect().await.unwrap().to_bytes().to_vec())
        }
        let item = |value: Option<&str>, b64: Option<&str>| Item {
            key: "k \"1\"\n".into(),
            value: value.map(str::to_owned),
            value_base64: b64.map(str::to_owned),
        };
        let big = "é\u{1}".repeat(10_000);
        for (v, b) in [
            (Some("x"), None),
            (Some(big.as_str()), None),
            (None, Some("AAE=")),
            (Some(""), None),
        ] {
            let a = parts(Answer(item(v, b)).into_response()).await;
            let j = parts(axum::Json(item(v, b)).into_response()).await;
            assert_eq!(a, j);
        }
        let stored = || Stored {
            key: "k".into(),
            stored: true,
        };
        assert_eq!(
            parts(Answer(stored()).into_response()).await,
            parts(axum::Json(stored()).into_response()).await
        );
        let deleted = || Deleted {
            key: "k".into(),
            deleted: false,
        };
        assert_eq!(
            parts(Answer(deleted()).into_response()).await,
            parts(axum::Json(deleted()).into_response()).await
        );
    }
}
