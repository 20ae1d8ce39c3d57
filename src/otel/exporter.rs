//! The exporter: spans wait in a bounded queue and go out in batches from
//! a task of their own; metrics go out at their interval. Nothing here is
//! on an invocation's path but [`record`]: the span's encoding into its
//! thread's buffer (under a lock only the exporter also takes), and (once
//! per batch) a wake-up.
//!
//! When the queue is full (the collector slow, down or hanging), new spans
//! are dropped and counted, never waited for: memory stays at the queue's
//! bound, and the count is exported as a metric and logged (once a
//! minute). One request is in flight per signal, bounded by the OTLP
//! timeout.

use super::config::{Config, Signal};
use super::metrics::{MetricData, Metrics, SPANS_DROPPED};
use super::span::{unix_nanos, SpanData};
use super::{json, proto, Resource};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The process's exporter, once [`start`] has run with export on.
static EXPORTER: OnceLock<Arc<Exporter>> = OnceLock::new();

/// How often, at most, a failing export or dropped spans are logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How long a connection to the collector may take; each export's timeout
/// (`OTEL_EXPORTER_OTLP_TIMEOUT`) bounds the whole exchange as well.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans waiting for export: one buffer per thread that records spans
/// (each thread locks only its own, so worker threads never wait for each
/// other; the exporter takes them all), bounded together by `queued`.
struct Queue {
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    /// Spans in all the shards.
    queued: AtomicUsize,
    /// Woken when a batch is full.
    ready: Notify,
    max: usize,
    batch: usize,
    dropped: AtomicU64,
    /// Spans the collector took (2xx).
    exported: AtomicU64,
    /// Spans in requests that failed (no answer, refused, not 2xx).
    failed: AtomicU64,
}

pub(super) struct Exporter {
    config: Config,
    resource: Resource,
    client: crate::http_client::Client,
    /// `WEBSITE_SITE_NAME`, for `faas.name` (`<app>/<function>`).
    app_name: String,
    /// When metrics began (cumulative sums start here).
    started: u64,
    queue: Option<Queue>,
    pub(super) metrics: Option<Metrics>,
}

/// Whether anything is exported (spans or metrics).
pub(crate) fn is_on() -> bool {
    EXPORTER.get().is_some()
}

/// Whether spans are exported (a check on the hot path: one atomic load).
pub(crate) fn tracing_on() -> bool {
    EXPORTER.get().is_some_and(|e| e.queue.is_some())
}

/// The metrics being recorded, when exported.
pub(crate) fn metrics() -> Option<&'static Metrics> {
    EXPORTER.get().and_then(|e| e.metrics.as_ref())
}

/// The app's name (`WEBSITE_SITE_NAME`), when exporting.
pub(crate) fn app_name() -> &'static str {
    EXPORTER.get().map_or("", |e| e.app_name.as_str())
}

/// The settings in use, when exporting.
pub(super) fn config() -> Option<&'static Config> {
    EXPORTER.get().map(|e| &e.config)
}

/// One thread's spans waiting for export, already encoded in the
/// protocol's form (`proto::span_entry`, `json::span_entry`). A span is
/// encoded on the thread that ends it and its box freed there at once:
/// the queue holds a couple of hundred bytes a span instead of the span
/// itself, nothing of it is copied again but into the request, and the
/// allocator gets the box back on the thread that took it (each of those
/// showed in the profile).
#[derive(Default)]
struct Shard {
    /// The entries, one after another.
    bytes: Vec<u8>,
    /// Where each entry ends in `bytes`.
    ends: Vec<usize>,
}

/// Threads past this many share one shard (a runtime has a few workers;
/// this only bounds the list if threads come and go).
const MAX_SHARDS: usize = 64;

thread_local! {
    /// This thread's shard, once it has recorded a span.
    static SHARD: std::cell::OnceCell<Arc<Mutex<Shard>>> = const { std::cell::OnceCell::new() };
}

impl Queue {
    /// This thread's shard, made and listed on its first span.
    fn shard(&self) -> Arc<Mutex<Shard>> {
        SHARD.with(|s| {
            s.get_or_init(|| {
                let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
                if shards.len() >= MAX_SHARDS {
                    return shards[0].clone();
                }
                let shard = Arc::new(Mutex::new(Shard::default()));
                shards.push(shard.clone());
                shard
            })
            .clone()
        })
    }

