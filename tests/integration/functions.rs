//! Every function and error of docs/contract.md, driven the way the host drives
//! the handler: forwarded `/api/...` requests and `POST /<Function>` envelopes,
//! against a real TLS redis-server through an Entra ID token.

use crate::support::{spawn_app, Options, TestApp};
use devhost::functions_host::{http_envelope_metadata, http_envelope_request, timer_info};
use reqwest::Method;
use serde_json::json;

async fn app() -> TestApp {
    spawn_app(Options::default()).await
}

/// Ping answers pong with a latency, over TLS, authenticated as the token's oid.
#[tokio::test]
async fn ping_answers_pong() {
    let app = app().await;
    let (status, body) = app.get("/api/ping").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pong"], true);
    assert!(body["latency_ms"].as_f64().unwrap() >= 0.0);
    let conns = app.handler_connections().await;
    assert_eq!(conns.len(), 1, "one connection, as the token's oid: {conns:?}");
    assert_eq!(
        conns[0].laddr.rsplit(':').next().unwrap(),
        app.redis.tls_port().to_string(),
        "over the TLS port"
    );
}

/// PUT, GET, DELETE round trip, ttl, and 404 for a missing key.
#[tokio::test]
async fn cache_item_round_trip() {
    let app = app().await;
    let (s, b) = app.call(Method::PUT, "/api/cache/greeting", Some(b"hello world")).await;
    assert_eq!((s, &b), (200, &json!({"key": "greeting", "stored": true})));
    let (s, b) = app.get("/api/cache/greeting").await;
    assert_eq!((s, &b), (200, &json!({"key": "greeting", "value": "hello world"})));
    let ttl: i64 = app.redis.admin().cmd(redis::cmd("TTL").arg("greeting")).await.unwrap();
    assert_eq!(ttl, -1, "no ttl unless asked");

    let (s, _) = app
        .call(Method::PUT, "/api/cache/short?ttl=100&code=functionkey", Some(b"v"))
        .await;
    assert_eq!(s, 200);
    let ttl: i64 = app.redis.admin().cmd(redis::cmd("TTL").arg("short")).await.unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");

    let (s, b) = app.call(Method::DELETE, "/api/cache/greeting", None).await;
    assert_eq!((s, &b), (200, &json!({"key": "greeting", "deleted": true})));
    let (s, b) = app.call(Method::DELETE, "/api/cache/greeting", None).await;
    assert_eq!((s, &b), (200, &json!({"key": "greeting", "deleted": false})));
    let (s, b) = app.get("/api/cache/greeting").await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["code"], "not_found");
}

/// Keys with spaces, newlines, slashes and non-ASCII are stored exactly; an
/// empty PUT body is an empty value; a value at the limit is accepted.
#[tokio::test]
async fn unusual_keys_and_values_are_kept_exactly() {
    let app = app().await;
    for (encoded, raw) in [
        ("a%20b", "a b"),
        ("line%0Abreak", "line\nbreak"),
        ("sl%2Fash", "sl/ash"),
        ("%C3%A9t%C3%A9%20%E2%98%83", "été ☃"),
        ("%00bin%01", "\u{0}bin\u{1}"),
    ] {
        let value = format!("value of {raw}");
        let (s, b) = app
            .call(Method::PUT, &format!("/api/cache/{encoded}"), Some(value.as_bytes()))
            .await;
        assert_eq!(s, 200, "{encoded}: {b}");
        let stored: Option<String> = app.redis.admin().cmd(redis::cmd("GET").arg(raw)).await.unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(value.as_str()),
            "{encoded} stored under the decoded key"
        );
        let (s, b) = app.get(&format!("/api/cache/{encoded}")).await;
        assert_eq!(
            (s, b["key"].as_str(), b["value"].as_str()),
            (200, Some(raw), Some(value.as_str()))
        );
    }
    let (s, _) = app.call(Method::PUT, "/api/cache/empty", None).await;
    assert_eq!(s, 200);
    assert_eq!(app.get("/api/cache/empty").await.1["value"], "");
    let max = 1024 * 1024;
    let (s, _) = app.call(Method::PUT, "/api/cache/big", Some(&vec![b'x'; max])).await;
    assert_eq!(s, 200);
    let len: usize = app.redis.admin().cmd(redis::cmd("STRLEN").arg("big")).await.unwrap();
    assert_eq!(len, max);
}

