//! The local host in proxying mode (`enableProxyingHttpRequest`): the
//! caller's request goes to the handler as the host's YARP proxy sends it
//! ([`HandlerClient::proxy`](crate::functions_host::HandlerClient::proxy)),
//! body streamed as it arrives, and the handler's answer streams back.
//!
//! Follows docs/azure.md "The Functions host and a custom handler",
//! `enableProxyingHttpRequest`: the handler's raw answer (status, headers,
//! streamed body) goes to the caller, and the invocation ends when the
//! answer does. A caller that disconnects mid-answer is not a failed
//! invocation (the host logs "The client disconnected while the function was
//! processing the request." as information): the local host stops reading
//! the handler's answer, which closes that connection to the handler, and
//! prints the invocation as [`Outcome::CallerGone`].

use super::console::Outcome;
use super::state::HostState;
use crate::functions_host::proxy::passes;
use crate::functions_host::{Origin, ProxyRequest};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures_util::Stream;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

/// Proxies one invocation of `function` and answers with the handler's
/// streamed answer; the invocation is printed when that answer ends.
pub(super) async fn proxy(
    s: &Arc<HostState>,
    function: &str,
    what: String,
    id: String,
    started: Instant,
    req: Request,
) -> Response {
    let origin = Origin {
        client_ip: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        host: req.headers().get(header::HOST).cloned(),
        proto: "http",
        path_base: String::new(),
    };
    let (parts, body) = req.into_parts();
    let request = ProxyRequest {
        invocation_id: id.clone(),
        method: parts.method.clone(),
        // The query goes as the caller wrote it, `code` and all.
        path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
        headers: parts.headers,
        body,
        origin,
    };
    let rsp = match s.handler.proxy(request).await {
        Ok(r) => r,
        Err(e) => {
            let e = anyhow::Error::new(e).context("proxying the request to the handler");
            return s.failed(function, &what, &e, started, &id);
        }
    };
    let status = rsp.status();
    let mut headers = HeaderMap::with_capacity(rsp.headers().len());
    for (k, v) in rsp.headers().iter().filter(|(k, _)| passes(k)) {
        headers.append(k, v.clone());
    }
    let no_body = parts.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let expected = match no_body {
        true => Some(0),
        false => rsp.content_length(),
    };
    let mut answer = Answer {
        inner: Box::pin(rsp.bytes_stream()),
        sent: 0,
        expected,
        end: Some(End {
            shared: s.clone(),
            function: function.to_string(),
            what,
            id,
            started,
            status: status.as_u16(),
        }),
    };
    answer.finish_if_complete();
    let mut out = Response::new(Body::from_stream(answer));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// What is printed when the answer ends.
struct End {
    shared: Arc<HostState>,
    function: String,
    what: String,
    id: String,
    started: Instant,
    status: u16,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The handler's answer on its way to the caller; prints the invocation
/// when it has all been passed on, when it breaks off, or when the caller
/// goes away first (the server then drops it unfinished).
struct Answer {
    inner: ByteStream,
    sent: u64,
    /// The answer's length, when known: the server stops polling once that
    /// much is out, so reaching it is the end.
    expected: Option<u64>,
    end: Option<End>,
}

impl Answer {
    fn finish(&mut self, outcome: impl FnOnce(u16) -> Outcome) {
        if let Some(end) = self.end.take() {
            let outcome = outcome(end.status);
            end.shared
                .record(&end.function, &end.what, outcome, end.started, &end.id);
        }
    }

    fn finish_if_complete(&mut self) {
        if self.expected.is_some_and(|n| self.sent >= n) {
            self.finish(Outcome::Status);
        }
    }
}

impl Stream for Answer {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                self.sent += chunk.len() as u64;
                self.finish_if_complete();
            }
            Some(Err(e)) => {
                let why = format!("the handler's answer broke off: {e}");
                self.finish(|_| Outcome::Failed(why));
            }
            None => self.finish(Outcome::Status),
        }
        Poll::Ready(item)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.finish(Outcome::CallerGone);
    }
}

#[cfg(test)]
mod tests {
    //! The local host's proxying in front of a fake handler that reports what
    //! reached it and when, so each test waits on the event it is about.