    /// Up to a batch of the spans waiting, their entries written into
    /// `entries` (emptied first), taken from the shards in turn (so no more
    /// than one batch is ever out of the queue's bound); gives how many.
    /// The caller keeps `entries` from one call to the next.
    fn take_batch(&self, entries: &mut Vec<u8>) -> usize {
        entries.clear();
        let mut taken = 0;
        let shards: Vec<Arc<Mutex<Shard>>> = self.shards.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for shard in shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let n = shard.ends.len().min(self.batch - taken);
            if n == 0 {
                continue;
            }
            let cut = shard.ends[n - 1];
            entries.extend_from_slice(&shard.bytes[..cut]);
            if n == shard.ends.len() {
                // All of them: the shard keeps its capacity.
                shard.bytes.clear();
                shard.ends.clear();
            } else {
                shard.bytes.drain(..cut);
                shard.ends.drain(..n);
                shard.ends.iter_mut().for_each(|end| *end -= cut);
            }
            taken += n;
            if taken == self.batch {
                break;
            }
        }
        self.queued.fetch_sub(taken, Ordering::Relaxed);
        taken
    }
}

/// Queues a finished span, or drops and counts it when the queue is full.
pub(crate) fn record(span: Box<SpanData>) {
    let Some((queue, protocol)) = EXPORTER
        .get()
        .and_then(|e| Some((e.queue.as_ref()?, e.config.traces.as_ref()?.protocol)))
    else {
        return;
    };
    let before = queue.queued.fetch_add(1, Ordering::Relaxed);
    if before >= queue.max {
        queue.queued.fetch_sub(1, Ordering::Relaxed);
        queue.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let push = |shard: &Mutex<Shard>| {
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        match protocol {
            super::config::Protocol::Protobuf => proto::span_entry(&mut shard.bytes, &span),
            super::config::Protocol::Json => json::span_entry(&mut shard.bytes, &span),
        }
        let end = shard.bytes.len();
        shard.ends.push(end);
    };
    SHARD.with(|s| match s.get() {
        Some(shard) => push(shard),
        None => push(&queue.shard()),
    });
    if before + 1 == queue.batch {
        queue.ready.notify_one();
    }
}

/// Stops the export tasks after a last export of what is waiting.
#[derive(Debug)]
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Sends what is left (within `budget`) and stops.
    pub(crate) async fn shutdown(self, budget: Duration) {
        self.stop.send_replace(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(budget, all).await.is_err() {
            tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "telemetry: the last export did not finish in time"
            );
        }
    }
}

/// The TLS configuration for HTTPS export: the system roots followed by
/// the CAs of `extra_ca_file` (`SSL_CERT_FILE`), as the credentials trust,
/// both read and parsed on the first HTTPS export rather than here.
/// Telemetry starts before the handler listens, and the roots (some 150
/// certificates) took a millisecond or more of every cold start with export
/// on; a collector over plain HTTP never needs them. A file that cannot be
/// read adds nothing, as when it was read at start-up (the Redis connection
/// refuses it at start-up already).
fn tls_config(extra_ca_file: Option<&Path>) -> rustls::ClientConfig {
    let extra_ca_file = extra_ca_file.map(Path::to_path_buf);
    crate::tls::lazy_https_client_config(move || roots(extra_ca_file.as_deref()))
}

/// The system roots followed by the CAs of `extra_ca_file`, if it can be
/// read.
fn roots(extra_ca_file: Option<&Path>) -> rustls::RootCertStore {
    let extra = crate::tls::extra_roots(extra_ca_file).ok().flatten();
    crate::tls::https_roots(extra.as_deref().unwrap_or_default())
}

