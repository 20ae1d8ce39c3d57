//! The router and per-invocation logging.
//!
//! Two ways in, one set of handlers: the host passes HTTP requests at their
//! original `/api/...` paths, streamed by its proxy
//! (`enableProxyingHttpRequest`) or forwarded (`enableForwardingHttpRequest`,
//! legacy), and sends everything else as `POST /<FunctionName>` envelopes,
//! which [`crate::host::envelope`] turns back into `/api/...` requests for
//! the same router (or runs as a timer). Routes come from the function
//! registry, [`functions::FUNCTIONS`].
//!
//! Functions added with [`AppState::with_functions`] are served the same
//! way as the built-in ones.
//!
//! Whichever way, the invocation id comes in a header
//! (`X-Azure-Functions-InvocationId`, and from the proxy `x-ms-invocation-id`
//! too) and every log line of the invocation carries it: the proxy's answer
//! has no `Logs` array for the host to file under the invocation. They also
//! carry the invocation's `trace_id` and `span_id` (W3C Trace Context, see
//! `trace_context`), so log queries join with the host's request rows.

mod envelope;
mod fast;

pub(crate) use fast::Fast;

use crate::error::AppError;
use crate::functions::AppState;
use crate::functions::{self, Function, Trigger};
use crate::log_line;
use crate::otel;
use crate::trace_context::TraceContext;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

/// The `/api/...` routes alone, one per HTTP function of the state
/// (what proxying and forwarding reach, and what envelopes are turned into).
fn api_router(state: AppState) -> Router {
    let mut router = Router::new();
    for function in state.functions() {
        let (Some(path), Some(methods)) = (function.api_path(), function.method_router()) else {
            continue;
        };
        router = router.route(&path, methods.fallback(method_not_allowed));
        if let Trigger::Http { also, .. } = function.trigger {
            for (path, methods) in also {
                router = router.route(path, methods());
            }
        }
    }
    router.fallback(not_found).with_state(state)
}

/// The whole handler for `state`'s functions: readiness (`GET /`), the
/// HTTP functions at `/api/...`, the host's envelopes (`POST /<Name>`), and
/// one log line per invocation. [`crate::run`] serves it, with
/// `GET`/`PUT`/`DELETE /api/cache/{key}` matched by hand in front of it
/// (the same answers and lines, with less work per request); a program of
/// its own can serve it, or merge it into a router of its own.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use azure_redis_handler::{router, AppState, Cache, Settings};
///
/// let settings = Settings::from_env()?;
/// let state = AppState::new(Cache::from_settings(&settings)?, &settings);
/// let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.listen_port)).await?;
/// axum::serve(listener, router(state)).await?;
/// # Ok(()) }
/// ```
pub fn router(state: AppState) -> Router {
    let functions: Arc<[Function]> = state.functions().into();
    let api = api_router(state.clone());
    let envelopes = Router::new()
        .route("/{function}", post(envelope::envelope).fallback(method_not_allowed))
        // Enveloped requests reach `api` without `Invocations`, whose
        // `DefaultBodyLimit` this stands for.
        .with_state((state, api.clone().layer(DefaultBodyLimit::disable())));
    let routed = Router::new()
        .route("/", get(ready).head(ready))
        .merge(api)
        .merge(envelopes)
        .fallback(not_found);
    routed.layer(Invocations { functions })
}

/// `GET /`: the host polls this every 25 ms until it answers.
async fn ready() -> StatusCode {
    StatusCode::OK
}