    use super::super::console::{Invocation, InvocationLog, Outcome};
    use super::super::http::router;
    use super::super::routes::RouteTable;
    use super::super::state::HostState;
    use crate::app_manifest::{AppManifest, Function, HostSettings};
    use crate::functions_host::HandlerClient;
    use axum::body::{Body, Bytes};
    use axum::extract::{Request, State};
    use axum::http::HeaderMap;
    use axum::routing::{any, get};
    use axum::{Json, Router};
    use futures_util::StreamExt;
    use serde_json::{json, Value};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use tokio::sync::{broadcast, mpsc, oneshot};

    /// Long enough for any event on a loaded 2-core machine; a test that waits
    /// this long has failed.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// What the fake handler saw of one request.
    #[derive(Debug)]
    struct Seen {
        uri: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    /// The fake handler's reports.
    #[derive(Clone)]
    struct Reports {
        seen: mpsc::UnboundedSender<Seen>,
        first_chunk: mpsc::UnboundedSender<()>,
        answer_dropped: mpsc::UnboundedSender<()>,
        gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    }

    /// Sends `()` when dropped: tells the test the handler's answer was let go.
    struct DropSignal(mpsc::UnboundedSender<()>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    /// `/api/echo`: reports the first body chunk as it arrives, then the whole
    /// request; answers `{"len": n}`.
    async fn echo(State(r): State<Reports>, req: Request) -> Json<Value> {
        let (parts, body) = req.into_parts();
        let mut body = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(data) = body.next().await {
            let data = data.expect("the body arrives");
            if bytes.is_empty() && !data.is_empty() {
                let _ = r.first_chunk.send(());
            }
            bytes.extend_from_slice(&data);
        }
        let len = bytes.len();
        let _ = r.seen.send(Seen {
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body: bytes,
        });
        Json(json!({ "len": len }))
    }

    /// `/api/endless`: 16 KiB chunks until the answer is dropped, which it reports.
    async fn endless(State(r): State<Reports>) -> Body {
        let guard = DropSignal(r.answer_dropped.clone());
        let chunks = futures_util::stream::unfold(guard, |g| async move {
            Some((Ok::<_, Infallible>(Bytes::from_static(&[b'x'; 16 * 1024])), g))
        });
        Body::from_stream(chunks)
    }

    /// `/api/gated`: `first,`, then, once the test opens the gate, `second`.
    async fn gated(State(r): State<Reports>) -> Body {
        enum Step {
            First(oneshot::Receiver<()>),
            Second(oneshot::Receiver<()>),
            Done,
        }
        let gate = r.gate.lock().unwrap().take().expect("one gated call per test");
        let parts = futures_util::stream::unfold(Step::First(gate), |step| async move {
            match step {
                Step::First(gate) => Some((Ok::<_, Infallible>(Bytes::from("first,")), Step::Second(gate))),
                Step::Second(gate) => {
                    let _ = gate.await;
                    Some((Ok(Bytes::from("second")), Step::Done))
                }
                Step::Done => None,
            }
        });
        Body::from_stream(parts)
    }

    /// The fake handler, its reports, and the gate of `/api/gated`.
    struct Fake {
        url: String,
        seen: mpsc::UnboundedReceiver<Seen>,
        first_chunk: mpsc::UnboundedReceiver<()>,
        answer_dropped: mpsc::UnboundedReceiver<()>,
        open_gate: Option<oneshot::Sender<()>>,
    }

    async fn fake_handler() -> Fake {
        let (seen, seen_rx) = mpsc::unbounded_channel();
        let (first_chunk, first_rx) = mpsc::unbounded_channel();
        let (answer_dropped, dropped_rx) = mpsc::unbounded_channel();
        let (open_gate, gate) = oneshot::channel();
        let reports = Reports {
            seen,
            first_chunk,
            answer_dropped,
            gate: Arc::new(Mutex::new(Some(gate))),
        };
        let app = Router::new()
            .route("/api/echo", any(echo))
            .route("/api/endless", get(endless))
            .route("/api/gated", get(gated))
            .with_state(reports);
        Fake {
            url: serve(app).await,
            seen: seen_rx,
            first_chunk: first_rx,
            answer_dropped: dropped_rx,
            open_gate: Some(open_gate),
        }
    }

    /// Serves `app` on a free loopback port, with the caller's address known.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let svc = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, svc).await });
        url
    }

