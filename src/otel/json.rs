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

/// One span as an element of `scopeSpans[0].spans`, followed by a comma:
/// the form the exporter queues a span in, written as the span ends.
pub(crate) fn span_entry(buf: &mut Vec<u8>, s: &SpanData) {
    // Writing a `serde_json::Value` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &span(s));
    buf.push(b',');
}

/// `ExportTraceServiceRequest` as JSON bytes, around spans written by
/// [`span_entry`].
pub(crate) fn traces_of_entries(res: &Resource, entries: &[u8]) -> Vec<u8> {
    let head = json!({
        "resourceSpans": [{
            "resource": resource(res),
            "scopeSpans": [{ "scope": scope(), "spans": [] }],
        }]
    });
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // `…"spans":[]}]}]}` (keys in order): the entries go between its `[`
    // and `]`.
    const EMPTY: &[u8] = b"\"spans\":[]";
    let Some(at) = head
        .windows(EMPTY.len())
        .rposition(|w| w == EMPTY)
        .map(|i| i + EMPTY.len() - 2)
    else {
        return head;
    };
    let entries = entries.strip_suffix(b",").unwrap_or(entries);
    let mut out = Vec::with_capacity(head.len() + entries.len());
    out.extend_from_slice(&head[..=at]);
    out.extend_from_slice(entries);
    out.extend_from_slice(&head[at + 1..]);
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otel::span::{Attributes, Kind};
    use std::time::Instant;

    fn span(name: &'static str, id: u8) -> SpanData {
        SpanData {
            trace_id: [id; 16],
            span_id: [id; 8],
            parent_span_id: None,
            trace_state: None,
            name: name.into(),
            kind: Kind::Client,
            start_unix_nano: 1,
            end_unix_nano: 2,
            fixed: None,
            attributes: Attributes::default(),
            events: Vec::new(),
            error: None,
            started: Instant::now(),
        }
    }

    /// Spans queued as entries make one valid request with every span in
    /// order, and none makes a valid empty one.
    #[test]
    fn entries_make_one_request() {
        let resource = Resource {
            attributes: vec![("service.name".into(), Value::from("app[]"))],
        };
        let mut entries = Vec::new();
        span_entry(&mut entries, &span("GET", 1));
        span_entry(&mut entries, &span("SET", 2));
        let body: Json = serde_json::from_slice(&traces_of_entries(&resource, &entries)).unwrap();
        let rs = &body["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "app[]");
        let spans = rs["scopeSpans"][0]["spans"].as_array().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["GET", "SET"]);
        assert_eq!(spans[1]["spanId"], "0202020202020202");
        let empty: Json = serde_json::from_slice(&traces_of_entries(&resource, &[])).unwrap();
        assert_eq!(empty["resourceSpans"][0]["scopeSpans"][0]["spans"], json!([]));
    }
}
