//! From the OTLP protobuf messages to the receiver's flat values
//! ([`super::model`]): ids to lowercase hex, `AnyValue`s to [`AttrValue`]s,
//! one [`ReceivedMetric`] per data point.

use super::model::{
    AttrValue, Attrs, MetricData, Number, Protocol, ReceivedMetric, ReceivedSpan, SpanEvent, SpanKind, SpanStatus,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, HistogramDataPoint, NumberDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::sync::Arc;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: Option<&AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value.as_ref()) {
        None => AttrValue::Empty,
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(any_value::Value::BytesValue(b)) => AttrValue::Bytes(b.clone()),
        Some(any_value::Value::ArrayValue(a)) => AttrValue::Array(a.values.iter().map(|v| value(Some(v))).collect()),
        Some(any_value::Value::KvlistValue(kv)) => AttrValue::Map(attrs(&kv.values)),
        // An index into a profile's string table: no value outside a profile.
        Some(any_value::Value::StringValueStrindex(_)) => AttrValue::Empty,
    }
}

fn attrs(kvs: &[KeyValue]) -> Attrs {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn resource_attrs(r: Option<&Resource>) -> Attrs {
    r.map(|r| attrs(&r.attributes)).unwrap_or_default()
}

fn scope_name(s: Option<&InstrumentationScope>) -> String {
    s.map(|s| s.name.clone()).unwrap_or_default()
}

/// Every span of an export, flattened.
pub(super) fn spans(req: &ExportTraceServiceRequest, protocol: Protocol) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        // One map for the export's spans, shared.
        let resource = Arc::new(resource_attrs(rs.resource.as_ref()));
        for ss in &rs.scope_spans {
            let scope = scope_name(ss.scope.as_ref());
            for s in &ss.spans {
                let status = s.status.as_ref();
                out.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: SpanKind::from_i32(s.kind),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    attributes: attrs(&s.attributes),
                    status_code: match status.map_or(0, |s| s.code) {
                        1 => SpanStatus::Ok,
                        2 => SpanStatus::Error,
                        _ => SpanStatus::Unset,
                    },
                    status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
                    events: s
                        .events
                        .iter()
                        .map(|e| SpanEvent {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attrs(&e.attributes),
                        })
                        .collect(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    protocol,
                });
            }
        }
    }
    out
}

fn number(p: &NumberDataPoint) -> Number {
    match p.value {
        Some(number_data_point::Value::AsInt(i)) => Number::Int(i),
        Some(number_data_point::Value::AsDouble(d)) => Number::Double(d),
        None => Number::Int(0),
    }
}

fn histogram(p: &HistogramDataPoint) -> MetricData {
    MetricData::Histogram {
        count: p.count,
        sum: p.sum,
        bucket_counts: p.bucket_counts.clone(),
        explicit_bounds: p.explicit_bounds.clone(),
        min: p.min,
        max: p.max,
    }
}

/// Every data point of an export, one entry each, in the order sent.
pub(super) fn metrics(req: &ExportMetricsServiceRequest, protocol: Protocol) -> Vec<ReceivedMetric> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let resource = Arc::new(resource_attrs(rm.resource.as_ref()));
        for sm in &rm.scope_metrics {
            let scope = scope_name(sm.scope.as_ref());
            for m in &sm.metrics {
                // (attributes, time, data) per point.
                let points: Vec<(Attrs, u64, MetricData)> = match &m.data {
                    Some(metric::Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|p| {
                            let data = MetricData::Sum {
                                value: number(p),
                                monotonic: s.is_monotonic,
                                temporality: s.aggregation_temporality,
                            };
                            (attrs(&p.attributes), p.time_unix_nano, data)
                        })
                        .collect(),
                    Some(metric::Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .map(|p| {
                            (
                                attrs(&p.attributes),
                                p.time_unix_nano,
                                MetricData::Gauge { value: number(p) },
                            )
                        })
                        .collect(),
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| (attrs(&p.attributes), p.time_unix_nano, histogram(p)))
                        .collect(),
                    Some(metric::Data::ExponentialHistogram(_)) => {
                        vec![(Attrs::new(), 0, MetricData::Other("exponentialHistogram".into()))]
                    }
                    Some(metric::Data::Summary(_)) => vec![(Attrs::new(), 0, MetricData::Other("summary".into()))],
                    None => Vec::new(),
                };
                out.extend(
                    points
                        .into_iter()
                        .map(|(attributes, time_unix_nano, data)| ReceivedMetric {
                            name: m.name.clone(),
                            unit: m.unit.clone(),
                            description: m.description.clone(),
                            attributes,
                            time_unix_nano,
                            data,
                            resource: resource.clone(),
                            scope: scope.clone(),
                            protocol,
                        }),
                );
            }
        }
    }
    out
}
