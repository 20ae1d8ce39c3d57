//! OTLP's protobuf encoding (`http/protobuf`), written by hand for the few
//! messages the handler sends: `ExportTraceServiceRequest` and
//! `ExportMetricsServiceRequest` (opentelemetry-proto v1, field numbers in
//! the comments). The tests decode the output with the official
//! definitions (the `opentelemetry-proto` crate, through devhost's OTLP
//! receiver), so a wrong number shows there.
//!
//! A nested message is written in place and its length put in front once
//! it is known; no intermediate buffers.

use super::metrics::{Data, Histogram, MetricData, Number};
use super::span::{Event, KeyValue, SpanData, Value};
use super::Resource;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

fn bytes(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        tag(buf, field, LEN);
        varint(buf, b.len() as u64);
        buf.extend_from_slice(b);
    }
}

fn string(buf: &mut Vec<u8>, field: u32, s: &str) {
    bytes(buf, field, s.as_bytes());
}

fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    tag(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn double(buf: &mut Vec<u8>, field: u32, v: f64) {
    fixed64(buf, field, v.to_bits());
}

fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

/// A nested message: written by `body`, then its length put in front
/// (appended, and rotated into place: no allocation, which matters more
/// than the copy, on the exporter's thread beside the runtime's workers).
fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LEN);
    let start = buf.len();
    body(buf);
    let mut len = (buf.len() - start) as u64;
    let mut n = 0;
    loop {
        n += 1;
        if len < 0x80 {
            buf.push(len as u8);
            break;
        }
        buf.push((len as u8) | 0x80);
        len >>= 7;
    }
    buf[start..].rotate_right(n);
}

/// How many bytes `v` takes as a varint.
fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// `KeyValue` (1 key, 2 value: `AnyValue` with 1 string, 2 bool, 3 int64)
/// as field `field` of the enclosing message. Both lengths are known
/// before writing, so it is written straight through: this runs for every
/// attribute of every span.
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let mut scratch = [0; 36];
    let any_len = match value {
        Value::Bool(_) => 2,
        Value::Int(n) => 1 + varint_len(*n as u64),
        other => {
            let s = other.as_str(&mut scratch).unwrap_or_default();
            1 + varint_len(s.len() as u64) + s.len()
        }
    };
    let kv_len = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any_len as u64) + any_len;
    buf.reserve(kv_len + 6);
    tag(buf, field, LEN);
    varint(buf, kv_len as u64);
    tag(buf, 1, LEN);
    varint(buf, key.len() as u64);
    buf.extend_from_slice(key.as_bytes());
    tag(buf, 2, LEN);
    varint(buf, any_len as u64);
    match value {
        Value::Bool(b) => {
            tag(buf, 2, VARINT);
            varint(buf, u64::from(*b));
        }
        Value::Int(n) => {
            tag(buf, 3, VARINT);
            varint(buf, *n as u64);
        }
        other => {
            // An empty string is still a value: write the field.
            let s = other.as_str(&mut scratch).unwrap_or_default();
            tag(buf, 1, LEN);
            varint(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
        }
    }
}

fn attributes<'a>(buf: &mut Vec<u8>, field: u32, attrs: impl IntoIterator<Item = &'a KeyValue>) {
    for (k, v) in attrs {
        key_value(buf, field, k, v);
    }
}

/// Attributes as `Span.attributes` (field 9), for a set encoded once.
pub(crate) fn span_attributes(attrs: &[KeyValue]) -> Vec<u8> {
    let mut buf = Vec::new();
    attributes(&mut buf, 9, attrs);
    buf
}

