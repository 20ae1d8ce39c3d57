//! The host's YARP proxy towards the handler, as `enableProxyingHttpRequest`
//! turns it on.
//!
//! Follows docs/azure.md "The Functions host and a custom handler",
//! `enableProxyingHttpRequest`: no envelope; the original method, `/api/...`
//! path and query (`code` included) go to `http://127.0.0.1:{port}` with the
//! body streamed (chunked, unless the caller gave a Content-Length, which
//! YARP keeps); `X-Azure-Functions-InvocationId`,
//! `X-Azure-Functions-HostVersion` and `x-ms-invocation-id` are set,
//! overwriting the caller's; `X-Forwarded-For/-Host/-Proto/-Prefix` are set
//! with YARP's `Set` action, which drops the caller's values first (so
//! `X-Forwarded-Prefix`, the request's path base, is absent when there is
//! none, as when the host passes the whole `/api/...` path); `Forwarded` and
//! the original `Host` are dropped (the handler sees its own address as
//! Host); `x-functions-key` passes. A connection failure is retried: 10
//! tries in all, 50 ms doubling to 250 ms apart (the host's
//! `RetryProxyHandler`). The answer (status, headers, streamed body) goes
//! back as is; a stream silent for 240 s is cut.

use super::client::{HandlerClient, HOST_VERSION_HEADER, INVOCATION_ID};
use super::HOST_VERSION;
use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use reqwest::Method;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Tries in all before a connection failure fails the invocation
/// (`RetryProxyHandler.MaxRetries`).
pub const MAX_TRIES: u32 = 10;

/// The wait after the first failed try; it doubles up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(50);

/// The longest wait between two tries.
pub const MAX_DELAY: Duration = Duration::from_millis(250);

pub use super::ACTIVITY_TIMEOUT;

/// The invocation id header YARP adds next to the host's own.
pub const MS_INVOCATION_ID: &str = "x-ms-invocation-id";

/// Headers that describe one connection, not the message: never passed on,
/// either way (YARP's exclusion list, the ones an HTTP/1.1 caller can send).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
    "upgrade-insecure-requests",
];

/// Whether the proxy passes a header of this name on, in a request or an answer.
pub fn passes(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

/// Where a proxied request came from: what the `X-Forwarded-*` headers say.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The caller's address (`X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// The `Host` the caller sent (`X-Forwarded-Host`).
    pub host: Option<HeaderValue>,
    /// The caller's scheme (`X-Forwarded-Proto`); `http` when empty.
    pub proto: &'static str,
    /// The request's path base (`X-Forwarded-Prefix`); empty when the whole
    /// path is passed on, as the host passes `/api/...`.
    pub path_base: String,
}

/// One request for [`HandlerClient::proxy`].
#[derive(Debug)]
pub struct ProxyRequest {
    /// The invocation id the host made for it.
    pub invocation_id: String,
    /// The caller's method.
    pub method: Method,
    /// The caller's path and query, route prefix included.
    pub path_and_query: String,
    /// The caller's headers, as sent.
    pub headers: HeaderMap,
    /// The caller's body, read only as the handler takes it.
    pub body: Body,
    /// Where the request came from.
    pub origin: Origin,
}

/// The headers the proxy sends the handler for a caller's `headers`: all but
/// the hop-by-hop ones, `Host` and `Forwarded`, with the invocation id, the
/// host version and `X-Forwarded-*` set (any the caller sent are replaced),
/// and the caller's `traceparent` or, when it sent none, the host's own.
pub fn proxy_headers(headers: &HeaderMap, invocation_id: &str, origin: &Origin) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 8);
    for (name, value) in headers.iter().filter(|(n, _)| passes(n) && *n != HOST) {
        out.append(name, value.clone());
    }
    out.remove("forwarded");
    let mut set = |name: &'static str, value: Option<HeaderValue>| match value {
        Some(v) => {
            out.insert(name, v);
        }
        None => {
            out.remove(name);
        }
    };
    let id = HeaderValue::from_str(invocation_id).ok();
    set(INVOCATION_ID, id.clone());
    set(MS_INVOCATION_ID, id);
    set(HOST_VERSION_HEADER, Some(HeaderValue::from_static(HOST_VERSION)));
    let ip = origin
        .client_ip
        .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok());
    set("x-forwarded-for", ip);
    set("x-forwarded-host", origin.host.clone());
    let proto = if origin.proto.is_empty() { "http" } else { origin.proto };
    set("x-forwarded-proto", Some(HeaderValue::from_static(proto)));
    let prefix = Some(&origin.path_base)
        .filter(|p| !p.is_empty())
        .and_then(|p| HeaderValue::from_str(p).ok());
    set("x-forwarded-prefix", prefix);
    super::client::add_traceparent(&mut out);
    out
}

/// The waits between tries: [`FIRST_DELAY`] doubling to [`MAX_DELAY`], one
/// fewer than [`MAX_TRIES`].
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_DELAY), |d| Some((*d * 2).min(MAX_DELAY))).take(MAX_TRIES as usize - 1)
}

/// Runs `attempt` until it succeeds, fails with an error `retry` refuses, or
/// has run [`MAX_TRIES`] times, waiting the [`retry_delays`] between tries.
pub async fn with_retries<T, E, F, Fut>(mut attempt: F, retry: impl Fn(&E) -> bool) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = retry_delays();
    loop {
        match attempt().await {
            Err(e) if retry(&e) => match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(e),
            },
            done => return done,
        }
    }
}