/// Starts exporting as `config` says (in the current runtime); `None` when
/// export is off, or already started.
pub(crate) fn start(
    config: Config,
    resource: Resource,
    app_name: &str,
    extra_ca_file: Option<&Path>,
) -> Option<Running> {
    if !config.is_on() || EXPORTER.get().is_some() {
        return None;
    }
    let client = crate::http_client::Client::new(tls_config(extra_ca_file), CONNECT_TIMEOUT);
    let queue = config.traces.as_ref().map(|_| Queue {
        shards: Mutex::new(Vec::new()),
        queued: AtomicUsize::new(0),
        ready: Notify::new(),
        max: config.max_queue,
        batch: config.max_batch,
        dropped: AtomicU64::new(0),
        exported: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let metrics = config.metrics.as_ref().map(|_| Metrics::new(app_name));
    let exporter = Arc::new(Exporter {
        config,
        resource,
        client,
        app_name: app_name.to_owned(),
        started: unix_nanos(),
        queue,
        metrics,
    });
    EXPORTER.set(exporter.clone()).ok()?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    if exporter.config.traces.is_some() {
        tasks.push(tokio::spawn(export_spans(exporter.clone(), stopped.clone())));
        tasks.push(tokio::spawn(report_drops(exporter.clone(), stopped.clone())));
    }
    if exporter.config.metrics.is_some() {
        tasks.push(tokio::spawn(export_metrics(exporter.clone(), stopped)));
    }
    let c = &exporter.config;
    tracing::info!(
        traces = c.traces.as_ref().map_or("off", |s| s.url.as_str()),
        metrics = c.metrics.as_ref().map_or("off", |s| s.url.as_str()),
        "telemetry: exporting over OTLP"
    );
    Some(Running { stop, tasks })
}

/// Sends batches as they fill, and whatever waits every schedule delay.
async fn export_spans(exporter: Arc<Exporter>, mut stop: watch::Receiver<bool>) {
    let (Some(queue), Some(signal)) = (&exporter.queue, &exporter.config.traces) else {
        return;
    };
    let mut log = Warnings::default();
    let mut entries = Vec::new();
    loop {
        let stopping = tokio::select! {
            () = queue.ready.notified() => false,
            () = tokio::time::sleep(exporter.config.schedule_delay) => false,
            _ = stop.changed() => true,
        };
        loop {
            let n = queue.take_batch(&mut entries);
            if n == 0 {
                break;
            }
            let full = n == queue.batch;
            let body = match signal.protocol {
                super::config::Protocol::Protobuf => proto::traces_of_entries(&exporter.resource, &entries),
                super::config::Protocol::Json => json::traces_of_entries(&exporter.resource, &entries),
            };
            match send(&exporter.client, signal, body).await {
                Ok(()) => queue.exported.fetch_add(n as u64, Ordering::Relaxed),
                Err(e) => {
                    log.failed(&format!("{n} spans not exported: {e}"), &signal.url);
                    queue.failed.fetch_add(n as u64, Ordering::Relaxed)
                }
            };
            if !full {
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

/// Logs dropped spans (at most once a [`WARN_EVERY`]) while the exporter
/// may be stuck on a collector that does not answer.
async fn report_drops(exporter: Arc<Exporter>, mut stop: watch::Receiver<bool>) {
    let (Some(queue), Some(signal)) = (&exporter.queue, &exporter.config.traces) else {
        return;
    };
    let mut log = Warnings::default();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticks.tick() => log.dropped(queue.dropped.load(Ordering::Relaxed), queue.max, &signal.url),
            _ = stop.changed() => return,
        }
    }
}

/// The span export's counters, for Health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct SpanStats {
    /// Spans waiting in the queue now.
    pub queued: usize,
    /// The queue's bound (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Spans the collector took.
    pub exported: u64,
    /// Spans whose request failed.
    pub failed: u64,
    /// Spans dropped on a full queue.
    pub dropped: u64,
}

/// The span export's counters, when spans are exported.
pub(crate) fn span_stats() -> Option<SpanStats> {
    let queue = EXPORTER.get()?.queue.as_ref()?;
    Some(SpanStats {
        queued: queue.queued.load(Ordering::Relaxed),
        max_queue: queue.max,
        exported: queue.exported.load(Ordering::Relaxed),
        failed: queue.failed.load(Ordering::Relaxed),
        dropped: queue.dropped.load(Ordering::Relaxed),
    })
}

/// Sends every metric at each interval, and once more when stopping.
async fn export_metrics(exporter: Arc<Exporter>, mut stop: watch::Receiver<bool>) {
    let (Some(metrics), Some(signal)) = (&exporter.metrics, &exporter.config.metrics) else {
        return;
    };
    let mut log = Warnings::default();
    let mut ticks = tokio::time::interval(exporter.config.metric_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: skip it, nothing has happened yet.
    ticks.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.changed() => true,
        };
        let dropped = exporter.queue.as_ref().map_or(0, |q| q.dropped.load(Ordering::Relaxed));
        let data: Vec<MetricData> = metrics.collect(&[(SPANS_DROPPED, dropped)]);
        let now = unix_nanos();
        let body = match signal.protocol {
            super::config::Protocol::Protobuf => proto::metrics(&exporter.resource, exporter.started, now, &data),
            super::config::Protocol::Json => json::metrics(&exporter.resource, exporter.started, now, &data),
        };
        if let Err(e) = send(&exporter.client, signal, body).await {
            log.failed(&format!("metrics not exported: {e}"), &signal.url);
        }
        if stopping {
            return;
        }
    }
}

/// One OTLP/HTTP request: 2xx is success; anything else, or no answer
/// within the timeout, an error (the batch is not sent again).
async fn send(client: &crate::http_client::Client, signal: &Signal, body: Vec<u8>) -> Result<(), String> {
    use crate::http_client::{Error, Outgoing};
    use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
    let mut request = Outgoing::new(hyper::Method::POST, &signal.url, body.into()).map_err(|e| e.to_string())?;
    request
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(signal.protocol.content_type()));
    for (name, value) in &signal.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose()),
        ) else {
            return Err(format!("the header {name} cannot be sent"));
        };
        request.headers.insert(name, value);
    }
    match client.send(request, signal.timeout).await {
        Ok(r) if r.status.is_success() => Ok(()),
        Ok(r) => Err(format!("the collector answered {}", r.status)),
        Err(Error::Timeout(_)) => Err(format!("no answer within {:?}", signal.timeout)),
        Err(Error::Connect(_)) => Err("cannot connect to the collector".to_owned()),
        Err(e) => Err(crate::secret::redact(&e.to_string())),
    }
}