/// `Resource` (1 attributes) as field 1 of `ResourceSpans`/`ResourceMetrics`,
/// and `InstrumentationScope` (1 name, 2 version) as field 1 of the scope's.
fn resource_and_scope<'a>(
    buf: &mut Vec<u8>,
    resource: &Resource,
    scope_field: u32,
    body: impl FnOnce(&mut Vec<u8>) + 'a,
) {
    message(buf, 1, |b| {
        message(b, 1, |b| {
            for (k, v) in &resource.attributes {
                key_value(b, 1, k, v);
            }
        });
        message(b, 2, |b| {
            message(b, scope_field, |b| {
                string(b, 1, super::SCOPE_NAME);
                string(b, 2, super::SCOPE_VERSION);
            });
            body(b);
        });
    });
}

/// One span as an entry of `ScopeSpans.spans` (field 2): the form the
/// exporter queues a span in, written as the span ends.
pub(crate) fn span_entry(buf: &mut Vec<u8>, span: &SpanData) {
    message(buf, 2, |b| span_message(b, span));
}

/// `ExportTraceServiceRequest` (1 resource_spans { 1 resource, 2
/// scope_spans { 1 scope, 2 spans } }) around spans written by
/// [`span_entry`]. The lengths are known before the spans are written, so
/// a batch of them is copied in once and never moved.
pub(crate) fn traces_of_entries(resource: &Resource, entries: &[u8]) -> Vec<u8> {
    let mut resource_field = Vec::new();
    message(&mut resource_field, 1, |b| {
        for (k, v) in &resource.attributes {
            key_value(b, 1, k, v);
        }
    });
    let mut scope_field = Vec::new();
    message(&mut scope_field, 1, |b| {
        string(b, 1, super::SCOPE_NAME);
        string(b, 2, super::SCOPE_VERSION);
    });
    let scope_spans = scope_field.len() + entries.len();
    let resource_spans = resource_field.len() + 1 + varint_len(scope_spans as u64) + scope_spans;
    let mut buf = Vec::with_capacity(resource_spans + 12);
    tag(&mut buf, 1, LEN);
    varint(&mut buf, resource_spans as u64);
    buf.extend_from_slice(&resource_field);
    tag(&mut buf, 2, LEN);
    varint(&mut buf, scope_spans as u64);
    buf.extend_from_slice(&scope_field);
    buf.extend_from_slice(entries);
    buf
}

/// `Span`: 1 trace_id, 2 span_id, 3 trace_state, 4 parent_span_id, 5 name,
/// 6 kind, 7 start (fixed64), 8 end (fixed64), 9 attributes, 11 events,
/// 15 status { 2 message, 3 code }.
fn span_message(b: &mut Vec<u8>, span: &SpanData) {
    bytes(b, 1, &span.trace_id);
    bytes(b, 2, &span.span_id);
    if let Some(state) = &span.trace_state {
        string(b, 3, state);
    }
    if let Some(parent) = &span.parent_span_id {
        bytes(b, 4, parent);
    }
    string(b, 5, &span.name);
    uint(b, 6, span.kind as u64);
    fixed64(b, 7, span.start_unix_nano);
    fixed64(b, 8, span.end_unix_nano);
    if let Some(fixed) = span.fixed {
        b.extend_from_slice(&fixed.proto);
    }
    attributes(b, 9, span.attributes.iter());
    for Event {
        time_unix_nano,
        name,
        attributes: attrs,
    } in &span.events
    {
        // `Event`: 1 time (fixed64), 2 name, 3 attributes.
        message(b, 11, |b| {
            fixed64(b, 1, *time_unix_nano);
            string(b, 2, name);
            attributes(b, 3, attrs);
        });
    }
    if let Some(error) = &span.error {
        message(b, 15, |b| {
            string(b, 2, error);
            uint(b, 3, 2);
        });
    }
}

/// `ExportMetricsServiceRequest`: 1 resource_metrics { 1 resource, 2
/// scope_metrics { 1 scope, 2 metrics } }.
pub(crate) fn metrics(resource: &Resource, start: u64, now: u64, metrics: &[MetricData]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1024);
    resource_and_scope(&mut buf, resource, 1, |b| {
        for m in metrics {
            message(b, 2, |b| metric_message(b, m, start, now));
        }
    });
    buf
}