async fn not_found(uri: axum::http::Uri) -> AppError {
    AppError::NotFound(format!("no function is served at {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method) -> AppError {
    AppError::MethodNotAllowed(method.to_string())
}

/// Runs each invocation in a span holding the function name, the
/// invocation id and its W3C trace context (`trace_id`, and its own
/// `span_id`: a child of the request's `traceparent`, or a new trace), so
/// that every line it logs carries them all, and logs one line when it is
/// done: function, invocation id, status, duration. The [`TraceContext`]
/// goes into the request's extensions, for a function that calls on.
///
/// A layer of its own rather than `middleware::from_fn`: everything before
/// the route runs is done in `call`, so the route's future is made there
/// and one boxed future carries the invocation (`from_fn` clones the route
/// and boxes two more futures per request). It also puts request bodies
/// out of reach of axum's default 2 MB limit for the extractors of every
/// route (each function enforces its own), which a `DefaultBodyLimit`
/// layer on the router did with a route of its own around each.
#[derive(Clone)]
struct Invocations {
    functions: Arc<[Function]>,
}

impl<S> Layer<S> for Invocations {
    type Service = InvocationService<<DefaultBodyLimit as Layer<S>>::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        InvocationService {
            inner: DefaultBodyLimit::disable().layer(inner),
            functions: self.functions.clone(),
        }
    }
}

/// [`Invocations`] around one route.
#[derive(Clone)]
struct InvocationService<S> {
    inner: S,
    functions: Arc<[Function]>,
}

impl<S> Service<Request> for InvocationService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match begin(&self.functions, &mut request) {
            None => Box::pin(self.inner.call(request)),
            Some(invocation) => {
                let route = self.inner.call(request);
                Box::pin(async move { Ok(invocation.run(route).await) })
            }
        }
    }
}

/// An invocation under way: what its log lines, its span and its metrics
/// need once the route has answered.
struct Begun {
    name: &'static str,
    trigger: &'static str,
    method: Method,
    server: otel::Span,
    span: Option<tracing::Span>,
    lines: Option<log_line::Invocation>,
    context: Option<otel::SpanContext>,
    start: Instant,
}

/// Everything before the route runs, for a request the router matched:
/// finds the function and starts the invocation ([`Begun::start`]), and
/// puts its [`TraceContext`] in the request's extensions; `None` for
/// readiness (`GET /`), which is no invocation.
fn begin(functions: &[Function], request: &mut Request) -> Option<Begun> {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str);
    if path == "/" {
        return None;
    }
    let enveloped = path == "/{function}";
    let function = match functions::by_path(functions, path) {
        Some(f) => Some(f),
        None if enveloped => functions::by_path(functions, request.uri().path()),
        None => None,
    };
    let (begun, trace) = Begun::start(function, (!enveloped).then_some(path), request);
    request.extensions_mut().insert(trace);
    Some(begun)
}

impl Begun {
    /// Starts the invocation of `function` (`None`: no function is served
    /// there), reached at `route` (`None` for an envelope): reads the
    /// invocation id and the trace context from `request`'s headers, starts
    /// the server span and sets up the fields of its log lines. Gives the
    /// invocation's trace context, for a function that calls on.
    fn start<B>(
        function: Option<&Function>,
        route: Option<&str>,
        request: &axum::http::Request<B>,
    ) -> (Begun, TraceContext) {
        let name = function.map_or("unknown", |f| f.name);
        let headers = crate::host::InvocationHeaders::of(request.headers());
        let invocation_id = headers.id;
        let method = request.method().clone();
        let mut trace = TraceContext::from_traceparent(headers.traceparent, request.headers());
        let trigger = match function.map(|f| &f.trigger) {
            Some(Trigger::Timer { .. }) => "timer",
            _ => "http",
        };
        let mut server = invocation_span(&mut trace, name, trigger, route.map(|route| (&method, route)));
        if !invocation_id.is_empty() {
            server.set("faas.invocation_id", otel::Value::text(invocation_id));
        }
        // The fields every line of the invocation carries: in a task-local
        // when the handler's own formatter writes the lines, else (a program
        // serving this router under a subscriber of its own) in a span.
        let (span, lines) = if cfg!(feature = "experiment-no-log") {
            (None, None)
        } else if log_line::fast() {
            let lines = log_line::Invocation {
                function: name,
                invocation_id: invocation_id.to_owned(),
                trace_id: trace.trace_id,
                span_id: trace.span_id,
            };
            (None, Some(lines))
        } else {
            let span = tracing::info_span!(
                "invocation",
                function = name,
                invocation_id = %invocation_id,
                trace_id = %trace.trace_id_hex(),
                span_id = %trace.span_id_hex(),
            );
            (Some(span), None)
        };
        let begun = Begun {
            name,
            trigger,
            method,
            server,
            span,
            lines,
            context: otel::invocation_context(&trace),
            start: Instant::now(),
        };
        (begun, trace)
    }