/// A value another client wrote that is not UTF-8 comes back as
/// `value_base64` (standard alphabet, padded) holding exactly its bytes, with
/// no text `value`; a UTF-8 value never comes back as base64.
#[tokio::test]
async fn non_utf8_value_comes_back_as_base64() {
    use base64::Engine;
    let app = app().await;
    let every_byte: Vec<u8> = (0..=255u8).rev().collect();
    for (key, bytes) in [
        ("every-byte", every_byte),
        ("cut-short", b"caf\xc3".to_vec()),
        ("lone-continuation", vec![0x80]),
    ] {
        let _: () = app
            .redis
            .admin()
            .cmd(redis::cmd("SET").arg(key).arg(&bytes))
            .await
            .unwrap();
        let (s, b) = app.get(&format!("/api/cache/{key}")).await;
        assert_eq!((s, b["key"].as_str()), (200, Some(key)), "{b}");
        assert!(b["value"].is_null(), "no lossy text value: {b}");
        let encoded = b["value_base64"].as_str().unwrap_or_else(|| panic!("{key}: {b}"));
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(encoded).unwrap(),
            bytes,
            "{key}: the exact bytes"
        );
    }
    let _: () = app
        .redis
        .admin()
        .cmd(redis::cmd("SET").arg("text").arg("café ☃"))
        .await
        .unwrap();
    let (s, b) = app.get("/api/cache/text").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"key": "text", "value": "café ☃"}));
}

/// A request and the status and code it must get.
type Case = (Method, String, Option<Vec<u8>>, u16, &'static str);

/// Every error of the contract, each a JSON body with a code, and none changes the cache.
#[tokio::test]
async fn contract_errors() {
    let app = app().await;
    let long = "k".repeat(1025);
    let cases: Vec<Case> = vec![
        (Method::GET, "/api/cache/".into(), None, 400, "bad_request"),
        (
            Method::PUT,
            format!("/api/cache/{long}"),
            Some(b"v".to_vec()),
            400,
            "bad_request",
        ),
        (
            Method::PUT,
            "/api/cache/t?ttl=0".into(),
            Some(b"v".to_vec()),
            400,
            "bad_request",
        ),
        (
            Method::PUT,
            "/api/cache/t?ttl=-5".into(),
            Some(b"v".to_vec()),
            400,
            "bad_request",
        ),
        (
            Method::PUT,
            "/api/cache/t?ttl=1.5".into(),
            Some(b"v".to_vec()),
            400,
            "bad_request",
        ),
        (
            Method::PUT,
            "/api/cache/t?ttl=soon".into(),
            Some(b"v".to_vec()),
            400,
            "bad_request",
        ),
        (
            Method::PUT,
            "/api/cache/t".into(),
            Some(vec![0xc3, 0x28]),
            400,
            "bad_request",
        ),
        (
            Method::PUT,
            "/api/cache/t".into(),
            Some(vec![b'x'; 1024 * 1024 + 1]),
            413,
            "payload_too_large",
        ),
        (Method::GET, "/api/nope".into(), None, 404, "not_found"),
        (Method::GET, "/api/cache/missing".into(), None, 404, "not_found"),
        (Method::POST, "/api/ping".into(), None, 405, "method_not_allowed"),
        (
            Method::POST,
            "/api/cache/t".into(),
            Some(b"v".to_vec()),
            405,
            "method_not_allowed",
        ),
        (Method::GET, "/api/quickstart".into(), None, 405, "method_not_allowed"),
        (Method::DELETE, "/api/clients".into(), None, 405, "method_not_allowed"),
        (Method::PUT, "/api/health".into(), None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, b) = app.call(method.clone(), &path, body.as_deref()).await;
        assert_eq!(s, status, "{method} {path}: {b}");
        assert_eq!(b["code"], code, "{method} {path}: {b}");
        assert!(!b["error"].as_str().unwrap_or("").is_empty(), "{b}");
    }
    let keys: Vec<String> = app.redis.admin().cmd(redis::cmd("KEYS").arg("*")).await.unwrap();
    assert!(keys.is_empty(), "bad input changed nothing: {keys:?}");
}

/// `CacheIncr`: a missing key counts from 0, `by` may be negative, 64
/// concurrent increments all land (INCRBY is atomic), and a value that is not
/// an integer, a sum that would overflow, a key holding a list and a bad `by`
/// are refused and change nothing. (Checked broken: with a GET-then-SET
/// increment the concurrent count comes out short.)
#[tokio::test]
async fn cache_incr_counts_atomically() {
    let app = app().await;
    let (s, b) = app.call(Method::POST, "/api/cache/counter/incr", None).await;
    assert_eq!(
        (s, &b),
        (200, &serde_json::json!({"key": "counter", "value": 1})),
        "{b}"
    );
    let (s, b) = app.call(Method::POST, "/api/cache/counter/incr?by=41", None).await;
    assert_eq!((s, b["value"].as_i64()), (200, Some(42)), "{b}");
    let (s, b) = app.call(Method::POST, "/api/cache/counter/incr?by=-50", None).await;
    assert_eq!((s, b["value"].as_i64()), (200, Some(-8)), "{b}");

    let calls = (0..64).map(|_| app.call(Method::POST, "/api/cache/hits/incr", None));
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let mut seen: Vec<i64> = answers.iter().filter_map(|(_, b)| b["value"].as_i64()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=64).collect::<Vec<_>>(), "each increment saw its own value");
    let (_, b) = app.get("/api/cache/hits").await;
    assert_eq!(b["value"], "64", "{b}");

    // Refused, and nothing changes.
    app.call(Method::PUT, "/api/cache/word", Some(b"abc")).await;
    let (s, b) = app.call(Method::POST, "/api/cache/word/incr", None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("not_an_integer")), "{b}");
    assert_eq!(app.get("/api/cache/word").await.1["value"], "abc");
    app.call(Method::PUT, "/api/cache/big", Some(i64::MAX.to_string().as_bytes()))
        .await;
    let (s, b) = app.call(Method::POST, "/api/cache/big/incr", None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("not_an_integer")), "{b}");
    assert_eq!(app.get("/api/cache/big").await.1["value"], i64::MAX.to_string());
    let _: () = app
        .redis
        .admin()
        .cmd(redis::cmd("LPUSH").arg("alist").arg("x"))
        .await
        .unwrap();
    let (s, b) = app.call(Method::POST, "/api/cache/alist/incr", None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("wrong_type")), "{b}");
    for bad in ["x", "1.5", "", "99999999999999999999"] {
        let (s, b) = app
            .call(Method::POST, &format!("/api/cache/counter/incr?by={bad}"), None)
            .await;
        assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")), "by={bad}: {b}");
    }
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (s, b) = app.call(method.clone(), "/api/cache/counter/incr", None).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (405, Some("method_not_allowed")),
            "{method}: {b}"
        );
    }
    assert_eq!(app.get("/api/cache/counter").await.1["value"], "-8");
}