    /// The local host for an app of HTTP functions `Echo`, `Endless` and
    /// `Gated`, with `customHandler` set to `flags`, in front of `handler_url`.
    async fn local_host(flags: Value, handler_url: &str) -> (String, InvocationLog) {
        let function = |name: &str| {
            let route = name.to_ascii_lowercase();
            let bindings = json!({"bindings": [
                {"type": "httpTrigger", "direction": "in", "name": "req", "route": route},
                {"type": "http", "direction": "out", "name": "res"}]});
            Function::from_json(name.into(), &bindings).unwrap()
        };
        let mut custom = json!({"description": {"defaultExecutablePath": "handler"}});
        custom
            .as_object_mut()
            .unwrap()
            .extend(flags.as_object().unwrap().clone());
        let manifest = AppManifest {
            root: PathBuf::from("."),
            functions_dir: PathBuf::from("."),
            host: HostSettings::from_json(&json!({ "customHandler": custom })).unwrap(),
            functions: vec![function("Echo"), function("Endless"), function("Gated")],
        };
        let log = InvocationLog::default();
        let shared = Arc::new(HostState {
            routes: RouteTable::new(&manifest),
            manifest,
            handler: HandlerClient::new(handler_url).unwrap(),
            timers: Vec::new(),
            log: log.clone(),
            local: None,
        });
        (serve(router(shared)).await, log)
    }

    fn proxying() -> Value {
        json!({"enableProxyingHttpRequest": true, "enableForwardingHttpRequest": true})
    }

    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
            .unwrap()
    }

    async fn next_invocation(log: &mut broadcast::Receiver<Invocation>) -> Invocation {
        tokio::time::timeout(PATIENCE, log.recv())
            .await
            .expect("an invocation is recorded")
            .unwrap()
    }

