//! OTLP's JSON mapping (`http/json`) of the same messages as
//! [`super::proto`]: lowerCamelCase names, trace and span ids as hex (not
//! base64, unlike protobuf's usual JSON), enums as numbers, 64-bit
//! integers as strings (spec: opentelemetry.io/docs/specs/otlp, "JSON
//! Protobuf Encoding").

use super::metrics::{Data, Histogram, MetricData, Number};
use super::span::{KeyValue, SpanData, Value};
use super::Resource;
use crate::trace_context::Hex;
use serde_json::{json, Value as Json};

fn any_value(value: &Value) -> Json {
    match value {
        Value::Int(n) => json!({ "intValue": n.to_string() }),
        Value::Bool(b) => json!({ "boolValue": b }),
        text => json!({ "stringValue": text.as_str(&mut [0; 36]) }),
    }
}

fn attributes<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Json {
    attrs
        .into_iter()
        .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
        .collect()
}

fn kvs<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Json {
    attributes(attrs.into_iter().map(|(k, v)| (*k, v)))
}

fn resource(resource: &Resource) -> Json {
    json!({ "attributes": attributes(resource.attributes.iter().map(|(k, v)| (k.as_str(), v))) })
}

fn scope() -> Json {
    json!({ "name": super::SCOPE_NAME, "version": super::SCOPE_VERSION })
}

/// `ExportTraceServiceRequest` as JSON bytes.
pub(crate) fn traces(res: &Resource, spans: &[SpanData]) -> Vec<u8> {
    let spans: Vec<Json> = spans.iter().map(span).collect();
    let body = json!({
        "resourceSpans": [{
            "resource": resource(res),
            "scopeSpans": [{ "scope": scope(), "spans": spans }],
        }]
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn span(s: &SpanData) -> Json {
    let mut out = json!({
        "traceId": Hex(s.trace_id).to_string(),
        "spanId": Hex(s.span_id).to_string(),
        "name": s.name,
        "kind": s.kind as i32,
        "startTimeUnixNano": s.start_unix_nano.to_string(),
        "endTimeUnixNano": s.end_unix_nano.to_string(),
        "attributes": kvs(s.fixed.iter().flat_map(|f| f.attributes.iter()).chain(s.attributes.iter())),
    });
    if let Some(parent) = s.parent_span_id {
        out["parentSpanId"] = json!(Hex(parent).to_string());
    }
    if let Some(state) = &s.trace_state {
        out["traceState"] = json!(state);
    }
    if !s.events.is_empty() {
        let events: Vec<Json> = s
            .events
            .iter()
            .map(|e| {
                json!({
                    "timeUnixNano": e.time_unix_nano.to_string(),
                    "name": e.name,
                    "attributes": kvs(&e.attributes),
                })
            })
            .collect();
        out["events"] = json!(events);
    }
    if let Some(error) = &s.error {
        out["status"] = json!({ "code": 2, "message": error });
    }
    out
}

/// `ExportMetricsServiceRequest` as JSON bytes.
pub(crate) fn metrics(res: &Resource, start: u64, now: u64, metrics: &[MetricData]) -> Vec<u8> {
    let metrics: Vec<Json> = metrics.iter().map(|m| metric(m, start, now)).collect();
    let body = json!({
        "resourceMetrics": [{
            "resource": resource(res),
            "scopeMetrics": [{ "scope": scope(), "metrics": metrics }],
        }]
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn metric(m: &MetricData, start: u64, now: u64) -> Json {
    let times = |mut point: Json| {
        point["startTimeUnixNano"] = json!(start.to_string());
        point["timeUnixNano"] = json!(now.to_string());
        point
    };
    let number = |(attrs, n): &(Vec<KeyValue>, Number)| {
        times(match n {
            Number::Int(v) => json!({ "attributes": kvs(attrs), "asInt": v.to_string() }),
            Number::Double(v) => json!({ "attributes": kvs(attrs), "asDouble": v }),
        })
    };
    let histogram = |(attrs, h): &(Vec<KeyValue>, Histogram)| {
        let mut point = json!({
            "attributes": kvs(attrs),
            "count": h.count.to_string(),
            "sum": h.sum,
            "bucketCounts": h.counts.iter().map(u64::to_string).collect::<Vec<_>>(),
            "explicitBounds": h.bounds,
        });
        if h.count > 0 {
            point["min"] = json!(h.min);
            point["max"] = json!(h.max);
        }
        times(point)
    };
    let mut out = json!({
        "name": m.instrument.name,
        "description": m.instrument.description,
        "unit": m.instrument.unit,
    });
    match &m.data {
        Data::Gauge(points) => out["gauge"] = json!({ "dataPoints": points.iter().map(number).collect::<Vec<_>>() }),
        Data::Sum(points) => {
            out["sum"] = json!({
                "dataPoints": points.iter().map(number).collect::<Vec<_>>(),
                "aggregationTemporality": 2,
                "isMonotonic": true,
            });
        }
        Data::Histogram(points) => {
            out["histogram"] = json!({
                "dataPoints": points.iter().map(histogram).collect::<Vec<_>>(),
                "aggregationTemporality": 2,
            });
        }
    }
    out
}
