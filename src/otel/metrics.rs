//! Metrics: the instruments the handler records, kept as cumulative sums
//! and histograms in memory and read out at each export.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists
//! (`faas.invoke_duration`, `db.client.operation.duration`, in seconds);
//! the connection's own events are `azure_redis.*`. Every series is keyed
//! by a handful of low-cardinality attributes (function, status, command
//! name, node), found by a short linear scan under a lock: there are tens
//! of series, not thousands, and a scan of a few is cheaper than hashing.

use super::span::{KeyValue, Value};
use super::table::Table;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One instrument's name, unit and description, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instrument {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

/// Invocations, by function, trigger and status.
pub(crate) const INVOKE_DURATION: Instrument = Instrument {
    name: "faas.invoke_duration",
    unit: "s",
    description: "How long invocations took, by function, trigger and status code",
};
/// Redis commands, by command, node and error.
pub(crate) const COMMAND_DURATION: Instrument = Instrument {
    name: "db.client.operation.duration",
    unit: "s",
    description: "How long each Redis command try took, by command, node and error",
};
/// Token fetches, by outcome.
pub(crate) const TOKEN_REFRESHES: Instrument = Instrument {
    name: "azure_redis.token.refreshes",
    unit: "{refresh}",
    description: "Entra ID token fetches, by outcome (ok or failed)",
};
/// `AUTH` with a newer token on a live connection, by node and outcome.
pub(crate) const REAUTHS: Instrument = Instrument {
    name: "azure_redis.reauths",
    unit: "{auth}",
    description: "Re-authentications of live connections with a new token, by node and outcome",
};
/// Connections made to replace one that was lost, by node.
pub(crate) const RECONNECTS: Instrument = Instrument {
    name: "azure_redis.reconnects",
    unit: "{connection}",
    description: "Connections made after a node's first one (a lost, silent or handed-off connection replaced)",
};
/// `MOVED` and `ASK` answers followed.
pub(crate) const REDIRECTS: Instrument = Instrument {
    name: "azure_redis.redirects",
    unit: "{redirect}",
    description: "Cluster redirects followed, by kind (MOVED or ASK)",
};
/// Seconds until the token in use expires.
pub(crate) const TOKEN_LIFETIME: Instrument = Instrument {
    name: "azure_redis.token.remaining_lifetime",
    unit: "s",
    description: "Seconds until the Entra ID token in use expires",
};
/// Spans dropped because the export queue was full.
pub(crate) const SPANS_DROPPED: Instrument = Instrument {
    name: "azure_redis.telemetry.spans_dropped",
    unit: "{span}",
    description: "Spans dropped because the export queue was full (the collector slow or down)",
};

/// Bucket bounds for invocations (seconds): 0.5 ms to 10 s.
const INVOKE_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds for Redis commands (seconds): 0.1 ms to 10 s (a command
/// on a healthy cache takes well under a millisecond).
const COMMAND_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// A histogram with explicit bounds: bucket `i` counts values in
/// `(bounds[i-1], bounds[i]]`, the last one everything above.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// A number data point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Double(f64),
}

/// One instrument's data at an export.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    /// A cumulative, monotonic sum per series.
    Sum(Vec<(Vec<KeyValue>, Number)>),
    /// The value now per series.
    Gauge(Vec<(Vec<KeyValue>, Number)>),
    /// A cumulative histogram per series.
    Histogram(Vec<(Vec<KeyValue>, Histogram)>),
}

/// One instrument as exported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricData {
    pub instrument: Instrument,
    pub data: Data,
}

