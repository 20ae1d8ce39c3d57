//! The host's HTTP client towards a running custom handler: forwarded HTTP
//! requests and envelope invocations, for any handler reachable at a base URL
//! (one [`super::HandlerProcess`] started, or one found by `devhost invoke`).
//!
//! Follows docs/azure.md "The Functions host and a custom handler" (proxying
//! is in `proxy.rs`): forwarding keeps method, `/api/...` path and
//! query and adds `X-Azure-Functions-InvocationId` and
//! `X-Azure-Functions-HostVersion`, the
//! body only when non-empty, redirects not followed, the caller's
//! `traceparent` kept or the host's own added; other invocations are
//! `POST /{FunctionName}` with a chunked JSON envelope, `User-Agent:
//! Azure-Functions-Host/<ver>` and a `traceparent`.

use super::{envelope, HOST_VERSION};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Per-request limit: an HTTP trigger must answer within 230 s on Azure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(230);

pub(super) const INVOCATION_ID: &str = "x-azure-functions-invocationid";
pub(super) const HOST_VERSION_HEADER: &str = "x-azure-functions-hostversion";

/// The `traceparent` of the host's own activity for one invocation (a new
/// trace, sampled): the host's `HttpClient` adds it to every call to the
/// handler that has none, as it does with App Insights or OpenTelemetry on
/// (docs/azure.md, "Telemetry").
pub fn host_traceparent() -> String {
    format!("00-{}-{}-01", crate::util::random_hex(16), crate::util::random_hex(8))
}

/// Sets the host's `traceparent` on `headers` unless the caller's is there:
/// the host's client never overwrites one already present.
pub(super) fn add_traceparent(headers: &mut HeaderMap) {
    if !headers.contains_key("traceparent") {
        if let Ok(v) = HeaderValue::from_str(&host_traceparent()) {
            headers.insert("traceparent", v);
        }
    }
}

/// A new invocation id (a random UUID), as the host makes one per invocation.
pub fn new_invocation_id() -> String {
    crate::util::uuid_v4()
}

/// Sends what the Functions host sends to a handler at `base_url`. Cheap to
/// clone (one shared connection pool).
#[derive(Debug, Clone)]
pub struct HandlerClient {
    client: reqwest::Client,
    /// For [`HandlerClient::proxy`]: no deadline on the whole exchange, only
    /// on silence, since a proxied answer may stream for as long as it likes.
    pub(super) proxy: reqwest::Client,
    base_url: String,
}

impl HandlerClient {
    /// A client for the handler at `base_url` (`http://127.0.0.1:<port>`; a
    /// trailing `/` is dropped). No proxy, no redirects, 230 s per request
    /// (proxied ones: 240 s of silence).
    pub fn new(base_url: impl Into<String>) -> anyhow::Result<HandlerClient> {
        // reqwest brings no crypto provider of its own where it is built
        // with `rustls-no-provider` (as the handler's tests build it, beside
        // this crate), and panics when it finds none installed.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
        };
        let client = builder().timeout(REQUEST_TIMEOUT).build()?;
        let proxy = builder().read_timeout(super::ACTIVITY_TIMEOUT).build()?;
        let base_url = base_url.into().trim_end_matches('/').to_string();
        Ok(HandlerClient {
            client,
            proxy,
            base_url,
        })
    }

    /// The handler's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The underlying HTTP client (for probes such as `GET /`).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Forwards a request with a fresh invocation id; see [`HandlerClient::forward_as`].
    pub async fn forward_with_headers(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(*k), HeaderValue::try_from(*v)) {
                map.append(k, v);
            }
        }
        self.forward_as(&new_invocation_id(), method, path_and_query, map, body)
            .await
    }

    /// Forwards an HTTP request as the host does with
    /// `enableForwardingHttpRequest`: same method and `/api/...` path and
    /// query, the caller's `headers` plus the invocation id and host version
    /// headers (any the caller sent are replaced) and a `traceparent` when
    /// the caller sent none, the body only when non-empty. Redirects are not
    /// followed.
    pub async fn forward_as(
        &self,
        invocation_id: &str,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<reqwest::Response> {
        headers.remove(INVOCATION_ID);
        headers.remove(HOST_VERSION_HEADER);
        add_traceparent(&mut headers);
        let url = format!("{}{}", self.base_url, path_and_query);
        let mut req = self
            .client
            .request(method, url)
            .headers(headers)
            .header(INVOCATION_ID, invocation_id)
            .header(HOST_VERSION_HEADER, HOST_VERSION);
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            req = req.body(b);
        }
        req.send().await
    }

    /// Sends a non-HTTP invocation with a fresh invocation id; see
    /// [`HandlerClient::invoke_as`].
    pub async fn invoke(
        &self,
        function_name: &str,
        data: Value,
        metadata: Value,
    ) -> reqwest::Result<reqwest::Response> {
        self.invoke_as(&new_invocation_id(), function_name, data, metadata)
            .await
    }

    /// `POST /{function_name}` with the [`envelope`] of `data` and
    /// `metadata`, chunked (no Content-Length), with the host's headers and a
    /// `traceparent` of a new trace.
    pub async fn invoke_as(
        &self,
        invocation_id: &str,
        function_name: &str,
        data: Value,
        metadata: Value,
    ) -> reqwest::Result<reqwest::Response> {
        self.invoke_traced(invocation_id, function_name, data, metadata, &host_traceparent())
            .await
    }

    /// [`HandlerClient::invoke_as`] with the caller's `traceparent`, for a
    /// caller that wants to find the invocation's trace afterwards.
    pub async fn invoke_traced(
        &self,
        invocation_id: &str,
        function_name: &str,
        data: Value,
        metadata: Value,
        traceparent: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let body = serde_json::to_vec(&envelope(function_name, data, metadata)).expect("envelope serialises");
        let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from(body))];
        self.client
            .post(format!("{}/{}", self.base_url, function_name))
            .header("content-type", "application/json; charset=utf-8")
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header(INVOCATION_ID, invocation_id)
            .header(HOST_VERSION_HEADER, HOST_VERSION)
            .header("traceparent", traceparent)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
    }
}
