//! The local host in proxying mode (`enableProxyingHttpRequest`): the
//! caller's request goes to the handler as the host's YARP proxy sends it
//! ([`HandlerClient::proxy`](crate::functions_host::HandlerClient::proxy)),
//! body streamed as it arrives, and the handler's answer streams back.
//!
//! Follows AZURE-FACTS "The Functions host and a custom handler",
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
#[path = "proxy_tests.rs"]
mod tests;