/// Export trouble, logged at most once a [`WARN_EVERY`].
#[derive(Default)]
struct Warnings {
    last_failure: Option<Instant>,
    failures: u64,
    reported_drops: u64,
    last_drop: Option<Instant>,
}

impl Warnings {
    fn failed(&mut self, what: &str, url: &str) {
        self.failures += 1;
        if self.last_failure.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.last_failure = Some(Instant::now());
            tracing::warn!(
                endpoint = url,
                failures = self.failures,
                "telemetry: export failed: {what}"
            );
        }
    }

    fn dropped(&mut self, total: u64, max: usize, url: &str) {
        if total > self.reported_drops && self.last_drop.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.last_drop = Some(Instant::now());
            self.reported_drops = total;
            tracing::warn!(
                dropped = total,
                queue = max,
                endpoint = url,
                "telemetry: spans dropped, the export queue was full (the collector is slow or down); invocations do not wait for it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starting telemetry reads no roots: the exporter's TLS configuration
    /// loads them on its first certificate (`crate::tls`'s lazy verifier).
    #[test]
    fn the_roots_are_not_read_when_export_starts() {
        crate::tls::install_crypto_provider();
        let config = format!("{:?}", tls_config(Some(Path::new("/no/such/ca.pem"))));
        assert!(
            config.contains("LazyVerifier { loaded: false"),
            "the exporter's TLS configuration: {config}"
        );
    }

    /// The roots it loads then: the system's and `SSL_CERT_FILE`'s; the
    /// system's alone when the file cannot be read.
    #[test]
    fn the_roots_are_the_systems_and_the_extra_files() {
        let pki = devhost::pki::Pki::generate().unwrap();
        let ca = std::env::temp_dir().join(format!("exporter-roots-{}.pem", std::process::id()));
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let system = roots(None).len();
        assert!(system > 0, "no system roots");
        assert_eq!(roots(Some(&ca)).len(), system + 1);
        assert_eq!(roots(Some(Path::new("/no/such/ca.pem"))).len(), system);
        std::fs::remove_file(ca).ok();
    }
}