/// `Idempotency-Key` on `CacheIncr`: the same key again gets the first
/// answer (with `Idempotent-Replayed: true`), applied once, from another
/// instance too (the record is in the cache); the same key with another
/// `by` or another body is a 422 that changes nothing; a new key is a new
/// increment; a bad key is a 400. (Checked broken: keeping the record in
/// process memory, the second instance applies the increment again.)
#[tokio::test]
async fn idempotency_key_answers_a_retry_with_the_first_answer() {
    let app = app().await;
    let other = devhost::functions_host::HandlerProcess::spawn(
        &crate::support::handler_binary(),
        crate::support::app_root(),
        &app.env,
    )
    .await
    .unwrap();
    let incr = |handler: &devhost::functions_host::HandlerProcess,
                key: &'static str,
                path: &'static str,
                body: &'static [u8]| {
        let handler = handler.client();
        async move {
            let res = handler
                .forward_with_headers(Method::POST, path, &[("Idempotency-Key", key)], Some(body.to_vec()))
                .await
                .unwrap();
            let status = res.status().as_u16();
            let replayed = res
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = res.json().await.unwrap();
            (status, replayed, body)
        }
    };
    let (s, replayed, b) = incr(&app.handler, "order-1", "/api/cache/stock/incr?by=5", b"").await;
    assert_eq!((s, replayed, b["value"].as_i64()), (200, None, Some(5)), "{b}");
    // The client retries, through another instance: the first answer.
    let (s, replayed, b) = incr(&other, "order-1", "/api/cache/stock/incr?by=5", b"").await;
    assert_eq!(
        (s, replayed.as_deref(), b["value"].as_i64()),
        (200, Some("true"), Some(5)),
        "{b}"
    );
    // The same key with another request.
    for (path, body) in [
        ("/api/cache/stock/incr?by=6", &b""[..]),
        ("/api/cache/stock/incr?by=5", b"note"),
    ] {
        let (s, _, b) = incr(&app.handler, "order-1", path, body).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{path}: {b}"
        );
    }
    let (s, _, b) = incr(&other, "order-2", "/api/cache/stock/incr?by=5", b"").await;
    assert_eq!(
        (s, b["value"].as_i64()),
        (200, Some(10)),
        "a new key is a new increment: {b}"
    );
    let (s, b) = app.get("/api/cache/stock").await;
    assert_eq!((s, b["value"].as_str()), (200, Some("10")), "applied once per key: {b}");
    let bad = app
        .handler
        .client()
        .forward_with_headers(Method::POST, "/api/cache/stock/incr", &[("Idempotency-Key", "")], None)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(app.get("/api/cache/stock").await.1["value"], "10");
}