impl HandlerClient {
    /// Sends `req` to the handler as the host's proxy does (see the module
    /// docs), retrying connection failures; the answer's body is not read.
    pub async fn proxy(&self, req: ProxyRequest) -> reqwest::Result<reqwest::Response> {
        let headers = proxy_headers(&req.headers, &req.invocation_id, &req.origin);
        let url = format!("{}{}", self.base_url(), req.path_and_query);
        let body = (!req.body.is_end_stream()).then(|| Deferred(Arc::new(Mutex::new(Some(req.body)))));
        let attempt = || {
            let mut r = self.proxy.request(req.method.clone(), &url).headers(headers.clone());
            if let Some(b) = &body {
                r = r.body(reqwest::Body::wrap_stream(b.stream()));
            }
            r.send()
        };
        // A try that could not connect never read the body, so the next one
        // can still send all of it; once read, it cannot be sent again.
        let retry = |e: &reqwest::Error| e.is_connect() && body.as_ref().is_none_or(Deferred::unread);
        with_retries(attempt, retry).await
    }
}

/// The caller's body, taken by whichever try reads it first.
struct Deferred(Arc<Mutex<Option<Body>>>);

impl Deferred {
    fn unread(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn stream(&self) -> DeferredStream {
        DeferredStream {
            slot: self.0.clone(),
            body: None,
        }
    }
}

/// One try's view of a [`Deferred`] body: takes it on the first read.
struct DeferredStream {
    slot: Arc<Mutex<Option<Body>>>,
    body: Option<BodyDataStream>,
}

impl futures_util::Stream for DeferredStream {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.body.is_none() {
            let taken = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            match taken {
                Some(b) => self.body = Some(b.into_data_stream()),
                None => return Poll::Ready(None),
            }
        }
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn caller_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "myapp.azurewebsites.net"),
            ("x-azure-functions-invocationid", "spoofed"),
            ("x-ms-invocation-id", "spoofed"),
            ("x-azure-functions-hostversion", "0.0"),
            ("forwarded", "for=10.0.0.9"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/evil"),
            ("x-functions-key", "k3y"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("accept", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h
    }

    /// The proxy's headers are YARP's: invocation ids and X-Forwarded-* set
    /// over the caller's, Forwarded, Host and hop-by-hop headers dropped, the
    /// function key, Content-Length and the rest passed on; the caller's
    /// `traceparent` kept, the host's own added when there is none.
    #[test]
    fn headers_are_set_the_way_yarp_sets_them() {
        let origin = Origin {
            client_ip: Some("127.0.0.1".parse().unwrap()),
            host: Some(HeaderValue::from_static("myapp.azurewebsites.net")),
            proto: "http",
            path_base: String::new(),
        };
        let out = proxy_headers(&caller_headers(), "inv-1", &origin);
        let one = |name: &str| {
            let all: Vec<&str> = out.get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
            match all[..] {
                [] => None,
                [v] => Some(v.to_string()),
                _ => panic!("{name} sent {} times: {all:?}", all.len()),
            }
        };
        assert_eq!(one("x-azure-functions-invocationid").as_deref(), Some("inv-1"));
        assert_eq!(one("x-ms-invocation-id").as_deref(), Some("inv-1"));
        assert_eq!(one("x-azure-functions-hostversion").as_deref(), Some(HOST_VERSION));
        assert_eq!(one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(one("x-forwarded-host").as_deref(), Some("myapp.azurewebsites.net"));
        assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(one("x-forwarded-prefix"), None, "no path base: the caller's is dropped");
        for gone in ["forwarded", "host", "connection", "transfer-encoding"] {
            assert_eq!(one(gone), None, "{gone}");
        }
        assert_eq!(one("x-functions-key").as_deref(), Some("k3y"));
        assert_eq!(one("content-length").as_deref(), Some("12"));
        assert_eq!(one("accept").as_deref(), Some("application/json"));
        assert_eq!(out.get_all("x-multi").iter().count(), 2);
        let host_trace = one("traceparent").expect("the host's own traceparent when the caller sent none");
        assert!(host_trace.starts_with("00-") && host_trace.len() == 55, "{host_trace}");
        let mut traced = caller_headers();
        traced.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let out = proxy_headers(&traced, "inv-1", &origin);
        assert_eq!(
            out.get_all("traceparent").iter().collect::<Vec<_>>(),
            ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            "the caller's, kept"
        );

        let bare = Origin {
            path_base: "/base".into(),
            ..Origin::default()
        };
        let out = proxy_headers(&caller_headers(), "inv-2", &bare);
        assert_eq!(out["x-forwarded-prefix"], "/base");
        assert_eq!(out["x-forwarded-proto"], "http", "the local host speaks http");
        assert!(out.get("x-forwarded-for").is_none() && out.get("x-forwarded-host").is_none());
    }

    /// The waits between tries are 50 ms doubling to 250 ms, 9 of them: 10
    /// tries in all.
    #[test]
    fn retry_delays_are_50_to_250_ms_for_ten_tries() {
        let ms: Vec<u128> = retry_delays().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 250, 250, 250, 250, 250, 250]);
    }

    /// How many tries `with_retries` makes when the first `fail_first` fail.
    async fn tries(fail_first: u32, retryable: bool) -> (Result<u32, &'static str>, u32) {
        let calls = AtomicU32::new(0);
        let result = with_retries(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    match n <= fail_first {
                        true => Err("refused"),
                        false => Ok(n),
                    }
                }
            },
            |_| retryable,
        )
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    /// A success ends the tries; an error the proxy does not retry ends them at
    /// once. (All ten tries, with their real waits, are in the local host's
    /// `proxying_retries_a_handler_that_refuses_connections`.)
    #[tokio::test]
    async fn tries_stop_at_a_success_or_an_error_not_retried() {
        assert_eq!(tries(2, true).await, (Ok(3), 3));
        assert_eq!(tries(u32::MAX, false).await, (Err("refused"), 1));
    }
}