    /// Runs the route in the invocation's scope, then logs its line,
    /// records its metrics and ends its span.
    ///
    /// The fields are read where they are, not moved out first: the
    /// future holds `self` once (moved-out fields would be held twice).
    async fn run<F, B>(mut self, route: F) -> axum::http::Response<B>
    where
        F: Future<Output = Result<axum::http::Response<B>, Infallible>>,
    {
        let route = async move { route.await.unwrap_or_else(|never| match never {}) };
        let context = self.context.take();
        let (response, lines) = match (&self.span, self.lines.take()) {
            (_, Some(lines)) => {
                // The fields go into the scope and come back out of it for
                // the closing line: no `Arc` to allocate for them.
                let mut scoped = std::pin::pin!(log_line::scope(lines, route));
                let response = otel::within(context, scoped.as_mut()).await;
                (response, scoped.take_value())
            }
            (Some(span), None) => (otel::within(context, route.instrument(span.clone())).await, None),
            (None, None) => (otel::within(context, route).await, None),
        };
        let status = response.status().as_u16();
        let (method, start) = (&self.method, self.start);
        let done = || {
            #[cfg(not(feature = "experiment-no-log"))]
            log_line::invocation_done(method, status, crate::functions::elapsed_ms(start));
            #[cfg(feature = "experiment-no-log")]
            let _ = method;
        };
        match (self.span.take(), lines) {
            (_, Some(lines)) => log_line::sync_scope(lines, done),
            (Some(span), None) => span.in_scope(done),
            (None, None) => done(),
        }
        if let Some(metrics) = otel::recorder() {
            metrics.invocation(self.name, self.trigger, status, start.elapsed().as_secs_f64());
        }
        self.server.set("http.response.status_code", i64::from(status));
        if status >= 500 {
            self.server
                .fail("http_error", &format!("the invocation answered {status}"));
        }
        response
    }
}

/// The invocation's server span (OpenTelemetry's conventions): named
/// `{method} {route}` for an HTTP request the host passed on as it came,
/// else after the function (an envelope, a timer). Its name and the
/// attributes every invocation of the function shares are found ready,
/// encoded once for the process (`otel::fixed`): no allocation, no encoding.
fn invocation_span(
    trace: &mut TraceContext,
    function: &'static str,
    trigger: &'static str,
    http: Option<(&Method, &str)>,
) -> otel::Span {
    if !otel::is_on() {
        return otel::Span::none();
    }
    let http = http.map(|(method, route)| (otel::intern::method(method), route));
    let fixed = otel::fixed::invocation(otel::app_name(), function, trigger, http);
    let name = match (fixed, http) {
        (Some(fixed), _) => fixed.name,
        (None, Some((method, route))) => otel::intern::joined(method, " ", route),
        (None, None) => function,
    };
    let mut span = otel::server_span(trace, name);
    if span.is_recording() && !span.set_fixed(fixed) {
        // As the conventions name an Azure function: `<app>/<function>`.
        span.set("faas.name", otel::intern::joined(otel::app_name(), "/", function));
        span.set("faas.trigger", trigger);
        if let Some((method, route)) = http {
            span.set("http.request.method", method);
            span.set("http.route", otel::intern::joined(route, "", ""));
        }
    }
    span
}

#[cfg(test)]
mod tests {
    //! Router tests without a socket or a cache: everything here is refused or
    //! answered before Redis is touched, or meets a cache that is not there.

