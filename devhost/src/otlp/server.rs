//! The receiver's HTTP side: `POST /v1/traces`, `/v1/metrics` and
//! `/v1/logs` (taken and dropped), each answered as the [`Behaviour`] in
//! force says, served one task per connection so that stopping the server
//! closes every socket, held ones included.

use super::decode::{self, Refused};
use super::model::Protocol;
use super::store::{ReceivedBody, Store};
use super::{flatten, Behaviour};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the routes share.
pub(super) struct Shared {
    pub store: Store,
    pub behaviour: Mutex<Behaviour>,
}

/// Which signal a route takes.
#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
    Logs,
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .layer(DefaultBodyLimit::max(decode::MAX_BODY))
        .with_state(shared)
}

async fn traces(s: State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    export(s, uri, headers, body, Signal::Traces).await
}

async fn metrics(s: State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    export(s, uri, headers, body, Signal::Metrics).await
}

async fn logs(s: State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    export(s, uri, headers, body, Signal::Logs).await
}

async fn export(State(s): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes, signal: Signal) -> Response {
    let path = uri.path().to_owned();
    let media_type = decode::media_type(&headers);
    s.store
        .update(|d| *d.requests.entry((path.clone(), media_type.clone())).or_default() += 1);
    let behaviour = *s.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Accept => {}
        // Held until the server stops: the connection task is aborted then,
        // which closes the socket without an answer.
        Behaviour::Hang => std::future::pending::<()>().await,
        Behaviour::Fail => {
            return (StatusCode::SERVICE_UNAVAILABLE, "collector unavailable (injected)\n").into_response()
        }
    }
    match take(&s.store, path, &media_type, &headers, body, signal) {
        Ok(rsp) => rsp,
        Err(refused) => refused.into_response(),
    }
}

/// Decodes, keeps and answers one accepted export.
fn take(
    store: &Store,
    path: String,
    media_type: &str,
    headers: &HeaderMap,
    body: Bytes,
    signal: Signal,
) -> Result<Response, Refused> {
    let protocol: Protocol = decode::protocol(media_type)?;
    let bytes = decode::decompress(headers, body)?;
    let body = ReceivedBody {
        path,
        content_type: media_type.to_owned(),
        bytes: bytes.clone(),
    };
    match signal {
        Signal::Traces => {
            let req: ExportTraceServiceRequest = decode::decode(&bytes, protocol)?;
            let spans = flatten::spans(&req, protocol);
            store.update(|d| {
                d.bodies.push(body);
                d.spans.extend(spans);
            });
            Ok(decode::accepted(protocol))
        }
        Signal::Metrics => {
            let req: ExportMetricsServiceRequest = decode::decode(&bytes, protocol)?;
            let points = flatten::metrics(&req, protocol);
            store.update(|d| {
                d.bodies.push(body);
                d.metrics.extend(points);
            });
            Ok(decode::accepted(protocol))
        }
        Signal::Logs => {
            // Kept for the secret scans; the handler does not export logs
            // over OTLP, so they are not decoded.
            store.update(|d| d.bodies.push(body));
            Ok(decode::accepted(protocol))
        }
    }
}

