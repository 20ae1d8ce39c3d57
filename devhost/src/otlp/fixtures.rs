//! Test exports: the same traces and metrics built with the prost types
//! and hand-written in the spec's OTLP/JSON form (`tests/data/otlp/`: hex
//! ids, 64-bit ints as strings and as numbers, enums as integers, an
//! unknown field), so a test can check that both decode alike.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};

/// [`trace_request`] in OTLP/JSON.
pub const TRACE_JSON: &str = include_str!("../../tests/data/otlp/trace.json");
/// [`metrics_request`] in OTLP/JSON.
pub const METRICS_JSON: &str = include_str!("../../tests/data/otlp/metrics.json");

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", any_value::Value::StringValue("handler".into()))],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "azure-redis-handler".into(),
        ..Default::default()
    })
}

/// A failed redirected GET, built with the prost types.
pub fn trace_request() -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: (1..=16).collect(),
        span_id: vec![0xaa; 8],
        parent_span_id: vec![0xbb; 8],
        name: "GET".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_002_500_000,
        attributes: vec![
            kv("db.system.name", any_value::Value::StringValue("redis".into())),
            kv("server.port", any_value::Value::IntValue(7000)),
        ],
        events: vec![span::Event {
            time_unix_nano: 1_700_000_000_001_000_000,
            name: "redirect".into(),
            attributes: vec![kv("attempt", any_value::Value::IntValue(5))],
            ..Default::default()
        }],
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            message: "MOVED to 127.0.0.1:7001".into(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A counter and a histogram, built with the prost types.
pub fn metrics_request() -> ExportMetricsServiceRequest {
    let route = kv("http.route", any_value::Value::StringValue("/api/ping".into()));
    let sum = Metric {
        name: "cache.commands".into(),
        unit: "{command}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![route.clone()],
                time_unix_nano: 1_700_000_000_000_000_000,
                value: Some(number_data_point::Value::AsInt(5)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "http.server.request.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![route],
                time_unix_nano: 1_700_000_000_000_000_000,
                count: 3,
                sum: Some(0.75),
                bucket_counts: vec![1, 2, 0],
                explicit_bounds: vec![0.1, 0.5],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![sum, histogram],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One invocation of trace `trace_id` (32 hex digits): a GET (sent first,
/// as it ends first) and its SERVER span, whose parent is the caller's.
pub fn server_span_request(trace_id: &str) -> ExportTraceServiceRequest {
    let trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let span = |id: u8, parent: u8, name: &str, kind: span::SpanKind| Span {
        trace_id: trace.clone(),
        span_id: vec![id; 8],
        parent_span_id: vec![parent; 8],
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id),
        end_time_unix_nano: 1_700_000_000_001_000_000 - u64::from(id),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![
                    span(2, 1, "GET", span::SpanKind::Client),
                    span(1, 0xcc, "GET /api/cache/{key}", span::SpanKind::Server),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