    /// A caller that gives up after [`PATIENCE`], so a broken host fails the test instead of hanging it.
    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap()
    }

    /// In proxying mode the handler gets the caller's body while the caller is
    /// still sending it, chunked (no Content-Length), with YARP's headers: ids
    /// set over the caller's, X-Forwarded-*, no Forwarded, its own address as
    /// Host, the function key and the raw query (`code`, repeated keys) kept.
    #[tokio::test]
    async fn proxying_streams_the_request_body_with_yarps_headers() {
        let mut fake = fake_handler().await;
        let (host, log) = local_host(proxying(), &fake.url).await;
        let mut invocations = log.follow();
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let sent = client()
            .put(format!("{host}/api/echo?a=1&a=2&code=abc"))
            .header("x-functions-key", "k3y")
            .header("x-ms-invocation-id", "spoofed")
            .header("x-azure-functions-invocationid", "spoofed")
            .header("forwarded", "for=10.9.9.9")
            .header("x-forwarded-for", "10.9.9.9")
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let sent = tokio::spawn(sent);
        tx.send(Bytes::from(vec![b'a'; 70_000])).unwrap();
        // The rest is sent only once the handler has the first part: a host that
        // waited for the whole body would wait for ever here.
        next(&mut fake.first_chunk, "first chunk at the handler").await;
        tx.send(Bytes::from(vec![b'b'; 30_000])).unwrap();
        drop(tx);
        let rsp = sent.await.unwrap().unwrap();
        assert_eq!(rsp.status(), 200);
        let answer: Value = rsp.json().await.unwrap();
        assert_eq!(answer["len"], 100_000);

        let seen = next(&mut fake.seen, "the request").await;
        assert_eq!(seen.body.len(), 100_000);
        assert_eq!(seen.uri, "/api/echo?a=1&a=2&code=abc");
        let h = |name: &str| seen.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("content-length"), None);
        assert_eq!(h("transfer-encoding").as_deref(), Some("chunked"));
        let id = h("x-azure-functions-invocationid").unwrap();
        assert_ne!(id, "spoofed");
        assert_eq!(h("x-ms-invocation-id"), Some(id.clone()));
        assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            h("x-forwarded-host"),
            Some(host.trim_start_matches("http://").to_string())
        );
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(h("forwarded"), None);
        assert_eq!(h("host"), Some(fake.url.trim_start_matches("http://").to_string()));
        assert_eq!(h("x-functions-key").as_deref(), Some("k3y"));

        let inv = next_invocation(&mut invocations).await;
        assert_eq!(
            (inv.function.as_str(), inv.outcome, inv.id),
            ("Echo", Outcome::Status(200), id)
        );
    }

    /// In proxying mode the handler's answer reaches the caller as it is
    /// written: the caller reads the first part while the handler still holds
    /// back the rest, and the invocation is recorded once the answer has ended.
    #[tokio::test]
    async fn proxying_streams_the_answer_back() {
        let mut fake = fake_handler().await;
        let (host, log) = local_host(proxying(), &fake.url).await;
        let mut invocations = log.follow();
        let mut rsp = client().get(format!("{host}/api/gated")).send().await.unwrap();
        assert_eq!(rsp.status(), 200);
        let first = tokio::time::timeout(PATIENCE, rsp.chunk())
            .await
            .expect("the first part arrives before the handler has finished")
            .unwrap()
            .unwrap();
        assert_eq!(first, "first,");
        assert!(invocations.try_recv().is_err(), "not done while the answer streams");
        fake.open_gate.take().unwrap().send(()).unwrap();
        let rest = rsp.bytes().await.unwrap();
        assert_eq!(rest, "second");
        let inv = next_invocation(&mut invocations).await;
        assert_eq!((inv.function.as_str(), inv.outcome), ("Gated", Outcome::Status(200)));
    }

    /// A caller that goes away mid-answer: the local host lets go of the
    /// handler's answer (closing that connection), records the invocation as
    /// the caller gone, and serves the next request.
    #[tokio::test]
    async fn a_caller_gone_mid_answer_lets_go_of_the_handlers_answer() {
        let mut fake = fake_handler().await;
        let (host, log) = local_host(proxying(), &fake.url).await;
        let mut invocations = log.follow();
        let mut rsp = client().get(format!("{host}/api/endless")).send().await.unwrap();
        assert_eq!(rsp.status(), 200);
        let first = rsp.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(rsp);
        next(&mut fake.answer_dropped, "the handler's answer let go").await;
        let inv = next_invocation(&mut invocations).await;
        assert_eq!(
            (inv.function.as_str(), inv.outcome),
            ("Endless", Outcome::CallerGone(200))
        );

        let rsp = client()
            .put(format!("{host}/api/echo"))
            .body("next")
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(next(&mut fake.seen, "the next request").await.body, b"next");
    }

    /// With nothing listening, the proxy tries 10 times, 50 to 250 ms apart
    /// (1.85 s of waits), before the invocation fails with a 500.
    #[tokio::test]
    async fn proxying_retries_a_handler_that_refuses_connections() {
        let refusing = crate::RefusingPort::new().unwrap();
        let closed = format!("http://127.0.0.1:{}", refusing.port());
        let (host, log) = local_host(proxying(), &closed).await;
        let mut invocations = log.follow();
        let start = Instant::now();
        let rsp = client().get(format!("{host}/api/gated")).send().await.unwrap();
        assert_eq!(rsp.status(), 500);
        assert!(
            start.elapsed() >= Duration::from_millis(1850),
            "gave up after {:?}",
            start.elapsed()
        );
        let inv = next_invocation(&mut invocations).await;
        assert!(matches!(inv.outcome, Outcome::Failed(_)), "{inv:?}");
    }

    /// Legacy forwarding buffers: the body is read first and sent with a
    /// Content-Length, repeated query keys are comma-joined, and there is no
    /// `x-ms-invocation-id` or X-Forwarded-* (those are the proxy's).
    #[tokio::test]
    async fn forwarding_mode_sends_the_buffered_request() {
        let mut fake = fake_handler().await;
        let (host, _log) = local_host(json!({"enableForwardingHttpRequest": true}), &fake.url).await;
        let rsp = client()
            .put(format!("{host}/api/echo?a=1&a=2"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let seen = next(&mut fake.seen, "the request").await;
        assert_eq!(seen.body, b"hello");
        assert_eq!(seen.headers["content-length"], "5");
        assert_eq!(seen.uri, "/api/echo?a=1%2C2");
        assert!(seen.headers.contains_key("x-azure-functions-invocationid"));
        for absent in ["x-ms-invocation-id", "x-forwarded-for", "x-forwarded-host"] {
            assert!(!seen.headers.contains_key(absent), "{absent}");
        }
    }
}
