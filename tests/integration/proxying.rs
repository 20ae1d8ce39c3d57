//! The built handler behind devhost's local Functions host, in each HTTP
//! mode host.json can pick: proxying (`enableProxyingHttpRequest`, this
//! app's), legacy forwarding and the envelope; against a real TLS
//! redis-server through an Entra ID token. The local host's own behaviour
//! (streaming, YARP's headers, retries) is tested in
//! `devhost/src/local/proxy_tests.rs` against a fake handler.

use crate::support;

use crate::support::{spawn_app, Options, TestApp};
use devhost::app_manifest::{AppManifest, HttpMode};
use devhost::local::console::{Invocation, Outcome};
use devhost::local::http::router;
use devhost::local::routes::RouteTable;
use devhost::local::state::HostState;
use devhost::local::{console::InvocationLog, timer};
use reqwest::Method;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// Long enough for any event on a loaded 2-core machine; a test that waits
/// this long has failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// The local host (`devhost start`'s front) in front of `app`'s handler.
struct LocalHost {
    url: String,
    log: InvocationLog,
}

/// Serves this repository's function app in `mode` in front of `app`'s
/// handler, on a free port.
async fn local_host(app: &TestApp, mode: HttpMode) -> LocalHost {
    let mut manifest = AppManifest::load(support::app_root()).expect("the function app");
    manifest.host.http_mode = mode;
    manifest.host.forwarding = mode != HttpMode::Envelope;
    let timers = timer::plan(&manifest, &[], |_| None).expect("timer schedules");
    let log = InvocationLog::default();
    let shared = Arc::new(HostState {
        routes: RouteTable::new(&manifest),
        manifest,
        handler: app.handler.client(),
        timers: timers.into_iter().map(Arc::new).collect(),
        log: log.clone(),
        local: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, svc).await });
    LocalHost { url, log }
}

