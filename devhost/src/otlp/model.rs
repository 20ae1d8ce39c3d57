//! What the receiver keeps of an export: spans and metric points flattened
//! out of the OTLP messages into plain values a test or the waterfall reads
//! without knowing the protobuf layout (ids as lowercase hex, attributes as
//! a sorted map, one [`ReceivedMetric`] per data point).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How an export was encoded on the wire (OTLP/HTTP's two encodings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// `application/x-protobuf` (`http/protobuf`, the SDKs' default).
    Protobuf,
    /// `application/json` (`http/json`, the OTLP/JSON mapping).
    Json,
}

/// An attribute's value, as OTLP's `AnyValue` carries it: an int stays an
/// int and a double a double, so a test can tell `200` from `200.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    /// `stringValue`.
    Str(String),
    /// `boolValue`.
    Bool(bool),
    /// `intValue` (a string or a number in OTLP/JSON).
    Int(i64),
    /// `doubleValue`.
    Double(f64),
    /// `bytesValue`.
    Bytes(Vec<u8>),
    /// `arrayValue`.
    Array(Vec<AttrValue>),
    /// `kvlistValue`.
    Map(Attrs),
    /// An `AnyValue` with nothing set.
    Empty,
}

impl std::fmt::Display for AttrValue {
    /// Strings bare, numbers and bools as Rust prints them, the rest as
    /// debug output: what a console line wants.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Double(d) => write!(f, "{d}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Attributes by key (a later duplicate key wins, as in the SDKs).
pub type Attrs = BTreeMap<String, AttrValue>;

/// A span's kind (OTLP `Span.SpanKind`; an unknown number reads as
/// `Unspecified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanKind {
    /// 0.
    Unspecified,
    /// 1: work inside the process.
    Internal,
    /// 2: the handling of a request (an invocation).
    Server,
    /// 3: a call out (a Redis command, a token fetch).
    Client,
    /// 4.
    Producer,
    /// 5.
    Consumer,
}

impl SpanKind {
    pub(super) fn from_i32(k: i32) -> SpanKind {
        match k {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// A span's status code (OTLP `Status.StatusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanStatus {
    /// 0: the default; nothing said.
    Unset,
    /// 1: marked successful on purpose.
    Ok,
    /// 2: failed; [`ReceivedSpan::status_message`] says why.
    Error,
}

/// One event on a span (`Span.Event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// Its name, e.g. `exception`.
    pub name: String,
    /// When, in ns since the Unix epoch.
    pub time_unix_nano: u64,
    /// Its attributes.
    pub attributes: Attrs,
}

/// One span as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// E.g. `GET /api/cache/{key}`, `GET`, `token fetch`.
    pub name: String,
    /// Server for an invocation, client for a call out.
    pub kind: SpanKind,
    /// Start, in ns since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, in ns since the Unix epoch.
    pub end_unix_nano: u64,
    /// The span's attributes.
    pub attributes: Attrs,
    /// Its status code.
    pub status_code: SpanStatus,
    /// The status description (set with [`SpanStatus::Error`]).
    pub status_message: String,
    /// Its events, in the order sent.
    pub events: Vec<SpanEvent>,
    /// The resource's attributes (`service.name`, …), one map shared by the
    /// spans of an export.
    pub resource: Arc<Attrs>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// How it was encoded on the wire.
    pub protocol: Protocol,
}

impl ReceivedSpan {
    /// A string attribute's value (`None` when absent or not a string).
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An int attribute's value (`None` when absent or not an int).
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// End minus start (zero if the end is before the start).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }

    /// Whether the span is an invocation's own: a SERVER span, or one with
    /// `faas.invocation_id` (the handler makes it INTERNAL when the host's
    /// request telemetry goes to the same backend).
    pub fn is_invocation(&self) -> bool {
        self.kind == SpanKind::Server || self.attributes.contains_key("faas.invocation_id")
    }

    /// Whether the span says it failed.
    pub fn is_error(&self) -> bool {
        self.status_code == SpanStatus::Error
    }
}

/// A number data point's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// `asInt`.
    Int(i64),
    /// `asDouble`.
    Double(f64),
}

impl Number {
    /// The value as a float, whichever it was.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Double(d) => d,
        }
    }
}

/// One data point's values, by the metric's type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricData {
    /// A counter or up-down counter.
    Sum {
        /// The value (cumulative or delta as `temporality` says).
        value: Number,
        /// Whether it only goes up.
        monotonic: bool,
        /// OTLP `AggregationTemporality`: 1 delta, 2 cumulative.
        temporality: i32,
    },
    /// A gauge.
    Gauge {
        /// The value.
        value: Number,
    },
    /// An explicit-bucket histogram.
    Histogram {
        /// How many values were recorded.
        count: u64,
        /// Their sum, when sent.
        sum: Option<f64>,
        /// One count per bucket: `explicit_bounds.len() + 1` of them.
        bucket_counts: Vec<u64>,
        /// The buckets' upper bounds.
        explicit_bounds: Vec<f64>,
        /// The smallest value recorded, when sent.
        min: Option<f64>,
        /// The largest value recorded, when sent.
        max: Option<f64>,
    },
    /// A type the receiver does not flatten (exponential histogram,
    /// summary): its name.
    Other(String),
}

/// One data point of one metric, as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedMetric {
    /// E.g. `http.server.request.duration`.
    pub name: String,
    /// E.g. `s`, `{request}`.
    pub unit: String,
    /// The instrument's description.
    pub description: String,
    /// The point's attributes.
    pub attributes: Attrs,
    /// The point's time, in ns since the Unix epoch.
    pub time_unix_nano: u64,
    /// Its values.
    pub data: MetricData,
    /// The resource's attributes.
    pub resource: Arc<Attrs>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// How it was encoded on the wire.
    pub protocol: Protocol,
}

impl ReceivedMetric {
    /// A sum's or gauge's value if it is an int.
    pub fn as_int(&self) -> Option<i64> {
        match self.number()? {
            Number::Int(i) => Some(i),
            Number::Double(_) => None,
        }
    }

    /// A sum's or gauge's value if it is a double.
    pub fn as_double(&self) -> Option<f64> {
        match self.number()? {
            Number::Double(d) => Some(d),
            Number::Int(_) => None,
        }
    }

    /// A sum's or gauge's value, either kind.
    pub fn number(&self) -> Option<Number> {
        match &self.data {
            MetricData::Sum { value, .. } | MetricData::Gauge { value } => Some(*value),
            _ => None,
        }
    }

    /// A string attribute of the point.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }
}