/// Reads a gauge's value at export time (`None`: nothing to report now).
pub(crate) type Observer = Box<dyn Fn() -> Option<f64> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct InvocationKey {
    function: &'static str,
    trigger: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CommandKey {
    operation: Cow<'static, str>,
    host: String,
    port: u16,
    error: Option<&'static str>,
}

/// A histogram every worker thread records into at once: atomic counts,
/// the sum and extremes in nanoseconds.
struct AtomicHistogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    min_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            min_ns: AtomicU64::new(u64::MAX),
            max_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, seconds: f64) {
        let ns = (seconds * 1e9) as u64;
        let bucket = self.bounds.partition_point(|b| *b < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        // Read first: most values change neither extreme, and a read does
        // not take the cache line from the other threads.
        if ns < self.min_ns.load(Ordering::Relaxed) {
            self.min_ns.fetch_min(ns, Ordering::Relaxed);
        }
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Histogram {
        let count = self.count.load(Ordering::Relaxed);
        let seconds = |ns: u64| ns as f64 / 1e9;
        Histogram {
            bounds: self.bounds,
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            count,
            sum: seconds(self.sum_ns.load(Ordering::Relaxed)),
            min: if count == 0 {
                f64::INFINITY
            } else {
                seconds(self.min_ns.load(Ordering::Relaxed))
            },
            max: if count == 0 {
                f64::NEG_INFINITY
            } else {
                seconds(self.max_ns.load(Ordering::Relaxed))
            },
        }
    }
}

/// Histograms by key, found without a lock (`super::table`): tens of
/// series in a process's life, one looked up for every invocation.
struct Series<K: 'static> {
    table: Table<K, Arc<AtomicHistogram>>,
    bounds: &'static [f64],
}

impl<K: Clone + 'static> Series<K> {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            table: Table::new(usize::MAX),
            bounds,
        }
    }

    /// Records `seconds` in the series `matches` finds, made by `make` if
    /// there is none yet.
    fn record(&self, matches: impl Fn(&K) -> bool, make: impl FnOnce() -> K, seconds: f64) {
        let make = || (make(), Arc::new(AtomicHistogram::new(self.bounds)));
        self.table.with(matches, make, |h| h.record(seconds));
    }

    fn snapshot(&self) -> Vec<(K, Histogram)> {
        self.table
            .entries()
            .iter()
            .map(|(k, h)| (k.clone(), h.snapshot()))
            .collect()
    }
}

/// Every instrument's state.
pub(crate) struct Metrics {
    /// The app's name: functions are `<app>/<function>` (`faas.name`).
    app: String,
    invocations: Series<InvocationKey>,
    commands: Series<CommandKey>,
    counters: Mutex<Vec<(Instrument, Vec<KeyValue>, u64)>>,
    gauges: Mutex<Vec<(Instrument, Observer)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// No series yet, for the app `app`.
    pub(crate) fn new(app: &str) -> Self {
        Self {
            app: app.to_owned(),
            invocations: Series::new(INVOKE_BOUNDS),
            commands: Series::new(COMMAND_BOUNDS),
            counters: Mutex::default(),
            gauges: Mutex::default(),
        }
    }

    /// One invocation of `function` that answered `status` after `seconds`.
    pub(crate) fn invocation(&self, function: &'static str, trigger: &'static str, status: u16, seconds: f64) {
        let key = InvocationKey {
            function,
            trigger,
            status,
        };
        self.invocations.record(|k| *k == key, || key.clone(), seconds);
    }

    /// One try of a Redis command on `host:port`.
    pub(crate) fn command(&self, operation: &str, host: &str, port: u16, error: Option<&'static str>, seconds: f64) {
        self.commands.record(
            |k| k.port == port && k.error == error && k.operation == operation && k.host == host,
            || CommandKey {
                operation: Cow::Owned(operation.to_owned()),
                host: host.to_owned(),
                port,
                error,
            },
            seconds,
        );
    }

    /// Adds one to a counter's series.
    pub(crate) fn count(&self, instrument: Instrument, attributes: Vec<KeyValue>) {
        let mut counters = lock(&self.counters);
        match counters
            .iter_mut()
            .find(|(i, a, _)| *i == instrument && *a == attributes)
        {
            Some((_, _, n)) => *n += 1,
            None => counters.push((instrument, attributes, 1)),
        }
    }

    /// Reports `observer`'s value as a gauge at every export.
    pub(crate) fn observe(&self, instrument: Instrument, observer: Observer) {
        lock(&self.gauges).push((instrument, observer));
    }

