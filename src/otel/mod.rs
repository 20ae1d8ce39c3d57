//! OpenTelemetry traces and metrics over OTLP/HTTP, configured by the
//! standard `OTEL_*` variables and off unless an endpoint is set.
//!
//! Why not the `opentelemetry` SDK crates: the handler's hot path is a few
//! tens of microseconds of CPU, every one of them counted (BENCHMARKS.md,
//! "Telemetry export"), and the SDK builds and encodes each span's
//! attributes anew; its batch processor drops spans on a full queue without
//! a count a program can read. The handler records a fixed
//! handful of spans with fixed attributes, so it keeps them as plain
//! structs, queues them without waiting ([`exporter`]), and writes the two
//! OTLP messages it needs itself ([`proto`], [`json`]); the tests decode
//! what it sends with the official protobuf definitions.
//!
//! # Layout
//!
//! - `config`: the `OTEL_*` variables.
//! - `span`: spans, the current span of a task, the guard that records one.
//! - `metrics`: the instruments and their series.
//! - `exporter`: the bounded queue, the batches, the requests.
//! - `proto`, `json`: the OTLP encodings.
//! - `fixed`: the attributes spans of one kind on one target share,
//!   encoded once; `intern`: span names kept once.
//! - `table`: the lock-free, grow-only list those and the metric series
//!   are kept in.
//!
//! What the handler records, by the OpenTelemetry semantic conventions:
//! a server span per invocation (the child of the host's `traceparent`,
//! with the ids the log lines carry), a client span per Redis command try
//! (`db.system.name=redis`, the command's name, the node's address; never
//! a key or a value), and spans for a token refresh and its fetch, a
//! re-AUTH, a connection attempt and a maintenance notification.

mod config;
mod exporter;
pub(crate) mod fixed;
pub(crate) mod intern;
mod json;
mod metrics;
mod proto;
mod span;
mod table;

pub(crate) use exporter::{app_name, is_on, metrics as recorder, span_stats, Running};
pub(crate) use metrics::{REAUTHS, RECONNECTS, REDIRECTS, TOKEN_LIFETIME, TOKEN_REFRESHES};
pub(crate) use span::{detached, spawn, within, Kind, Span, SpanContext, Value};

use crate::trace_context::{new_span_id, new_trace_id, TraceContext};
use config::{Config, RootSampler, Sampler};

/// The instrumentation scope every span and metric is reported under.
const SCOPE_NAME: &str = "azure-redis-handler";
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The resource: what is reporting (service, cloud, instance).
#[derive(Debug, Clone, Default)]
pub(crate) struct Resource {
    pub attributes: Vec<(String, Value)>,
}

impl Resource {
    /// `service.name` is `OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`'
    /// own, else the app's name (`WEBSITE_SITE_NAME`); then the Azure
    /// Functions attributes, and `faas.max_memory` (bytes) and
    /// `cloud.region` where the platform says them.
    fn new(config: &Config, app_name: &str, instance: &str, get: impl Fn(&str) -> Option<String>) -> Self {
        let mut attributes: Vec<(String, Value)> = config
            .resource_attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        let mut set = |key: &str, value: Value| {
            attributes.retain(|(k, _)| k != key);
            attributes.push((key.to_owned(), value));
        };
        if let Some(name) = &config.service_name {
            set("service.name", name.clone().into());
        } else if !config.resource_attributes.iter().any(|(k, _)| k == "service.name") {
            set("service.name", app_name.to_owned().into());
        }
        set("service.version", SCOPE_VERSION.into());
        set("cloud.provider", "azure".into());
        set("cloud.platform", "azure_functions".into());
        set("faas.instance", instance.to_owned().into());
        if let Some(mb) = get("WEBSITE_MEMORY_LIMIT_MB").and_then(|v| v.trim().parse::<i64>().ok()) {
            set("faas.max_memory", Value::Int(mb * 1024 * 1024));
        }
        if let Some(region) = get("REGION_NAME").filter(|r| !r.is_empty()) {
            set("cloud.region", region.into());
        }
        set("telemetry.sdk.name", SCOPE_NAME.into());
        set("telemetry.sdk.language", "rust".into());
        set("telemetry.sdk.version", SCOPE_VERSION.into());
        Self { attributes }
    }
}

/// Starts export as the `OTEL_*` variables say (nothing when no endpoint
/// is set); the settings' problems are logged, one line each. Keep the
/// result and [`Running::shutdown`] it when the handler stops.
pub(crate) fn start(app_name: &str, instance: &str, extra_ca_file: Option<&std::path::Path>) -> Option<Running> {
    let config = Config::from_env();
    for warning in &config.warnings {
        tracing::warn!("telemetry: {warning}");
    }
    let resource = Resource::new(&config, app_name, instance, |k| std::env::var(k).ok());
    exporter::start(config, resource, app_name, extra_ca_file)
}

