//! Bad input, beyond the contract's list: arbitrary bytes, broken JSON,
//! wrong types, huge and deeply nested documents thrown at the envelope and
//! HTTP parsers. Every answer is JSON, a 4xx for bad input, and nothing
//! panics. The cache here is a closed port, so a request that is valid gets
//! a fast 503 (or a failed timer check, 500) instead: never a hang or a crash.

use crate::support;

use axum::body::Body;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

/// One router for all cases: its cache's connect backoff then makes most
/// calls fail fast, as in production during an outage.
fn router() -> axum::Router {
    static ROUTER: std::sync::OnceLock<axum::Router> = std::sync::OnceLock::new();
    ROUTER.get_or_init(|| support::router_without_cache(4096)).clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends one request; returns the status and the parsed JSON body (panics if not JSON).
async fn send(router: &axum::Router, method: &str, uri: &str, body: Vec<u8>) -> (u16, Value) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{method} {uri}: {status}, not JSON"));
    (status, json)
}

fn is_error_json(v: &Value) -> bool {
    v["error"].as_str().is_some_and(|e| !e.is_empty()) && v["code"].is_string()
}

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[A-Za-z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `POST /<Name>` of every function in the registry: the envelopes the
/// host may send.
fn envelope_path(which: usize) -> String {
    let functions = azure_redis_handler::FUNCTIONS;
    format!("/{}", functions[which % functions.len()].name)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes at any envelope endpoint: a 4xx JSON error.
    #[test]
    fn arbitrary_bytes_at_envelopes(body in prop::collection::vec(any::<u8>(), 0..2048), which in any::<usize>()) {
        let r = router();
        let (status, json) = runtime().block_on(send(&r, "POST", &envelope_path(which), body));
        // Only a body that happens to be a valid envelope could get further.
        prop_assert!((400..500).contains(&status) || json.get("Outputs").is_some(), "{status} {json}");
        if (400..500).contains(&status) { prop_assert!(is_error_json(&json), "{json}"); }
    }

    /// Any JSON document as Data/Metadata: 4xx, or (if it really holds a
    /// timer or HTTP request) the function's own answer; never a crash.
    #[test]
    fn wrong_types_in_envelopes(data in any_json(), metadata in any_json(), which in any::<usize>()) {
        let r = router();
        let body = serde_json::to_vec(&json!({"Data": data, "Metadata": metadata})).unwrap();
        let (status, json) = runtime().block_on(send(&r, "POST", &envelope_path(which), body));
        let handled = json.get("Outputs").is_some() && json.get("ReturnValue").is_some();
        prop_assert!(((400..500).contains(&status) && is_error_json(&json)) || handled, "{status} {json}");
    }

    /// Arbitrary keys (any Unicode, percent-encoded) and ttl strings: 400 when
    /// bad, otherwise they reach the (absent) cache; never a panic or a non-JSON answer.
    #[test]
    fn arbitrary_keys_and_ttls(key in ".{0,300}", ttl in prop::option::of(".{0,12}"), method in 0..3usize) {
        let r = router();
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        let query = ttl.as_ref().map(|t| format!("?ttl={}", t.bytes().map(|b| format!("%{b:02X}")).collect::<String>())).unwrap_or_default();
        let method = ["GET", "PUT", "DELETE"][method];
        let (status, json) = runtime().block_on(send(&r, method, &format!("/api/cache/{encoded}{query}"), b"v".to_vec()));
        prop_assert!(is_error_json(&json), "{json}");
        let ttl_ok = ttl.as_deref().is_none_or(|t| t.trim().parse::<u64>().is_ok_and(|n| n >= 1)) || method != "PUT";
        if key.is_empty() || !ttl_ok {
            prop_assert_eq!(status, 400);
        } else {
            prop_assert!([400, 503].contains(&status), "{} {}", status, json);
        }
    }
}

/// A deeply nested document is refused with 400, not a stack overflow.
#[tokio::test]
async fn deeply_nested_json_is_400() {
    let r = router();
    let depth = 20_000;
    let body = format!("{{\"Data\": {{\"t\": {}{}}}}}", "[".repeat(depth), "]".repeat(depth));
    let (status, json) = send(&r, "POST", "/CacheHealthCheck", body.into_bytes()).await;
    assert_eq!(status, 400, "{json}");
    assert!(is_error_json(&json));
}

/// A huge envelope is refused with 413 without being parsed.
#[tokio::test]
async fn huge_envelope_is_413() {
    let r = router();
    let body = format!("{{\"Data\": {{\"t\": \"{}\"}}}}", "x".repeat(4 * 1024 * 1024));
    let (status, json) = send(&r, "POST", "/CacheItem", body.into_bytes()).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["code"], "payload_too_large");
}

/// Invalid UTF-8 inside an HTTP envelope's strings, odd methods and URLs.
#[tokio::test]
async fn odd_http_envelopes_are_4xx() {
    let r = router();
    let cases = [
        json!({"Data": {"req": {"Url": "http://h/api/cache/k", "Method": ""}}}),
        json!({"Data": {"req": {"Url": "not a url at all \u{0}", "Method": "GET"}}}),
        json!({"Data": {"req": {"Url": 5, "Method": "GET"}}}),
        json!({"Data": {"req": {"Url": "http://h/api/cache/k", "Method": "GET", "Headers": {"X": [1, {"a": 2}]}}}}),
        json!({"Data": []}),
        json!([]),
        json!(null),
    ];
    for body in cases {
        let (status, json) = send(&r, "POST", "/CacheItem", serde_json::to_vec(&body).unwrap()).await;
        let inner = json["Outputs"]["res"]["statusCode"].as_u64().unwrap_or(0) as u16;
        assert!(
            (400..500).contains(&status) || (400..500).contains(&inner) || inner == 503,
            "{body}: {status} {json}"
        );
    }
}