/// A key holding another type is a 409, not a crash or a 5xx.
#[tokio::test]
async fn wrong_type_is_409() {
    let app = app().await;
    let _: () = app
        .redis
        .admin()
        .cmd(redis::cmd("LPUSH").arg("alist").arg("x"))
        .await
        .unwrap();
    let (s, b) = app.get("/api/cache/alist").await;
    assert_eq!((s, b["code"].as_str()), (409, Some("wrong_type")), "{b}");
}

/// The cache answering a command with an error of its own (here OOM: full
/// at `maxmemory`) is a 502 `cache_error` that says what the cache said; the
/// connection stays in use and the next write succeeds.
#[tokio::test]
async fn cache_refusing_a_command_is_502() {
    let app = app().await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let set_maxmemory = |bytes: &'static str| redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(bytes).clone();
    let _: () = app.redis.admin().cmd(&set_maxmemory("1")).await.unwrap();
    let (s, b) = app.call(Method::PUT, "/api/cache/full", Some(b"v")).await;
    assert_eq!((s, b["code"].as_str()), (502, Some("cache_error")), "{b}");
    assert!(b["error"].as_str().unwrap().contains("OOM"), "{b}");
    let _: () = app.redis.admin().cmd(&set_maxmemory("0")).await.unwrap();
    let (s, b) = app.call(Method::PUT, "/api/cache/full", Some(b"v")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(app.handler_connections().await.len(), 1, "the same one connection");
    let (_, h) = app.get("/api/health").await;
    assert_eq!(h["connection"]["connects"], 1, "{h}");
}

/// Clients lists CLIENT LIST entries, the handler's own connection among them.
#[tokio::test]
async fn clients_lists_connections() {
    let app = app().await;
    let (s, b) = app.get("/api/clients").await;
    assert_eq!(s, 200, "{b}");
    let clients = b["clients"].as_array().unwrap();
    assert!(
        clients
            .iter()
            .any(|c| c["user"] == app.oid.as_str() && c["cmd"] == "client|list"),
        "{b}"
    );
    assert!(clients.iter().all(|c| c["id"].is_string() && c["addr"].is_string()));
}

/// The quickstart scenario: PING, SET Message, GET Message, CLIENT LIST.
#[tokio::test]
async fn quickstart_scenario() {
    let app = app().await;
    let (s, b) = app.call(Method::POST, "/api/quickstart", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["ping"]["result"], true);
    assert_eq!(b["set"]["result"], true);
    assert_eq!(b["get"]["result"], "Hello, The cache is working with Rust!");
    assert!(b["client_list"]["count"].as_u64().unwrap() >= 1);
    let stored: String = app.redis.admin().cmd(redis::cmd("GET").arg("Message")).await.unwrap();
    assert_eq!(stored, "Hello, The cache is working with Rust!");
}

/// The timer: any binding name, ScheduleStatus or null, IsPastDue; the
/// answer has the host's shape, and Health shows the last check.
#[tokio::test]
async fn timer_check_and_health() {
    let app = app().await;
    for (binding, past_due, status) in [("myTimer", false, true), ("t", true, false)] {
        let res = app
            .handler
            .invoke_timer("CacheHealthCheck", binding, timer_info(past_due, status))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let b: serde_json::Value = res.json().await.unwrap();
        assert_eq!(b["Outputs"], json!({}));
        assert!(b["Logs"][0].as_str().unwrap().contains("passed"), "{b}");
        let r = &b["ReturnValue"];
        assert_eq!(r["ok"], true, "{b}");
        assert_eq!(r["is_past_due"], past_due);
        assert!(r["ping_ms"].as_f64().is_some() && r["round_trip_ms"].as_f64().is_some());
        assert!(r["client_count"].as_u64().unwrap() >= 1);
        assert!(r["token_expires_in_s"].as_u64().unwrap() > 3000);
        let probe = r["probe_key"].as_str().unwrap();
        let ttl: i64 = app.redis.admin().cmd(redis::cmd("TTL").arg(probe)).await.unwrap();
        assert!((1..=60).contains(&ttl), "probe key has a short ttl: {ttl}");
    }
    let (s, h) = app.get("/api/health").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["connection"]["connected"], true);
    assert_eq!(h["connection"]["connects"], 1);
    assert_eq!(h["token"]["user"], app.oid.as_str());
    assert!(h["token"]["expires_in_s"].as_u64().unwrap() > 3000);
    assert_eq!(h["last_check"]["ok"], true);
    assert_eq!(h["last_check"]["is_past_due"], true);
    assert!(
        !h.to_string().contains(&app.identity.last_token().unwrap()),
        "never the token"
    );
}