/// Accepts and serves connections until the task running it is aborted;
/// every connection task lives in `conns`, so the abort drops (closes) them
/// all.
pub(super) async fn serve(listener: TcpListener, app: Router) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: back off instead of
                    // spinning on the same error.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::otlp::fixtures::{metrics_request, trace_request, METRICS_JSON, TRACE_JSON};
    use crate::otlp::{Behaviour, MetricData, Number, Protocol, Receiver, SpanKind, SpanStatus};
    use prost::Message;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    async fn post(url: String, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        reqwest::Client::new()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the receiver answers")
    }

    /// One span sent as protobuf and as spec-form JSON decodes to the same
    /// ReceivedSpan (bar the protocol), each answered 200 in its encoding.
    #[tokio::test]
    async fn protobuf_and_json_spans_decode_alike() {
        let r = Receiver::start(Behaviour::Accept).await.unwrap();
        let traces = format!("{}/v1/traces", r.endpoint());
        let rsp = post(
            traces.clone(),
            "application/x-protobuf",
            trace_request().encode_to_vec(),
        )
        .await;
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["content-type"], "application/x-protobuf");
        let rsp = post(traces, "application/json", TRACE_JSON.into()).await;
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.text().await.unwrap(), "{}");

        let spans = r.spans();
        assert_eq!(spans.len(), 2);
        let (pb, json) = (&spans[0], &spans[1]);
        assert_eq!((pb.protocol, json.protocol), (Protocol::Protobuf, Protocol::Json));
        assert_eq!(
            *json,
            crate::otlp::ReceivedSpan {
                protocol: Protocol::Json,
                ..pb.clone()
            }
        );
        assert_eq!(pb.trace_id, "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(
            (pb.span_id.as_str(), pb.parent_span_id.as_str()),
            ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb")
        );
        assert_eq!((pb.kind, pb.status_code), (SpanKind::Client, SpanStatus::Error));
        assert_eq!(pb.status_message, "MOVED to 127.0.0.1:7001");
        assert_eq!(pb.attr_str("db.system.name"), Some("redis"));
        assert_eq!(pb.attr_i64("server.port"), Some(7000));
        assert_eq!(pb.duration(), Duration::from_micros(2500));
        assert_eq!(pb.resource["service.name"].to_string(), "handler");
        assert_eq!(pb.scope, "azure-redis-handler");
        assert_eq!(pb.events[0].attributes["attempt"], crate::otlp::AttrValue::Int(5));
        assert_eq!(r.spans_of_trace(&pb.trace_id.to_uppercase()).len(), 2);
        assert_eq!(r.bodies().len(), 2);
        assert_eq!(r.requests()[&("/v1/traces".into(), "application/json".into())], 1);
    }

    /// Metrics sent as protobuf and as spec-form JSON decode alike, one
    /// entry per point; the waiter finds the counter and latest_point the
    /// newest export's point.
    #[tokio::test]
    async fn protobuf_and_json_metrics_decode_alike() {
        let r = Receiver::start(Behaviour::Accept).await.unwrap();
        let url = format!("{}/v1/metrics", r.endpoint());
        assert_eq!(
            post(url.clone(), "application/x-protobuf", metrics_request().encode_to_vec())
                .await
                .status(),
            200
        );
        assert_eq!(post(url, "application/json", METRICS_JSON.into()).await.status(), 200);
        let m = r.metrics();
        assert_eq!(m.len(), 4);
        for (pb, json) in [(&m[0], &m[2]), (&m[1], &m[3])] {
            assert_eq!(
                *json,
                crate::otlp::ReceivedMetric {
                    protocol: Protocol::Json,
                    ..pb.clone()
                }
            );
        }
        let counter = r.wait_for_metric(|m| m.name == "cache.commands", WAIT).await.unwrap();
        assert_eq!((counter.as_int(), counter.number()), (Some(5), Some(Number::Int(5))));
        assert_eq!(counter.attr_str("http.route"), Some("/api/ping"));
        let latest = r.latest_point("http.server.request.duration", |_| true).unwrap();
        assert_eq!(latest.protocol, Protocol::Json);
        let MetricData::Histogram {
            count,
            sum,
            bucket_counts,
            explicit_bounds,
            ..
        } = latest.data
        else {
            panic!("not a histogram: {latest:?}")
        };
        assert_eq!(
            (count, sum, bucket_counts, explicit_bounds),
            (3, Some(0.75), vec![1, 2, 0], vec![0.1, 0.5])
        );
    }

    /// Bodies that do not decode are 400, other media types 415, and
    /// neither keeps anything; logs are taken and dropped.
    #[tokio::test]
    async fn refusals() {
        let r = Receiver::start(Behaviour::Accept).await.unwrap();
        let ep = r.endpoint();
        let cases = [
            ("/v1/traces", "application/x-protobuf", b"\xff\xff\xff".to_vec(), 400),
            (
                "/v1/traces",
                "application/json",
                b"{\"resourceSpans\":[{\"scopeSpans\":7}]}".to_vec(),
                400,
            ),
            // Base64 ids, as the protobuf JSON mapping would have them: not OTLP/JSON.
            (
                "/v1/traces",
                "application/json",
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"AQIDBAUGBwgJCgsMDQ4PEA=="}]}]}]}"#.to_vec(),
                400,
            ),
            ("/v1/metrics", "text/plain", b"x".to_vec(), 415),
            ("/v1/logs", "application/json", b"{}".to_vec(), 200),
        ];
        for (path, ct, body, want) in cases {
            let rsp = post(format!("{ep}{path}"), ct, body).await;
            assert_eq!(rsp.status(), want, "{path} {ct}: {}", rsp.text().await.unwrap());
        }
        assert!(r.spans().is_empty() && r.metrics().is_empty());
        assert_eq!(r.bodies().len(), 1, "only the logs' body");
    }

    /// A hanging collector takes the request and never answers (a 300 ms
    /// client gives up); dropping the receiver closes a held connection;
    /// a failing one answers 503.
    #[tokio::test]
    async fn hang_and_fail() {
        let r = Receiver::start(Behaviour::Hang).await.unwrap();
        let url = format!("{}/v1/traces", r.endpoint());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let body = trace_request().encode_to_vec();
        let err = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(r.requests()[&("/v1/traces".into(), "application/x-protobuf".into())], 1);

        let held = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send();
        let held = tokio::spawn(held);
        r.wait_for_span(|_| false, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(!held.is_finished(), "held while the receiver lives");
        drop(r);
        let closed = tokio::time::timeout(WAIT, held).await.expect("closed on drop");
        assert!(closed.unwrap().is_err(), "no answer, the connection closed");

        let r = Receiver::start(Behaviour::Fail).await.unwrap();
        let url = format!("{}/v1/traces", r.endpoint());
        assert_eq!(
            post(url.clone(), "application/x-protobuf", body.clone()).await.status(),
            503
        );
        r.set_behaviour(Behaviour::Accept);
        assert_eq!(post(url, "application/x-protobuf", body).await.status(), 200);
        assert_eq!(r.spans().len(), 1);
    }
}
