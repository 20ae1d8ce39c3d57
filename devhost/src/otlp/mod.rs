//! An OTLP/HTTP receiver: the local end of the handler's OpenTelemetry
//! export (`OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, `/v1/metrics`),
//! standing in for a collector or Azure Monitor's OTLP ingestion.
//!
//! Exports decode with the official OTLP definitions (the
//! `opentelemetry-proto` crate's prost messages, and its serde mapping for
//! OTLP/JSON) and are kept flattened ([`ReceivedSpan`], [`ReceivedMetric`])
//! along with every raw body. A collector's failures are on demand
//! ([`Behaviour`]): one that hangs, one that answers 503.
//!
//! [`waterfall()`] draws one invocation's spans as a tree on a time line;
//! `devhost start --traces` and `devhost invoke` print it.
//!
//! Layout: `model.rs` (the kept values), `flatten.rs` (from the protobuf
//! messages to them), `decode.rs` (media types, gzip, decoding, answers),
//! `server.rs` (routes and connections), `store.rs` (the lock and the
//! waiting), `waterfall.rs` (the drawing); `fixtures.rs` has the tests'
//! exports, with their OTLP/JSON twins in `tests/data/otlp/`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use devhost::otlp::{Behaviour, Receiver, SpanKind};
//! use std::time::Duration;
//! let receiver = Receiver::start(Behaviour::Accept).await?;
//! // Give the handler OTEL_EXPORTER_OTLP_ENDPOINT = receiver.endpoint(), invoke it, then:
//! let server = receiver
//!     .wait_for_span(|s| s.kind == SpanKind::Server, Duration::from_secs(10))
//!     .await?;
//! println!("{}", devhost::otlp::waterfall(&receiver.spans_of_trace(&server.trace_id), &server.span_id));
//! # Ok(()) }
//! ```

mod decode;
#[cfg(test)]
pub(crate) mod fixtures;
mod flatten;
mod model;
mod server;
mod store;
mod waterfall;

pub use model::{
    AttrValue, Attrs, MetricData, Number, Protocol, ReceivedMetric, ReceivedSpan, SpanEvent, SpanKind, SpanStatus,
};
pub use store::{ReceivedBody, MAX_BODIES, MAX_METRIC_POINTS, MAX_SPANS};
pub use waterfall::waterfall;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Decode, keep, answer 200: a working collector.
    #[default]
    Accept,
    /// Take the connection and the request, never answer: a collector that
    /// hangs. The connection is held until the [`Receiver`] is dropped.
    Hang,
    /// Answer 503 without reading the export: a collector that is down
    /// behind a load balancer.
    Fail,
}

/// A running OTLP/HTTP receiver on `127.0.0.1`; dropping it stops the
/// server and closes every connection.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port, answering as `behaviour`
    /// says.
    pub async fn start(behaviour: Behaviour) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(server::Shared {
            store: store::Store::default(),
            behaviour: Mutex::new(behaviour),
        });
        let task = tokio::spawn(server::serve(listener, server::router(shared.clone())));
        Ok(Receiver { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`: the value for `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (the exporter appends `/v1/traces` and `/v1/metrics`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how later exports are answered (requests already held by
    /// [`Behaviour::Hang`] stay held).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// The spans received so far (the newest [`MAX_SPANS`]), in arrival
    /// order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.store.read(|d| d.spans.to_vec())
    }

    /// The spans of one trace (`trace_id`: 32 hex digits), in arrival order.
    pub fn spans_of_trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        let id = trace_id.to_ascii_lowercase();
        self.shared
            .store
            .read(|d| d.spans.iter().filter(|s| s.trace_id == id).cloned().collect())
    }

    /// The metric data points received so far (the newest
    /// [`MAX_METRIC_POINTS`]), one entry per point per export, in arrival
    /// order.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.shared.store.read(|d| d.metrics.to_vec())
    }

    /// The last point received of metric `name` whose point satisfies
    /// `pred` (the newest export's, for cumulative metrics the running
    /// total).
    pub fn latest_point(&self, name: &str, pred: impl Fn(&ReceivedMetric) -> bool) -> Option<ReceivedMetric> {
        self.shared
            .store
            .read(|d| d.metrics.iter().rev().find(|m| m.name == name && pred(m)).cloned())
    }

    /// The accepted requests' bodies (traces, metrics and logs; the newest
    /// [`MAX_BODIES`]), in arrival order, gzip undone.
    pub fn bodies(&self) -> Vec<ReceivedBody> {
        self.shared.store.read(|d| d.bodies.to_vec())
    }

    /// Requests seen by `(path, media type)`, counted on arrival whatever
    /// the behaviour, e.g. `("/v1/traces", "application/x-protobuf") → 3`.
    pub fn requests(&self) -> BTreeMap<(String, String), usize> {
        self.shared.store.read(|d| d.requests.clone())
    }

    /// The first span (in arrival order) satisfying `pred`, waiting up to
    /// `timeout` for it; the error lists the spans that did arrive.
    pub async fn wait_for_span(
        &self,
        pred: impl Fn(&ReceivedSpan) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<ReceivedSpan> {
        let found = self
            .shared
            .store
            .wait(timeout, |d| d.spans.iter().find(|s| pred(s)).cloned())
            .await;
        found.ok_or_else(|| {
            let names: Vec<String> = self
                .spans()
                .iter()
                .map(|s| format!("{:?} {}", s.kind, s.name))
                .collect();
            anyhow::anyhow!(
                "no matching span within {timeout:?}; received {}: [{}]",
                names.len(),
                names.join(", ")
            )
        })
    }

    /// The first metric point (in arrival order) satisfying `pred`, waiting
    /// up to `timeout` for it; the error lists the metric names that did
    /// arrive.
    pub async fn wait_for_metric(
        &self,
        pred: impl Fn(&ReceivedMetric) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<ReceivedMetric> {
        let found = self
            .shared
            .store
            .wait(timeout, |d| d.metrics.iter().find(|m| pred(m)).cloned())
            .await;
        found.ok_or_else(|| {
            let mut names: Vec<String> = self.metrics().into_iter().map(|m| m.name).collect();
            names.dedup();
            anyhow::anyhow!(
                "no matching metric point within {timeout:?}; received: [{}]",
                names.join(", ")
            )
        })
    }

    /// How many spans have arrived in all, those no longer kept included.
    pub fn spans_received(&self) -> usize {
        self.shared.store.read(|d| d.spans.arrived())
    }

    /// Spans received after the first `*seen` (those still kept, when a
    /// follower fell more than [`MAX_SPANS`] behind), waiting until there
    /// is at least one; advances `*seen` past them. A follower's loop:
    /// start at 0 (or [`Receiver::spans_received`] for only new ones).
    pub async fn next_spans(&self, seen: &mut usize) -> Vec<ReceivedSpan> {
        let from = *seen;
        let new = self
            .shared
            .store
            .wait(Duration::MAX, |d| {
                (d.spans.arrived() > from).then(|| (d.spans.arrived(), d.spans.after(from)))
            })
            .await;
        let Some((arrived, new)) = new else {
            return Vec::new();
        };
        *seen = arrived;
        new
    }

    /// Waits until `quiet` passes with no export arriving, or `cap` in all:
    /// for children still in flight after their parent.
    pub async fn settle(&self, quiet: Duration, cap: Duration) {
        self.shared.store.settle(quiet, cap).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet of connections, which
        // closes them all, held requests included.
        self.task.abort();
    }
}