/// HTTP functions through the envelope answer in Outputs.res.
#[tokio::test]
async fn http_functions_through_the_envelope() {
    let app = app().await;
    let put = http_envelope_request(
        "PUT",
        "http://localhost:7071/api/cache/env%20key?ttl=30",
        &[("ttl", "30")],
        &[("Content-Type", "text/plain")],
        &[("key", "env key")],
        Some("enveloped"),
    );
    let res = app
        .handler
        .invoke(
            "CacheItem",
            json!({"req": put}),
            http_envelope_metadata(&[("ttl", "30")], &[], &[("key", "env key")]),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: serde_json::Value = res.json().await.unwrap();
    assert_eq!(b["Outputs"]["res"]["statusCode"], 200, "{b}");
    let stored: String = app.redis.admin().cmd(redis::cmd("GET").arg("env key")).await.unwrap();
    assert_eq!(stored, "enveloped");

    let get = http_envelope_request(
        "GET",
        "http://localhost:7071/api/cache/env%20key",
        &[],
        &[],
        &[("key", "env key")],
        None,
    );
    let res = app
        .handler
        .invoke(
            "CacheItem",
            json!({"req": get}),
            http_envelope_metadata(&[], &[], &[("key", "env key")]),
        )
        .await
        .unwrap();
    let b: serde_json::Value = res.json().await.unwrap();
    let inner: serde_json::Value = serde_json::from_str(b["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner, json!({"key": "env key", "value": "enveloped"}));

    let ping = http_envelope_request("GET", "http://localhost:7071/api/ping", &[], &[], &[], None);
    let res = app
        .handler
        .invoke("Ping", json!({"req": ping}), http_envelope_metadata(&[], &[], &[]))
        .await
        .unwrap();
    let b: serde_json::Value = res.json().await.unwrap();
    assert_eq!(b["Outputs"]["res"]["statusCode"], 200, "{b}");
}

/// Each invocation is one log line with function, invocation id, status and duration.
#[tokio::test]
async fn one_log_line_per_invocation() {
    let app = app().await;
    let res = app
        .handler
        .client()
        .forward_as("inv-1234-abcd", Method::GET, "/api/ping", Default::default(), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Wait for the line itself: other lines of the invocation's span (a
    // connect made by this invocation, say) carry its id too and come first.
    let waiting = std::time::Instant::now();
    let line = loop {
        let out = app.output();
        let done = out
            .lines()
            .find(|l| l.contains("inv-1234-abcd") && l.contains("invocation done"));
        if let Some(line) = done {
            break line.to_owned();
        }
        assert!(waiting.elapsed() < std::time::Duration::from_secs(5), "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        line.contains("function=\"Ping\"") || line.contains("function=Ping"),
        "{line}"
    );
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("duration_ms="), "{line}");
}

/// The access-key connection string works too, and the key never shows.
#[tokio::test]
async fn access_key_connection_string() {
    let app = spawn_app(Options {
        access_key: true,
        rust_log: "trace",
        ..Options::default()
    })
    .await;
    let (s, b) = app.call(Method::POST, "/api/quickstart", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, h) = app.get("/api/health").await;
    assert_eq!(s, 200);
    assert_eq!(h["token"], serde_json::Value::Null);
    assert_eq!(app.identity.requests(), 0, "no token with an access key");
    assert!(
        !app.output().contains(app.redis.admin().password()),
        "the access key leaked into the logs"
    );
}

/// Generated keys (any Unicode, control characters, spaces) of 1 to 1024
/// bytes are all stored and read back exactly, never refused or mangled;
/// keys over 1024 bytes, and only those, are refused with 400 and store nothing.
#[tokio::test]
async fn generated_keys_round_trip_exactly() {
    use proptest::strategy::{Strategy, ValueTree};
    let app = app().await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::string::string_regex("(.|\n|\r| ){1,40}").unwrap();
    let mut keys: Vec<String> = (0..150)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    // The limit counts bytes, not characters: multi-byte keys either side of it.
    keys.extend([
        "x".repeat(1024),
        "é".repeat(512),
        "☃".repeat(341) + "x",
        "x".repeat(1025),
        "é".repeat(512) + "x",
        "☃".repeat(342),
    ]);
    for key in keys {
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        let (s, b) = app
            .call(Method::PUT, &format!("/api/cache/{encoded}"), Some(key.as_bytes()))
            .await;
        let stored: Option<Vec<u8>> = app
            .redis
            .admin()
            .cmd(redis::cmd("GET").arg(key.as_bytes()))
            .await
            .unwrap();
        if key.len() > 1024 {
            assert_eq!(
                (s, b["code"].as_str()),
                (400, Some("bad_request")),
                "{} bytes: {b}",
                key.len()
            );
            assert_eq!(stored, None, "a refused key stores nothing");
            continue;
        }
        assert_eq!(s, 200, "a valid key of {} bytes, {key:?}: {b}", key.len());
        assert_eq!(stored.as_deref(), Some(key.as_bytes()), "stored under exactly {key:?}");
        let (s, b) = app.get(&format!("/api/cache/{encoded}")).await;
        assert_eq!(
            (s, b["key"].as_str(), b["value"].as_str()),
            (200, Some(key.as_str()), Some(key.as_str()))
        );
    }
}

/// A command that runs past its deadline (the server busy in DEBUG SLEEP)
/// is a 504 JSON answer at the deadline, not a hang; the next call succeeds.
#[tokio::test]
async fn slow_cache_is_504_at_the_deadline() {
    let app = spawn_app(Options {
        env: vec![
            ("Redis__commandTimeoutSeconds".into(), "0.5".into()),
            // A stalled server is also a silent connection, which a call
            // rides through within its window (see ride_through.rs): with
            // none, the command deadline is the answer.
            ("Redis__rideThroughSeconds".into(), "0".into()),
        ],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let pid = app.redis.pid().expect("redis-server runs");
    assert!(!redis_is_sleeping(pid), "redis-server asleep before DEBUG SLEEP");
    // redis-cli, not the admin client: that one gives up after 500 ms.
    let sleeper = tokio::process::Command::new("redis-cli")
        .args([
            "-p",
            &app.redis.plain_port().to_string(),
            "--no-auth-warning",
            "-a",
            app.redis.admin().password(),
        ])
        .args(["DEBUG", "SLEEP", "2"])
        .output();
    let sleeper = tokio::spawn(sleeper);
    let waiting = std::time::Instant::now();
    while !redis_is_sleeping(pid) {
        assert!(!sleeper.is_finished(), "DEBUG SLEEP ended before it was seen running");
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(10),
            "redis-server never went to sleep"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let start = std::time::Instant::now();
    let (s, b) = app.get("/api/cache/anything").await;
    assert_eq!((s, b["code"].as_str()), (504, Some("cache_timeout")), "{b}");
    assert!(b["error"].as_str().unwrap().contains("500ms"), "{b}");
    assert!(
        start.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let out = sleeper.await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(app.get("/api/ping").await.0, 200);
}

/// Whether redis-server `pid` is inside DEBUG SLEEP now. A sleeping server
/// answers nothing, CLIENT LIST included, so ask the kernel: its main
/// thread's wait channel, or failing that the system call it is in.
fn redis_is_sleeping(pid: u32) -> bool {
    #[cfg(target_arch = "x86_64")]
    const SLEEP_CALLS: &[&str] = &["35", "230"];
    #[cfg(target_arch = "aarch64")]
    const SLEEP_CALLS: &[&str] = &["101", "115"];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const SLEEP_CALLS: &[&str] = &[];
    let read = |what: &str| std::fs::read_to_string(format!("/proc/{pid}/{what}")).unwrap_or_default();
    read("wchan").contains("nanosleep")
        || read("syscall")
            .split_whitespace()
            .next()
            .is_some_and(|nr| SLEEP_CALLS.contains(&nr))
}