/// A caller that gives up after [`PATIENCE`], so a broken host fails the
/// test instead of hanging it.
fn client() -> reqwest::Client {
    support::install_crypto_provider();
    reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let rsp = req.send().await.expect("the local host answers");
    let status = rsp.status().as_u16();
    let bytes = rsp.bytes().await.expect("the whole answer");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

/// The next invocation the local host records for `function`.
async fn recorded(log: &mut broadcast::Receiver<Invocation>, function: &str) -> Invocation {
    let wait = async {
        loop {
            let inv = log.recv().await.expect("the invocation log");
            if inv.function == function {
                return inv;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no {function} invocation recorded within {PATIENCE:?}"))
}

/// A body sent chunked (no Content-Length), 64 KiB at a time.
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, Infallible>> = bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// In each mode, every method reaches the handler with its path, query
/// (`code` and `ttl`) and invocation id, each answer comes back as the
/// handler gave it, and the timer still arrives as an envelope.
#[tokio::test]
async fn every_mode_serves_the_functions_and_the_timer() {
    let app = spawn_app(Options::default()).await;
    for mode in [HttpMode::Proxying, HttpMode::Forwarding, HttpMode::Envelope] {
        let host = local_host(&app, mode).await;
        let mut log = host.log.follow();
        let http = client();
        let key = format!("item-{mode:?}");
        let url = format!("{}/api/cache/{key}", host.url);

        let put = http
            .put(format!("{url}?ttl=60&code=functionkey"))
            .header("x-functions-key", "functionkey")
            .body("hello");
        let (s, b) = send(put).await;
        assert_eq!((s, &b), (200, &json!({"key": key, "stored": true})), "{mode:?}");
        let ttl: i64 = app.redis.admin().cmd(redis::cmd("TTL").arg(&key)).await.unwrap();
        assert!((1..=60).contains(&ttl), "{mode:?}: ttl {ttl}");
        let put = recorded(&mut log, "CacheItem").await;
        assert_eq!(put.outcome, Outcome::Status(200), "{mode:?}");
        let line = wait_for_line(&app, &put.id, "invocation done").await;
        assert!(line.contains("function=\"CacheItem\""), "{mode:?}: {line}");
        // An envelope is the host's `POST /CacheItem`.
        let method = if matches!(mode, HttpMode::Envelope) {
            "POST"
        } else {
            "PUT"
        };
        assert!(
            line.contains(&format!("method={method} status=200")),
            "{mode:?}: {line}"
        );

        let (s, b) = send(http.get(&url)).await;
        assert_eq!((s, &b), (200, &json!({"key": key, "value": "hello"})), "{mode:?}");
        let (s, b) = send(http.put(format!("{url}?ttl=0")).body("x")).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")), "{mode:?}");
        let (s, b) = send(http.delete(&url)).await;
        assert_eq!((s, &b), (200, &json!({"key": key, "deleted": true})), "{mode:?}");
        let (s, b) = send(http.get(&url)).await;
        assert_eq!((s, b["code"].as_str()), (404, Some("not_found")), "{mode:?}");
        let (s, b) = send(http.post(format!("{}/api/quickstart", host.url))).await;
        assert_eq!((s, &b["ping"]["result"]), (200, &json!(true)), "{mode:?}");

        let admin = http
            .post(format!("{}/admin/functions/CacheHealthCheck", host.url))
            .body(r#"{"input": ""}"#);
        assert_eq!(admin.send().await.unwrap().status(), 202, "{mode:?}");
        let timer = recorded(&mut log, "CacheHealthCheck").await;
        assert_eq!(timer.outcome, Outcome::Status(200), "{mode:?}");
        let line = wait_for_line(&app, &timer.id, "invocation done").await;
        assert!(line.contains("function=\"CacheHealthCheck\""), "{line}");
    }
}

/// Proxying streams a chunked PUT (no Content-Length) of exactly the value
/// limit into the cache and refuses one byte more with 413; legacy
/// forwarding, which passes a body only with a Content-Length > 0, stores
/// the same chunked PUT empty and needs the length to store it whole.
#[tokio::test]
async fn a_chunked_put_at_the_value_limit_streams_through_the_proxy() {
    let limit = 1024 * 1024;
    let app = spawn_app(Options::default()).await;
    let value: Vec<u8> = (0..limit).map(|i| b'a' + (i % 26) as u8).collect();
    let text = String::from_utf8(value.clone()).unwrap();
    let http = client();

    let host = local_host(&app, HttpMode::Proxying).await;
    let url = format!("{}/api/cache/big", host.url);
    let (s, b) = send(http.put(&url).body(chunked(value.clone()))).await;
    assert_eq!((s, &b["stored"]), (200, &json!(true)), "{b}");
    let (s, b) = send(http.get(&url)).await;
    assert_eq!(s, 200);
    assert!(b["value"] == text.as_str(), "the value came back changed");
    let mut over = value.clone();
    over.push(b'!');
    let (s, b) = send(http.put(&url).body(chunked(over))).await;
    assert_eq!((s, b["code"].as_str()), (413, Some("payload_too_large")), "{b}");
    let (s, b) = send(http.get(format!("{}/api/ping", host.url))).await;
    assert_eq!((s, &b["pong"]), (200, &json!(true)), "serving after the 413");

    let legacy = local_host(&app, HttpMode::Forwarding).await;
    let url = format!("{}/api/cache/big-legacy", legacy.url);
    let (s, _) = send(http.put(&url).body(chunked(value.clone()))).await;
    assert_eq!(s, 200);
    let (_, b) = send(http.get(&url)).await;
    assert_eq!(b["value"], "", "forwarding drops a body sent without a length");
    let (s, _) = send(http.put(&url).body(value)).await;
    assert_eq!(s, 200);
    let (_, b) = send(http.get(&url)).await;
    assert!(b["value"] == text.as_str(), "stored whole with a Content-Length");
}

/// The lines the handler wrote with `id` as their invocation id.
fn lines_of(app: &TestApp, id: &str) -> Vec<String> {
    let tag = format!("invocation_id={id} ");
    app.output()
        .lines()
        .filter(|l| l.contains(&tag))
        .map(String::from)
        .collect()
}

/// Waits for the handler's line with `id` as its invocation id that contains `needle`.
async fn wait_for_line(app: &TestApp, id: &str, needle: &str) -> String {
    let found = || lines_of(app, id).into_iter().find(|l| l.contains(needle));
    support::wait_until(&format!("{needle:?} logged for {id}"), PATIENCE, || found().is_some()).await;
    found().unwrap_or_default()
}

/// Every line the handler logs while it serves an invocation carries the
/// invocation id, whichever of the two headers brings it: the proxy's
/// (both headers), `x-ms-invocation-id` alone, `x-ms-invocation-id` after
/// an empty `X-Azure-Functions-InvocationId`, and the host's header alone.
#[tokio::test]
async fn every_log_line_of_an_invocation_carries_its_id() {
    let refusing = devhost::RefusingPort::new().unwrap();
    let closed = refusing.port();
    // A cache that refuses connections: each invocation logs its failure
    // before the line that ends it.
    let app = spawn_app(Options {
        env: vec![("Redis__port".into(), closed.to_string())],
        ..Options::default()
    })
    .await;
    let host = local_host(&app, HttpMode::Proxying).await;
    let mut log = host.log.follow();
    let http = client();

    let (s, _) = send(http.get(format!("{}/api/cache/k", host.url))).await;
    assert_eq!(s, 503);
    let proxied = recorded(&mut log, "CacheItem").await.id;
    let direct: [(&str, &[(&str, &str)]); 3] = [
        ("ms-only-7d1f", &[("x-ms-invocation-id", "ms-only-7d1f")]),
        (
            "after-empty-52c0",
            &[
                ("x-azure-functions-invocationid", ""),
                ("x-ms-invocation-id", "after-empty-52c0"),
            ],
        ),
        (
            "host-only-c4a9",
            &[("x-azure-functions-invocationid", "host-only-c4a9")],
        ),
    ];
    for (_, headers) in &direct {
        let mut req = http.request(Method::GET, format!("{}/api/cache/k", app.handler.base_url()));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let (s, _) = send(req).await;
        assert_eq!(s, 503);
    }

    for id in std::iter::once(proxied.as_str()).chain(direct.iter().map(|(id, _)| *id)) {
        wait_for_line(&app, id, "invocation done").await;
        let lines = lines_of(&app, id);
        assert!(
            lines.iter().any(|l| l.contains("invocation failed"))
                && lines.iter().any(|l| l.contains("invocation done")),
            "{id}: {lines:#?}\nall output:\n{}",
            app.output()
        );
    }
    let unlabelled: Vec<String> = app
        .output()
        .lines()
        .filter(|l| l.contains("invocation failed") || l.contains("invocation done"))
        .filter(|l| !l.contains("invocation{") || l.contains("invocation_id= "))
        .map(String::from)
        .collect();
    assert!(unlabelled.is_empty(), "lines without an invocation id: {unlabelled:#?}");
}

/// A `traceparent` (W3C) sent with a request parents the invocation: every
/// line the handler logs for it carries the caller's trace id and a span
/// id of the invocation's own (not the caller's), in the text form and as
/// JSON fields, through the local host's proxy and sent straight as the
/// host's client sends it. A malformed one starts a new trace and is never
/// logged. (Checked broken: with the span's `trace_id` taken from a new
/// trace every time, the first assertion on the caller's trace id fails.)
#[tokio::test]
async fn traceparent_parents_the_invocation_in_every_log_line() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    const MALFORMED: &str = "00-NOT-A-TRACE\"injected\"=1-01";
    let refusing = devhost::RefusingPort::new().unwrap();
    let closed = refusing.port();
    for format in ["text", "json"] {
        let app = spawn_app(Options {
            env: vec![
                ("Redis__port".into(), closed.to_string()),
                ("LOG_FORMAT".into(), format.into()),
            ],
            ..Options::default()
        })
        .await;
        let host = local_host(&app, HttpMode::Proxying).await;
        let mut log = host.log.follow();
        let http = client();
        let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
        let req = http
            .get(format!("{}/api/cache/k", host.url))
            .header("traceparent", &traceparent);
        assert_eq!(send(req).await.0, 503);
        let proxied = recorded(&mut log, "CacheItem").await.id;
        let direct = format!("direct-{format}");
        let req = http
            .get(format!("{}/api/cache/k", app.handler.base_url()))
            .header("x-azure-functions-invocationid", &direct)
            .header("traceparent", &traceparent)
            .header("tracestate", "congo=t61rcWkgMzE");
        assert_eq!(send(req).await.0, 503);
        let malformed = format!("malformed-{format}");
        let req = http
            .get(format!("{}/api/cache/k", app.handler.base_url()))
            .header("x-azure-functions-invocationid", &malformed)
            .header("traceparent", MALFORMED);
        assert_eq!(send(req).await.0, 503);

        // (invocation id, the trace id its lines must carry: None for a new one)
        let cases = [
            (proxied.as_str(), Some(TRACE)),
            (direct.as_str(), Some(TRACE)),
            (malformed.as_str(), None),
        ];
        for (id, trace) in cases {
            let done = |app: &TestApp| {
                app.output()
                    .lines()
                    .any(|l| l.contains(id) && l.contains("invocation done"))
            };
            support::wait_until(&format!("{id} done"), PATIENCE, || done(&app)).await;
            let output = app.output();
            let mine: Vec<&str> = output.lines().filter(|l| l.contains(id)).collect();
            assert!(mine.len() >= 2, "{id}: the failure and the end: {mine:#?}");
            let mut span_ids = std::collections::BTreeSet::new();
            for line in &mine {
                let (trace_id, span_id) = match format {
                    "json" => {
                        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                        let field = |k: &str| {
                            v["span"][k]
                                .as_str()
                                .unwrap_or_else(|| panic!("no span.{k}: {line}"))
                                .to_owned()
                        };
                        (field("trace_id"), field("span_id"))
                    }
                    _ => {
                        let field = |k: &str| {
                            let at = line.find(&format!(" {k}=")).unwrap_or_else(|| panic!("no {k}: {line}"));
                            line[at + k.len() + 2..]
                                .chars()
                                .take_while(|c| c.is_ascii_hexdigit())
                                .collect::<String>()
                        };
                        (field("trace_id"), field("span_id"))
                    }
                };
                assert_eq!(trace_id.len(), 32, "{line}");
                assert_eq!(span_id.len(), 16, "{line}");
                match trace {
                    Some(t) => assert_eq!(trace_id, t, "{format} {id}: {line}"),
                    None => assert_ne!(trace_id, TRACE, "{line}"),
                }
                assert_ne!(span_id, CALLER_SPAN, "the invocation's own span: {line}");
                span_ids.insert(span_id);
            }
            assert_eq!(span_ids.len(), 1, "{id}: one span for the invocation: {mine:#?}");
        }
        assert!(
            !app.output().contains("NOT-A-TRACE"),
            "the malformed header is never logged"
        );
    }
}

/// A caller that closes its connection after the first 64 KiB of a 24 MiB
/// answer: the local host records it as the caller gone, the handler has
/// logged the invocation as done, and both serve the next requests.
#[tokio::test]
async fn a_caller_gone_mid_answer_leaves_the_host_and_the_handler_serving() {
    let value_bytes = 4 * 1024 * 1024;
    let mut app = spawn_app(Options {
        env: vec![("CACHE_MAX_VALUE_BYTES".into(), value_bytes.to_string())],
        ..Options::default()
    })
    .await;
    let host = local_host(&app, HttpMode::Proxying).await;
    let mut log = host.log.follow();
    let http = client();
    // Each U+0001 is one byte stored and six (`\u0001`) in the JSON answer.
    let value = "\u{1}".repeat(value_bytes);
    let (s, _) = send(http.put(format!("{}/api/cache/huge", host.url)).body(value)).await;
    assert_eq!(s, 200);
    recorded(&mut log, "CacheItem").await;

    let mut caller = tokio::net::TcpStream::connect(host.url.trim_start_matches("http://"))
        .await
        .unwrap();
    caller
        .write_all(b"GET /api/cache/huge HTTP/1.1\r\nHost: example\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0; 64 * 1024];
    tokio::time::timeout(PATIENCE, caller.read_exact(&mut got))
        .await
        .expect("the answer starts")
        .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got[..64])
    );
    // Closed with the answer still arriving: the kernel resets the connection.
    drop(caller);

    let gone = recorded(&mut log, "CacheItem").await;
    assert_eq!(gone.outcome, Outcome::CallerGone(200));
    let done = wait_for_line(&app, &gone.id, "invocation done").await;
    assert!(done.contains("status=200"), "{done}");

    let (s, b) = send(http.get(format!("{}/api/ping", host.url))).await;
    assert_eq!((s, &b["pong"]), (200, &json!(true)));
    let (s, _) = send(http.put(format!("{}/api/cache/after", host.url)).body("still here")).await;
    assert_eq!(s, 200);
    let (s, b) = send(http.get(format!("{}/api/cache/after", host.url))).await;
    assert_eq!((s, &b["value"]), (200, &json!("still here")));
    assert!(app.handler.try_wait().is_none(), "the handler is still running");
}
