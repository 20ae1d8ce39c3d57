//! Where `devhost start`'s handler sends its OpenTelemetry export: to an
//! OTLP receiver of devhost's own ([`crate::otlp::Receiver`]) unless the
//! app's settings name an endpoint, and, with `--traces`, each invocation's
//! spans drawn on the console as they arrive.
//!
//! The handler's exporter reads the SDKs' standard variables
//! (opentelemetry.io/docs/specs/otel/protocol/exporter): the endpoint, and
//! the batch span processor's and the metric reader's intervals, which
//! default to 5 s and 60 s, too slow for a local loop.

use crate::otlp::{waterfall, ReceivedSpan, Receiver};
use std::sync::Arc;
use std::time::Duration;

/// Settings that, when the app sets one, send the traces elsewhere.
pub const ENDPOINT_SETTINGS: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// Short intervals for the local loop, each set only when the app's
/// settings leave it unset: spans out within 200 ms of their end, metrics
/// every 5 s.
const LOCAL_INTERVALS: [(&str, &str); 2] = [
    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
];

/// How long a drawing waits for a root's children still in flight: until
/// nothing arrives for [`QUIET`], at most [`SETTLE_CAP`].
pub const QUIET: Duration = Duration::from_millis(100);
/// See [`QUIET`].
pub const SETTLE_CAP: Duration = Duration::from_millis(300);

/// Where the handler's telemetry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// To devhost's own receiver, with these variables for the handler.
    Own(Vec<(String, String)>),
    /// Where the app's settings say: the setting's name and value.
    Theirs(String, String),
}

/// The handler's telemetry destination given the app's settings (`lookup`:
/// local.settings.json Values, then the environment) and the endpoint of
/// devhost's receiver: the app's own endpoint wins.
pub fn destination(lookup: impl Fn(&str) -> Option<String>, receiver_endpoint: &str) -> Destination {
    if let Some((name, value)) = ENDPOINT_SETTINGS.iter().find_map(|n| Some((n, lookup(n)?))) {
        return Destination::Theirs(name.to_string(), value);
    }
    let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), receiver_endpoint.to_string())];
    for (name, value) in LOCAL_INTERVALS {
        if lookup(name).is_none() {
            env.push((name.to_string(), value.to_string()));
        }
    }
    Destination::Own(env)
}

/// Whether a span starts a drawing: an invocation (whose parent is the
/// caller's and not exported) or a background trace's root.
pub fn starts_drawing(s: &ReceivedSpan) -> bool {
    s.is_invocation() || s.parent_span_id.is_empty()
}

/// `text` with every line indented 4 spaces, as the console sets an
/// invocation's details under its line.
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// `--traces`: prints the waterfall of every invocation and background
/// trace as its root arrives, once its children have settled. Runs until
/// aborted.
pub async fn print_traces(receiver: Arc<Receiver>) {
    let mut seen = 0;
    loop {
        for root in receiver.next_spans(&mut seen).await.into_iter().filter(starts_drawing) {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                receiver.settle(QUIET, SETTLE_CAP).await;
                let spans = receiver.spans_of_trace(&root.trace_id);
                print!("{}", indent(&waterfall(&spans, &root.span_id)));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    /// With no endpoint in the settings the handler gets the receiver and
    /// the short intervals, except an interval the app sets itself; either
    /// endpoint setting sends everything to the app's endpoint instead.
    #[test]
    fn the_apps_endpoint_wins() {
        let own = |pairs: &[(&str, &str)]| destination(lookup(pairs), "http://127.0.0.1:4318");
        let env =
            |v: &[(&str, &str)]| Destination::Own(v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(
            own(&[]),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ])
        );
        assert_eq!(
            own(&[("OTEL_BSP_SCHEDULE_DELAY", "1000")]),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ])
        );
        for name in ENDPOINT_SETTINGS {
            assert_eq!(
                own(&[(name, "https://collector:4318")]),
                Destination::Theirs(name.into(), "https://collector:4318".into())
            );
        }
    }
}