/// Adds one to `instrument`'s series of the attributes `attrs` builds
/// (only built when metrics are exported).
pub(crate) fn count(instrument: metrics::Instrument, attrs: impl FnOnce() -> Vec<span::KeyValue>) {
    if let Some(m) = exporter::metrics() {
        m.count(instrument, attrs());
    }
}

/// Whether a new trace (no parent) is recorded, by the sampler.
fn sample_root(trace_id: &[u8; 16]) -> bool {
    match exporter::config().map(|c| c.sampler) {
        None | Some(Sampler::AlwaysOff | Sampler::ParentBased(RootSampler::AlwaysOff)) => false,
        Some(Sampler::AlwaysOn | Sampler::ParentBased(RootSampler::AlwaysOn)) => true,
        Some(Sampler::Ratio(r) | Sampler::ParentBased(RootSampler::Ratio(r))) => ratio_keeps(trace_id, r),
    }
}

/// `traceidratio`: the trace's last 8 bytes, as a number, under the
/// ratio's share of them (every participant decides the same).
fn ratio_keeps(trace_id: &[u8; 16], ratio: f64) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) as f64) < ratio * u64::MAX as f64
}

/// The invocation's server span, with the ids its log lines carry: the
/// sampler decides (the caller's `sampled` flag, by default), and the
/// decision is written into `trace.flags` for the calls it makes.
pub(crate) fn server_span(trace: &mut TraceContext, name: impl Into<std::borrow::Cow<'static, str>>) -> Span {
    let Some(config) = exporter::config().filter(|_| exporter::tracing_on()) else {
        return Span::none();
    };
    let parent_sampled = trace.parent_span_id.map(|_| trace.flags & 1 == 1);
    let sampled = match (config.sampler, parent_sampled) {
        (Sampler::ParentBased(_), Some(parent)) => parent,
        _ => sample_root(&trace.trace_id),
    };
    trace.flags = (trace.flags & !1) | u8::from(sampled);
    if !sampled {
        return Span::none();
    }
    Span::with_ids(
        name,
        config.invocation_kind,
        trace.trace_id,
        trace.span_id,
        trace.parent_span_id,
        trace.tracestate.clone(),
    )
}

/// The span context an invocation's work runs under (unsampled ones
/// included, so their children are not recorded either).
pub(crate) fn invocation_context(trace: &TraceContext) -> Option<SpanContext> {
    exporter::tracing_on().then_some(SpanContext {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        sampled: trace.flags & 1 == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio sampler keeps about its share of random trace ids, and
    /// all or none at the ends.
    #[test]
    fn ratio_sampling() {
        let ids: Vec<[u8; 16]> = (0..10_000).map(|_| new_trace_id()).collect();
        let kept = ids.iter().filter(|id| ratio_keeps(id, 0.25)).count();
        assert!((2000..3000).contains(&kept), "{kept}");
        assert!(ids.iter().all(|id| ratio_keeps(id, 1.0)));
        assert!(!ids.iter().any(|id| ratio_keeps(id, 0.0)));
    }

    /// The resource names the service after the app unless told otherwise,
    /// and carries the Azure Functions attributes.
    #[test]
    fn resource_attributes() {
        let config = Config::from_lookup(|k| match k {
            "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=prod,cloud.provider=other".into()),
            _ => None,
        });
        let env = |k: &str| match k {
            "WEBSITE_MEMORY_LIMIT_MB" => Some("2048".to_owned()),
            _ => None,
        };
        let r = Resource::new(&config, "orders-api", "4b0e7c", env);
        let get = |k: &str| r.attributes.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("service.name"), Some("orders-api".to_owned().into()));
        assert_eq!(get("deployment.environment"), Some("prod".to_owned().into()));
        assert_eq!(get("cloud.provider"), Some("azure".into()));
        assert_eq!(get("cloud.platform"), Some("azure_functions".into()));
        assert_eq!(get("faas.instance"), Some("4b0e7c".to_owned().into()));
        assert_eq!(get("faas.max_memory"), Some(Value::Int(2048 * 1024 * 1024)));
        let named = Config::from_lookup(|k| (k == "OTEL_SERVICE_NAME").then(|| "checkout".into()));
        let r = Resource::new(&named, "orders-api", "i", |_| None);
        assert!(r
            .attributes
            .contains(&("service.name".into(), "checkout".to_owned().into())));
    }
}
