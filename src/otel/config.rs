//! The standard `OTEL_*` variables, read once into a typed [`Config`].
//!
//! As the OpenTelemetry specification asks of an SDK, a value that cannot
//! be used is not fatal: it is reported (one line each, in
//! [`Config::warnings`]) and the default taken, so a typo in a telemetry
//! setting never stops the function app. Export is on when an OTLP
//! endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the traces or
//! metrics one) and `OTEL_SDK_DISABLED` is not `true`.

use super::span::Kind;
use crate::secret::Secret;
use std::time::Duration;

/// How a signal's requests are encoded (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `http/protobuf`, the default: binary protobuf over HTTP.
    Protobuf,
    /// `http/json`: the OTLP JSON mapping over HTTP.
    Json,
}

impl Protocol {
    /// The `Content-Type` of a request body.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
}

/// Where and how one signal (traces or metrics) is sent.
#[derive(Debug, Clone)]
pub(crate) struct Signal {
    /// The full URL requests are posted to (`…/v1/traces`).
    pub url: String,
    pub protocol: Protocol,
    /// Sent with every request; values are often API keys, hence secret.
    pub headers: Vec<(String, Secret)>,
    /// Per request (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).
    pub timeout: Duration,
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// This fraction of trace ids (0 to 1).
    Ratio(f64),
    /// The caller's decision (the `sampled` flag of `traceparent`) when
    /// there is one, else the inner sampler's: the default is
    /// `parentbased_always_on`.
    ParentBased(RootSampler),
}

/// What a parent-based sampler does for a new trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RootSampler {
    /// Record it.
    AlwaysOn,
    /// Do not.
    AlwaysOff,
    /// Record this fraction of them.
    Ratio(f64),
}