    /// Every instrument's data now; `extra` counters (read elsewhere, as
    /// the dropped spans) are added as sums.
    pub(crate) fn collect(&self, extra: &[(Instrument, u64)]) -> Vec<MetricData> {
        let mut out = Vec::new();
        let invocations: Vec<_> = self
            .invocations
            .snapshot()
            .into_iter()
            .map(|(k, h)| {
                let attrs = vec![
                    ("faas.name", Value::from(format!("{}/{}", self.app, k.function))),
                    ("faas.trigger", Value::from(k.trigger)),
                    ("http.response.status_code", Value::Int(i64::from(k.status))),
                ];
                (attrs, h)
            })
            .collect();
        if !invocations.is_empty() {
            out.push(MetricData {
                instrument: INVOKE_DURATION,
                data: Data::Histogram(invocations),
            });
        }
        let commands: Vec<_> = self
            .commands
            .snapshot()
            .into_iter()
            .map(|(k, h)| {
                let mut attrs = vec![
                    ("db.system.name", Value::from("redis")),
                    ("db.operation.name", Value::Str(k.operation)),
                    ("server.address", Value::from(k.host)),
                    ("server.port", Value::Int(i64::from(k.port))),
                ];
                if let Some(e) = k.error {
                    attrs.push(("error.type", Value::from(e)));
                }
                (attrs, h)
            })
            .collect();
        if !commands.is_empty() {
            out.push(MetricData {
                instrument: COMMAND_DURATION,
                data: Data::Histogram(commands),
            });
        }
        let mut sums: Vec<MetricData> = Vec::new();
        let counters = lock(&self.counters).clone();
        let extra = extra.iter().map(|(i, n)| (*i, Vec::new(), *n));
        for (instrument, attrs, n) in counters.into_iter().chain(extra) {
            let point = (attrs, Number::Int(n as i64));
            match sums.iter_mut().find(|m| m.instrument == instrument) {
                Some(MetricData {
                    data: Data::Sum(points),
                    ..
                }) => points.push(point),
                _ => sums.push(MetricData {
                    instrument,
                    data: Data::Sum(vec![point]),
                }),
            }
        }
        out.extend(sums);
        for (instrument, observer) in lock(&self.gauges).iter() {
            if let Some(v) = observer() {
                out.push(MetricData {
                    instrument: *instrument,
                    data: Data::Gauge(vec![(Vec::new(), Number::Double(v))]),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value on a bound falls in that bound's bucket; above the last, in
    /// the overflow bucket; count, sum, min and max follow.
    #[test]
    fn histogram_buckets() {
        let recorded = AtomicHistogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 3.0] {
            recorded.record(v);
        }
        let h = recorded.snapshot();
        assert_eq!(h.counts, [2, 2, 1]);
        assert_eq!((h.count, h.sum, h.min, h.max), (5, 8.0, 0.5, 3.0));
    }

    /// Series are kept apart by their attributes and exported with them;
    /// counters and gauges come out as sums and gauges.
    #[test]
    fn series_by_attributes() {
        let m = Metrics::new("orders");
        m.invocation("CacheItem", "http", 200, 0.002);
        m.invocation("CacheItem", "http", 200, 0.004);
        m.invocation("CacheItem", "http", 404, 0.001);
        let get = "GET";
        m.command(get, "10.0.0.1", 6380, None, 0.0003);
        m.command(get, "10.0.0.2", 6380, Some("MOVED"), 0.0002);
        m.count(REDIRECTS, vec![("redirect.kind", "MOVED".into())]);
        m.count(REDIRECTS, vec![("redirect.kind", "MOVED".into())]);
        m.count(REDIRECTS, vec![("redirect.kind", "ASK".into())]);
        m.observe(TOKEN_LIFETIME, Box::new(|| Some(42.0)));
        let out = m.collect(&[(SPANS_DROPPED, 7)]);
        let by = |name: &str| out.iter().find(|d| d.instrument.name == name).expect(name).data.clone();
        let Data::Histogram(inv) = by("faas.invoke_duration") else {
            panic!()
        };
        assert_eq!(inv.len(), 2);
        assert_eq!(inv[0].1.count, 2);
        assert!(inv[1].0.contains(&("http.response.status_code", Value::Int(404))));
        let Data::Histogram(cmds) = by("db.client.operation.duration") else {
            panic!()
        };
        assert_eq!(cmds.len(), 2);
        assert!(cmds[1].0.contains(&("error.type", Value::from("MOVED"))));
        let Data::Sum(redirects) = by("azure_redis.redirects") else {
            panic!()
        };
        assert_eq!(
            redirects.iter().map(|p| p.1.clone()).collect::<Vec<_>>(),
            [Number::Int(2), Number::Int(1)]
        );
        assert_eq!(
            by("azure_redis.telemetry.spans_dropped"),
            Data::Sum(vec![(vec![], Number::Int(7))])
        );
        assert_eq!(
            by("azure_redis.token.remaining_lifetime"),
            Data::Gauge(vec![(vec![], Number::Double(42.0))])
        );
    }
}