/// `Metric`: 1 name, 2 description, 3 unit, 5 gauge, 7 sum, 9 histogram.
/// Sums and histograms are cumulative (temporality 2).
fn metric_message(b: &mut Vec<u8>, m: &MetricData, start: u64, now: u64) {
    string(b, 1, m.instrument.name);
    string(b, 2, m.instrument.description);
    string(b, 3, m.instrument.unit);
    match &m.data {
        Data::Gauge(points) => message(b, 5, |b| {
            for (attrs, n) in points {
                message(b, 1, |b| number_point(b, attrs, n, start, now));
            }
        }),
        // `Sum`: 1 data_points, 2 temporality, 3 is_monotonic.
        Data::Sum(points) => message(b, 7, |b| {
            for (attrs, n) in points {
                message(b, 1, |b| number_point(b, attrs, n, start, now));
            }
            uint(b, 2, 2);
            uint(b, 3, 1);
        }),
        Data::Histogram(points) => message(b, 9, |b| {
            for (attrs, h) in points {
                message(b, 1, |b| histogram_point(b, attrs, h, start, now));
            }
            uint(b, 2, 2);
        }),
    }
}

/// `NumberDataPoint`: 7 attributes, 2 start, 3 time, 4 as_double, 6 as_int
/// (sfixed64).
fn number_point(b: &mut Vec<u8>, attrs: &[KeyValue], n: &Number, start: u64, now: u64) {
    attributes(b, 7, attrs);
    fixed64(b, 2, start);
    fixed64(b, 3, now);
    match n {
        Number::Double(v) => double(b, 4, *v),
        Number::Int(v) => fixed64(b, 6, *v as u64),
    }
}

/// `HistogramDataPoint`: 9 attributes, 2 start, 3 time, 4 count (fixed64),
/// 5 sum, 6 bucket_counts (packed fixed64), 7 explicit_bounds (packed
/// double), 11 min, 12 max.
fn histogram_point(b: &mut Vec<u8>, attrs: &[KeyValue], h: &Histogram, start: u64, now: u64) {
    attributes(b, 9, attrs);
    fixed64(b, 2, start);
    fixed64(b, 3, now);
    fixed64(b, 4, h.count);
    double(b, 5, h.sum);
    tag(b, 6, LEN);
    varint(b, (h.counts.len() * 8) as u64);
    for c in &h.counts {
        b.extend_from_slice(&c.to_le_bytes());
    }
    tag(b, 7, LEN);
    varint(b, (h.bounds.len() * 8) as u64);
    for bound in h.bounds {
        b.extend_from_slice(&bound.to_bits().to_le_bytes());
    }
    if h.count > 0 {
        double(b, 11, h.min);
        double(b, 12, h.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Varints as protobuf writes them, and a nested length put in front
    /// of its message, longer than one byte when it must be.
    #[test]
    fn varints_and_nesting() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(varint_len(v), b.len(), "{v}");
        }
        let mut b = Vec::new();
        varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        let mut b = Vec::new();
        message(&mut b, 1, |b| string(b, 2, &"x".repeat(200)));
        assert_eq!(&b[..4], &[0x0a, 0xcb, 0x01, 0x12]);
        assert_eq!(b.len(), 1 + 2 + 1 + 2 + 200);
    }

    /// A request written around queued entries with the lengths worked out
    /// first is the one written by nesting, from one span to enough that
    /// the lengths take more bytes.
    #[test]
    fn traces_around_entries() {
        let resource = Resource {
            attributes: vec![("service.name".into(), Value::from("app"))],
        };
        for spans in [0, 1, 700] {
            let mut entries = Vec::new();
            for _ in 0..spans {
                message(&mut entries, 2, |b| string(b, 5, "GET"));
            }
            let mut nested = Vec::new();
            resource_and_scope(&mut nested, &resource, 1, |b| b.extend_from_slice(&entries));
            assert_eq!(traces_of_entries(&resource, &entries), nested, "{spans} spans");
        }
    }
}