/// The telemetry export the settings ask for.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Traces, unless off (no endpoint, or `OTEL_TRACES_EXPORTER=none`).
    pub traces: Option<Signal>,
    /// Metrics, unless off.
    pub metrics: Option<Signal>,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: Sampler,
    /// Spans that may wait for export (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048);
    /// past it they are dropped and counted.
    pub max_queue: usize,
    /// Spans per request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_batch: usize,
    /// The longest a span waits for export (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub schedule_delay: Duration,
    /// Between metric exports (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s).
    pub metric_interval: Duration,
    /// The invocation span's kind (`HANDLER_INVOCATION_SPAN_KIND`): a
    /// server span by default; `internal` when the host's own request
    /// telemetry goes to the same place, so a backend such as Application
    /// Insights does not count each invocation as two requests.
    pub invocation_kind: Kind,
    /// What could not be used, one sentence each, for the log.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the variables from the environment.
    pub(crate) fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get`.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut warnings = Vec::new();
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut signal = |name: &str, path: &str| {
            if disabled {
                return None;
            }
            signal(&get, name, path, &mut warnings)
        };
        let traces = signal("TRACES", "v1/traces");
        let metrics = signal("METRICS", "v1/metrics");
        let mut number = |key: &str, default: u64, min: u64| match get(key) {
            None => default,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= min => n,
                _ => {
                    warnings.push(format!(
                        "{key}={v} is not a whole number of at least {min}; using {default}"
                    ));
                    default
                }
            },
        };
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1) as usize;
        let max_batch = (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1) as usize).min(max_queue);
        let schedule_delay = Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000, 1));
        let metric_interval = Duration::from_millis(number("OTEL_METRIC_EXPORT_INTERVAL", 60_000, 100));
        let sampler = sampler(&get, &mut warnings);
        let invocation_kind = match get("HANDLER_INVOCATION_SPAN_KIND")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("server") => Kind::Server,
            Some("internal") => Kind::Internal,
            Some(other) => {
                warnings.push(format!(
                    "HANDLER_INVOCATION_SPAN_KIND={other} is not server or internal; using server"
                ));
                Kind::Server
            }
        };
        Self {
            traces,
            metrics,
            service_name: get("OTEL_SERVICE_NAME"),
            resource_attributes: get("OTEL_RESOURCE_ATTRIBUTES")
                .map(|v| key_values(&v, "OTEL_RESOURCE_ATTRIBUTES", &mut warnings))
                .unwrap_or_default(),
            sampler,
            max_queue,
            max_batch,
            schedule_delay,
            metric_interval,
            invocation_kind,
            warnings,
        }
    }

    /// Whether anything is exported.
    pub(crate) fn is_on(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some()
    }
}

/// One signal's settings: its own variable (`OTEL_EXPORTER_OTLP_TRACES_*`)
/// over the general one, as the specification orders them.
fn signal(get: &impl Fn(&str) -> Option<String>, name: &str, path: &str, warnings: &mut Vec<String>) -> Option<Signal> {
    let own = |what: &str| get(&format!("OTEL_EXPORTER_OTLP_{name}_{what}"));
    let either = |what: &str| own(what).or_else(|| get(&format!("OTEL_EXPORTER_OTLP_{what}")));
    let exporter = get(&format!("OTEL_{name}_EXPORTER")).unwrap_or_else(|| "otlp".into());
    let url = match (own("ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        // A signal's own endpoint is the whole URL; the general one a base.
        (Some(url), _) => url,
        (None, Some(base)) => format!("{}/{path}", base.trim_end_matches('/')),
        (None, None) => return None,
    };
    match exporter.to_ascii_lowercase().as_str() {
        "otlp" => {}
        "none" => return None,
        other => {
            warnings.push(format!(
                "OTEL_{name}_EXPORTER={other} is not supported (only otlp, or none): {} not exported; the Functions host \
                 already keeps stdout, so a console exporter would only repeat the log",
                name.to_ascii_lowercase()
            ));
            return None;
        }
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        warnings.push(format!(
            "the OTLP {} endpoint must be an http:// or https:// URL: {} not exported",
            name.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        ));
        return None;
    }
    let protocol = match either("PROTOCOL").as_deref() {
        None | Some("http/protobuf") => Protocol::Protobuf,
        Some("http/json") => Protocol::Json,
        Some(other) => {
            warnings.push(format!(
                "OTLP protocol {other} is not supported (http/protobuf or http/json; a collector's OTLP/HTTP port is \
                 usually 4318): {} not exported",
                name.to_ascii_lowercase()
            ));
            return None;
        }
    };
    if let Some(c) = either("COMPRESSION").filter(|c| c != "none") {
        warnings.push(format!("OTLP compression {c} is not supported; sending uncompressed"));
    }
    let mut headers = get("OTEL_EXPORTER_OTLP_HEADERS")
        .map(|v| key_values(&v, "OTEL_EXPORTER_OTLP_HEADERS", warnings))
        .unwrap_or_default();
    let own_key = format!("OTEL_EXPORTER_OTLP_{name}_HEADERS");
    for (k, v) in own("HEADERS")
        .map(|v| key_values(&v, &own_key, warnings))
        .unwrap_or_default()
    {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(&k));
        headers.push((k, v));
    }
    let timeout = match either("TIMEOUT") {
        None => Duration::from_secs(10),
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                warnings.push(format!(
                    "the OTLP timeout {v} is not a number of milliseconds; using 10000"
                ));
                Duration::from_secs(10)
            }
        },
    };
    Some(Signal {
        url,
        protocol,
        headers: headers.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        timeout,
    })
}

fn sampler(get: &impl Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> Sampler {
    let name = get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
    let mut ratio = || match get("OTEL_TRACES_SAMPLER_ARG") {
        None => 1.0,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER_ARG={v} is not a ratio from 0 to 1; using 1"
                ));
                1.0
            }
        },
    };
    match name.to_ascii_lowercase().as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::Ratio(ratio()),
        "parentbased_always_on" => Sampler::ParentBased(RootSampler::AlwaysOn),
        "parentbased_always_off" => Sampler::ParentBased(RootSampler::AlwaysOff),
        "parentbased_traceidratio" => Sampler::ParentBased(RootSampler::Ratio(ratio())),
        other => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={other} is not supported; using parentbased_always_on"
            ));
            Sampler::ParentBased(RootSampler::AlwaysOn)
        }
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C Baggage
/// format the specification gives these variables). A pair without `=`
/// is skipped with a warning that names the variable, not the value (a
/// header's value may be a key).
fn key_values(text: &str, var: &str, warnings: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push((percent_decode(k.trim()), percent_decode(v.trim()))),
            _ => warnings.push(format!("{var}: an entry is not key=value; skipped")),
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied(), bytes.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))
    }

    /// Nothing set: nothing exported, and nothing to warn about.
    #[test]
    fn off_without_an_endpoint() {
        let c = config(&[]);
        assert!(!c.is_on());
        assert!(c.warnings.is_empty());
        assert_eq!(c.sampler, Sampler::ParentBased(RootSampler::AlwaysOn));
        assert_eq!((c.max_queue, c.max_batch), (2048, 512));
    }

    /// The general endpoint is a base the signal paths are added to; a
    /// signal's own endpoint is used as it is, and its own protocol and
    /// headers win over the general ones.
    #[test]
    fn endpoints_protocols_and_headers() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://m.example/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%3D%3D, x-team = blue"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "API-KEY=own"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]);
        let traces = c.traces.expect("traces on");
        assert_eq!(traces.url, "http://collector:4318/v1/traces");
        assert_eq!(traces.protocol, Protocol::Json);
        assert_eq!(traces.timeout, Duration::from_millis(2500));
        let headers: Vec<(&str, &str)> = traces.headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(headers, [("x-team", "blue"), ("API-KEY", "own")]);
        let metrics = c.metrics.expect("metrics on");
        assert_eq!(metrics.url, "https://m.example/custom");
        assert_eq!(metrics.protocol, Protocol::Protobuf);
        assert_eq!(metrics.headers[0].1.expose(), "abc==");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    /// What cannot be used turns a signal off or takes the default, with a
    /// warning that never repeats a header's value.
    #[test]
    fn unusable_values_warn_and_fall_back() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_METRICS_EXPORTER", "console"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue-s3cr3t"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
        ]);
        assert!(c.traces.is_none() && c.metrics.is_none());
        assert_eq!(c.max_queue, 2048);
        assert_eq!(c.sampler, Sampler::ParentBased(RootSampler::AlwaysOn));
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(c.warnings.iter().all(|w| !w.contains("s3cr3t")), "{:?}", c.warnings);
    }

    /// `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` turn export off.
    #[test]
    fn disabled_and_none() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(!c.is_on());
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert!(c.traces.is_none() && c.metrics.is_some());
    }

    /// Samplers by name, with their ratio.
    #[test]
    fn samplers() {
        let s =
            |name: &str, arg: &str| config(&[("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", arg)]).sampler;
        assert_eq!(s("always_off", ""), Sampler::AlwaysOff);
        assert_eq!(s("traceidratio", "0.25"), Sampler::Ratio(0.25));
        assert_eq!(
            s("parentbased_traceidratio", "0.5"),
            Sampler::ParentBased(RootSampler::Ratio(0.5))
        );
        assert_eq!(s("traceidratio", "2"), Sampler::Ratio(1.0));
    }

    /// The invocation span is a server span unless told `internal`.
    #[test]
    fn invocation_span_kind() {
        assert_eq!(config(&[]).invocation_kind, Kind::Server);
        let c = config(&[("HANDLER_INVOCATION_SPAN_KIND", "Internal")]);
        assert_eq!(c.invocation_kind, Kind::Internal);
        let c = config(&[("HANDLER_INVOCATION_SPAN_KIND", "client")]);
        assert_eq!((c.invocation_kind, c.warnings.len()), (Kind::Server, 1));
    }

    /// Resource attributes are percent-decoded key=value pairs.
    #[test]
    fn resource_attributes() {
        let c = config(&[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%20b")]);
        assert_eq!(
            c.resource_attributes,
            [
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "a b".into())
            ]
        );
    }
}