    use super::*;
    use crate::cache::Cache;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    /// A handler whose cache is a closed port: every Redis call fails fast.
    fn test_app(max_value_bytes: usize) -> Router {
        router(test_state(max_value_bytes))
    }

    /// The state of [`test_app`], values up to `max_value_bytes`.
    pub(super) fn test_state(max_value_bytes: usize) -> AppState {
        let settings = crate::settings::Settings::from_lookup(|k| match k {
            "Redis" => Some("127.0.0.1:1,password=k,ssl=False".into()),
            "Redis__connectTimeoutSeconds" | "Redis__commandTimeoutSeconds" => Some("0.3".into()),
            "Redis__rideThroughSeconds" => Some("0".into()),
            "Redis__clusterMode" => Some("standalone".into()),
            "Redis__maintenanceNotifications" => Some("off".into()),
            "CACHE_MAX_VALUE_BYTES" => Some(max_value_bytes.to_string()),
            "FUNCTIONS_CUSTOMHANDLER_WORKER_ID" => Some("test".into()),
            _ => None,
        })
        .expect("settings for a router without a cache");
        let cache = Cache::from_settings(&settings).expect("a cache handle");
        AppState::new(cache, &settings)
    }

    async fn call(app: &Router, method: &str, uri: &str, body: impl Into<Body>) -> (u16, serde_json::Value) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body.into())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
        };
        (status, json)
    }

    /// `GET /` answers at once, with no cache at all.
    #[tokio::test]
    async fn readiness_needs_no_cache() {
        let (status, _) = call(&test_app(10), "GET", "/", Body::empty()).await;
        assert_eq!(status, 200);
    }

    /// Bad input is a 4xx JSON error with the contract's code.
    #[tokio::test]
    async fn bad_input_is_4xx_json() {
        let app = test_app(10);
        let long_key = "k".repeat(1025);
        let cases: Vec<(&str, String, Body, u16, &str)> = vec![
            ("GET", "/api/cache/".into(), Body::empty(), 400, "bad_request"),
            ("PUT", "/api/cache".into(), Body::empty(), 400, "bad_request"),
            (
                "GET",
                format!("/api/cache/{long_key}"),
                Body::empty(),
                400,
                "bad_request",
            ),
            ("PUT", "/api/cache/k?ttl=0".into(), Body::from("v"), 400, "bad_request"),
            (
                "PUT",
                "/api/cache/k?ttl=abc".into(),
                Body::from("v"),
                400,
                "bad_request",
            ),
            (
                "PUT",
                "/api/cache/k".into(),
                Body::from(vec![0xff, 0xfe]),
                400,
                "bad_request",
            ),
            ("GET", "/api/cache/%FF".into(), Body::empty(), 400, "bad_request"),
            (
                "PUT",
                "/api/cache/k".into(),
                Body::from("x".repeat(11)),
                413,
                "payload_too_large",
            ),
            ("GET", "/api/nothing".into(), Body::empty(), 404, "not_found"),
            ("POST", "/api/ping".into(), Body::empty(), 405, "method_not_allowed"),
            (
                "GET",
                "/api/quickstart".into(),
                Body::empty(),
                405,
                "method_not_allowed",
            ),
            ("PATCH", "/api/cache/k".into(), Body::empty(), 405, "method_not_allowed"),
            ("POST", "/NoSuchFunction".into(), Body::from("{}"), 404, "not_found"),
            (
                "POST",
                "/CacheHealthCheck".into(),
                Body::from("not json"),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/CacheHealthCheck".into(),
                Body::from(r#"{"Data": {}}"#),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/CacheHealthCheck".into(),
                Body::from("[1,2,3]"),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/Ping".into(),
                Body::from(r#"{"Data": {"req": 5}}"#),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/Ping".into(),
                Body::from(r#"{"Data": {"req": {"Url": "/api/ping", "Method": "GE T"}}}"#),
                400,
                "bad_request",
            ),
        ];
        for (method, uri, body, status, code) in cases {
            let (s, json) = call(&app, method, &uri, body).await;
            assert_eq!(s, status, "{method} {uri}: {json}");
            assert_eq!(json["code"], code, "{method} {uri}: {json}");
            assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{json}");
        }
    }

    /// A cache that cannot be reached is a fast 503 JSON naming the cache.
    #[tokio::test]
    async fn unreachable_cache_is_503() {
        let app = test_app(10);
        let started = std::time::Instant::now();
        let (status, json) = call(&app, "GET", "/api/ping", Body::empty()).await;
        assert_eq!(status, 503, "{json}");
        assert_eq!(json["code"], "cache_unavailable");
        assert!(json["error"].as_str().unwrap().contains("cache"));
        assert!(started.elapsed() < Duration::from_secs(2));
        let (status, json) = call(&app, "GET", "/api/health", Body::empty()).await;
        assert_eq!(status, 503);
        assert_eq!(json["status"], "unavailable");
        assert_eq!(json["connection"]["connected"], false);
    }

    /// An enveloped HTTP request answers in Outputs.res with the inner status.
    #[tokio::test]
    async fn http_envelope_wraps_the_answer() {
        let app = test_app(10);
        let envelope = include_str!("../../tests/data/http_put_envelope.json");
        let (status, json) = call(&app, "POST", "/CacheItem", Body::from(envelope)).await;
        assert_eq!(status, 200, "{json}");
        // The value is 13 bytes, over this app's 10-byte limit.
        assert_eq!(json["Outputs"]["res"]["statusCode"], 413);
        let inner: serde_json::Value = serde_json::from_str(json["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(inner["code"], "payload_too_large");
    }

    /// An added function whose handler reads its body with one of axum's
    /// extractors is not held to axum's default 2 MB body limit, proxied or
    /// enveloped: every function enforces a limit of its own.
    #[tokio::test]
    async fn added_functions_are_not_held_to_axums_body_limit() {
        async fn length(body: axum::body::Bytes) -> axum::Json<serde_json::Value> {
            axum::Json(serde_json::json!({ "length": body.len() }))
        }
        const LENGTH: Function = Function {
            name: "Length",
            trigger: Trigger::Http {
                route: "length",
                endpoints: &[functions::Endpoint {
                    method: functions::HttpMethod::Post,
                    handler: |on| axum::routing::on(on, length),
                }],
                also: &[],
            },
        };
        // The default value limit, whose envelopes may be over 2 MiB.
        let app = router(test_state(1 << 20).with_functions(&[LENGTH]));
        let big = "x".repeat(3 << 20);
        let (status, json) = call(&app, "POST", "/api/length", big).await;
        assert_eq!((status, &json["length"]), (200, &serde_json::json!(3 << 20)), "{json}");
        // Over axum's 2 MiB, under the limit of the envelope itself.
        let body = "x".repeat((2 << 20) + 1000);
        let envelope = serde_json::json!({
            "Data": { "req": { "Url": "http://localhost/api/length", "Method": "POST", "Body": body } },
            "Metadata": {}
        });
        let (status, json) = call(&app, "POST", "/Length", envelope.to_string()).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["Outputs"]["res"]["statusCode"], 200, "{json}");
        let inner: serde_json::Value = serde_json::from_str(json["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(inner["length"], (2 << 20) + 1000);
    }

    /// A failed timer check answers 500 with the host's shape and the reasons.
    #[tokio::test]
    async fn failed_timer_check_is_500_with_reasons() {
        let app = test_app(10);
        let envelope = include_str!("../../tests/data/timer_null_status.json");
        let (status, json) = call(&app, "POST", "/CacheHealthCheck", Body::from(envelope)).await;
        assert_eq!(status, 500, "{json}");
        assert_eq!(json["ReturnValue"]["ok"], false);
        assert_eq!(json["ReturnValue"]["is_past_due"], true);
        assert!(json["Outputs"].is_object());
        assert!(json["ReturnValue"]["failures"][0]
            .as_str()
            .unwrap()
            .contains("PING failed"));
    }
}
