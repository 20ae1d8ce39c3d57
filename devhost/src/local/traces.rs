//! The local host's trace lookup, `GET /admin/devhost/traces/{trace_id}`,
//! and its client: how `devhost invoke`, a separate process, shows the
//! waterfall of the invocation it sent, from the spans at the running
//! `devhost start`'s receiver.
//!
//! The lookup long-polls: with `?wait_ms=N` it answers once the trace's
//! invocation span ([`ReceivedSpan::is_invocation`]) has arrived and its children have settled,
//! or after N ms with whatever there is.

use super::telemetry::{QUIET, SETTLE_CAP};
use crate::otlp::{ReceivedSpan, Receiver};
use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait a lookup may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The lookup's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceSpans {
    /// The trace's spans received so far, in arrival order.
    pub spans: Vec<ReceivedSpan>,
}

#[derive(Deserialize)]
struct Wait {
    wait_ms: Option<u64>,
}

/// The lookup route, over `receiver` (`None` when the handler exports to
/// an endpoint of the app's own: then it answers 404 saying so).
pub fn router(receiver: Option<Arc<Receiver>>) -> Router {
    Router::new()
        .route("/admin/devhost/traces/{trace_id}", get(lookup))
        .with_state(receiver)
}

async fn lookup(
    State(receiver): State<Option<Arc<Receiver>>>,
    Path(trace_id): Path<String>,
    Query(wait): Query<Wait>,
) -> Response {
    let Some(receiver) = receiver else {
        let why = "this devhost start does not receive the handler's telemetry: the app's settings send it elsewhere\n";
        return (StatusCode::NOT_FOUND, why).into_response();
    };
    let id = trace_id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::BAD_REQUEST, "a trace id is 32 hex digits\n").into_response();
    }
    let wait = Duration::from_millis(wait.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let invocation = |s: &ReceivedSpan| s.trace_id == id && s.is_invocation();
    if receiver.wait_for_span(invocation, wait).await.is_ok() {
        receiver.settle(QUIET, SETTLE_CAP).await;
    }
    Json(TraceSpans {
        spans: receiver.spans_of_trace(&id),
    })
    .into_response()
}

/// The spans of `trace_id` from the local host at `host_url`, waiting up
/// to `wait` for its invocation to arrive there.
pub async fn fetch(host_url: &str, trace_id: &str, wait: Duration) -> anyhow::Result<Vec<ReceivedSpan>> {
    let url = format!(
        "{}/admin/devhost/traces/{trace_id}?wait_ms={}",
        host_url.trim_end_matches('/'),
        wait.as_millis()
    );
    let rsp = reqwest::Client::builder()
        .no_proxy()
        .timeout(wait + Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reaching the local host at {host_url}"))?;
    let status = rsp.status();
    anyhow::ensure!(status.is_success(), "{}", rsp.text().await.unwrap_or_default().trim());
    Ok(rsp.json::<TraceSpans>().await?.spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{fixtures::server_span_request, Behaviour};

    async fn serve(receiver: Option<Arc<Receiver>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(receiver)).await });
        url
    }

    /// A lookup waits for the invocation's SERVER span and answers the
    /// trace's spans as they arrived; a bad id is 400, and a run without
    /// its own receiver says so.
    #[tokio::test]
    async fn a_lookup_waits_for_the_invocation() {
        let receiver = Arc::new(Receiver::start(Behaviour::Accept).await.unwrap());
        let host = serve(Some(receiver.clone())).await;
        let trace_id = "0af7651916cd43dd8448eb211c80319c";
        let lookup = tokio::spawn({
            let host = host.clone();
            async move { fetch(&host, trace_id, Duration::from_secs(10)).await }
        });
        let export = server_span_request(trace_id);
        reqwest::Client::new()
            .post(format!("{}/v1/traces", receiver.endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&export))
            .send()
            .await
            .unwrap();
        let spans = lookup.await.unwrap().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["GET", "GET /api/cache/{key}"]);

        let bad = fetch(&host, "xyz", Duration::ZERO).await.unwrap_err();
        assert!(bad.to_string().contains("32 hex digits"), "{bad}");
        let theirs = fetch(&serve(None).await, trace_id, Duration::ZERO).await.unwrap_err();
        assert!(theirs.to_string().contains("send it elsewhere"), "{theirs}");
    }
}
