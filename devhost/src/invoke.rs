//! `devhost invoke`: send one function what the Functions host would send
//! it, straight to a running handler, and return the answer (the analogue
//! of `cargo lambda invoke`, or the host's `POST /admin/functions/<name>`
//! with the answer shown).
//!
//! A timer function gets its envelope with a real `TimerInfo` from its
//! schedule (or `--data`); another non-HTTP function gets `--data` as its
//! trigger value; an HTTP function gets the forwarded request, or with
//! `--envelope` (or when forwarding does not apply) the `Data.req` envelope.
//!
//! Every invocation carries a `traceparent` of a new trace (or the caller's
//! `-H traceparent`), so that [`trace_view`] can fetch its spans from the
//! running `devhost start`'s OTLP receiver and draw them.

use crate::app_manifest::{expand_settings, AppManifest, Function, Trigger};
use crate::functions_host::{
    host_traceparent, http_envelope_metadata, http_envelope_request, new_invocation_id, timer_info_with_status,
    HandlerClient, ScheduleStatus,
};
use crate::local::http::{query_pairs, str_pairs};
use crate::local::{routes::RouteTable, run_file};
use crate::local_settings::{LocalSettings, MergedSettings};
use crate::schedule::Schedule;
use anyhow::{bail, Context};
use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    /// The app root (to read the function's bindings).
    pub app_root: PathBuf,
    /// The function's name.
    pub function: String,
    /// The handler's base URL; default: the running `devhost start`'s handler.
    pub url: Option<String>,
    /// The trigger value (`TimerInfo` for a timer; required for other non-HTTP triggers).
    pub data: Option<Value>,
    /// Timer: `IsPastDue: true`.
    pub past_due: bool,
    /// HTTP: the method (default: the first allowed, else GET).
    pub method: Option<String>,
    /// HTTP: path and query (default: the route, when it has no parameters).
    pub path: Option<String>,
    /// HTTP: the body.
    pub body: Option<String>,
    /// HTTP: extra headers.
    pub headers: Vec<(String, String)>,
    /// HTTP: send the `Data.req` envelope even when forwarding applies.
    pub envelope: bool,
}

/// The handler's answer.
#[derive(Debug, Clone)]
pub struct InvokeAnswer {
    /// What was sent, e.g. `POST http://127.0.0.1:4000/CacheHealthCheck`.
    pub sent: String,
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// How long the handler took.
    pub elapsed: Duration,
    /// The `traceparent` sent: `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
}

impl InvokeAnswer {
    /// The body, pretty-printed when it is JSON.
    pub fn body_text(&self) -> String {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

/// Sends the invocation and returns the answer.
pub async fn invoke(req: &InvokeRequest) -> anyhow::Result<InvokeAnswer> {
    let manifest = AppManifest::load(&req.app_root)?;
    let Some(f) = manifest.function(&req.function) else {
        let names: Vec<&str> = manifest.functions.iter().map(|f| f.name.as_str()).collect();
        bail!(
            "no function named {:?}; the app has: {}",
            req.function,
            names.join(", ")
        );
    };
    let url = match &req.url {
        Some(u) => u.clone(),
        None => run_file::read(&req.app_root)?.handler_url,
    };
    let client = HandlerClient::new(url)?;
    let id = new_invocation_id();
    let traceparent = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        .map_or_else(host_traceparent, |(_, v)| v.clone());
    let started = Instant::now();
    let (sent, rsp) = match &f.trigger {
        Trigger::Timer(t) => {
            let data = match &req.data {
                Some(d) => d.clone(),
                None => timer_payload(&req.app_root, &t.schedule, t.use_monitor, req.past_due),
            };
            let rsp = client
                .invoke_traced(&id, &f.name, json!({ &t.binding: data }), json!({}), &traceparent)
                .await;
            (format!("POST {}/{}", client.base_url(), f.name), rsp)
        }
        Trigger::Other { binding, kind } => {
            let data = req
                .data
                .clone()
                .with_context(|| format!("{} is a {kind}: pass its value with --data", f.name))?;
            let rsp = client
                .invoke_traced(&id, &f.name, json!({ binding: data }), json!({}), &traceparent)
                .await;
            (format!("POST {}/{}", client.base_url(), f.name), rsp)
        }
        Trigger::Http(_) => http(&manifest, f, req, &client, &id, &traceparent).await?,
    };
    let rsp = rsp.with_context(|| format!("{sent}: no answer (is the handler running?)"))?;
    let status = rsp.status().as_u16();
    let body = rsp.bytes().await?.to_vec();
    Ok(InvokeAnswer {
        sent,
        status,
        body,
        elapsed: started.elapsed(),
        traceparent,
    })
}

/// A `TimerInfo` as the host would send it now: the schedule's previous and
/// next occurrences as `Last`/`Next`, or a null status when the host keeps
/// none (`useMonitor: false`, sub-minute schedules, unreadable schedule).
fn timer_payload(app_root: &std::path::Path, schedule: &str, use_monitor: Option<bool>, past_due: bool) -> Value {
    let settings = MergedSettings::merge(&LocalSettings::load(app_root).unwrap_or_default(), |k| {
        std::env::var(k).ok()
    });
    let status = (|| -> anyhow::Result<Option<ScheduleStatus>> {
        let s = Schedule::parse(&expand_settings(schedule, |k| settings.get(k))?)?;
        if !use_monitor.unwrap_or(true) || s.is_sub_minute() {
            return Ok(None);
        }
        let now = Utc::now();
        let next = s.next_after(now)?;
        let last = s.prev_before(now)?;
        let t = |d: chrono::DateTime<Utc>| time::OffsetDateTime::from_unix_timestamp(d.timestamp()).ok();
        Ok(Some(ScheduleStatus {
            last: t(last),
            next: t(next).context("time out of range")?,
            last_updated: t(last).context("time out of range")?,
        }))
    })();
    let status = status.unwrap_or_else(|e| {
        eprintln!("devhost: ScheduleStatus left null: {e:#}");
        None
    });
    timer_info_with_status(past_due, status.as_ref())
}

async fn http(
    manifest: &AppManifest,
    f: &Function,
    req: &InvokeRequest,
    client: &HandlerClient,
    id: &str,
    traceparent: &str,
) -> anyhow::Result<(String, reqwest::Result<reqwest::Response>)> {
    let Trigger::Http(t) = &f.trigger else {
        unreachable!("checked by the caller")
    };
    let method = match &req.method {
        Some(m) => m.to_ascii_uppercase(),
        None => t
            .methods
            .as_ref()
            .and_then(|m| m.first().cloned())
            .unwrap_or_else(|| "GET".into()),
    };
    let path = match &req.path {
        Some(p) => p.clone(),
        None if t.route.contains('{') => {
            bail!(
                "{} has route parameters: pass --path {}",
                f.name,
                manifest.http_path(&t.route)
            )
        }
        None => manifest.http_path(&t.route),
    };
    let (bare, raw_query) = path.split_once('?').unwrap_or((&path, ""));
    let Some(found) = RouteTable::new(manifest)
        .find(&method, bare)
        .filter(|m| m.function == f.name)
    else {
        bail!(
            "{method} {bare} is not a route of {} ({:?}, methods {:?})",
            f.name,
            t.route,
            t.methods
        );
    };
    if manifest.host.forwarding && t.forwardable && !req.envelope {
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            headers.append(HeaderName::try_from(k.as_str())?, HeaderValue::try_from(v.as_str())?);
        }
        headers.insert("traceparent", HeaderValue::try_from(traceparent)?);
        let body = req.body.clone().map(String::into_bytes);
        let rsp = client.forward_as(id, method.parse()?, &path, headers, body).await;
        return Ok((format!("{method} {}{path}", client.base_url()), rsp));
    }
    let query = query_pairs(raw_query);
    let (qs, hs, ps) = (str_pairs(&query), str_pairs(&req.headers), str_pairs(&found.params));
    let url = format!("{}{path}", client.base_url());
    let data = json!({ &t.binding: http_envelope_request(&method, &url, &qs, &hs, &ps, req.body.as_deref()) });
    let rsp = client
        .invoke_traced(id, &f.name, data, http_envelope_metadata(&qs, &hs, &ps), traceparent)
        .await;
    Ok((format!("POST {}/{} (envelope)", client.base_url(), f.name), rsp))
}

/// How long [`trace_view`] waits for the invocation's spans: the handler's
/// batch goes out within 200 ms of the span's end under `devhost start`.
const TRACE_WAIT: Duration = Duration::from_secs(3);

/// The waterfall of the invocation `answer` reports, from the running
/// `devhost start`'s receiver, or one line saying why there is none (a
/// handler given by `--url` that is not that run's, a run whose app
/// exports elsewhere, no spans in time).
pub async fn trace_view(req: &InvokeRequest, answer: &InvokeAnswer) -> String {
    let mut parts = answer.traceparent.split('-');
    let (Some(trace_id), Some(parent)) = (parts.nth(1), parts.next()) else {
        return format!("(no trace view: traceparent {:?} does not parse)\n", answer.traceparent);
    };
    let run = match run_file::read(&req.app_root) {
        Ok(run)
            if req
                .url
                .as_deref()
                .is_none_or(|u| u.trim_end_matches('/') == run.handler_url) =>
        {
            run
        }
        _ => {
            return "(no trace view: the handler is not a running devhost start's, whose receiver has the spans)\n"
                .into()
        }
    };
    let spans = match crate::local::traces::fetch(&run.host_url, trace_id, TRACE_WAIT).await {
        Ok(spans) => spans,
        Err(e) => return format!("(no trace view: {e:#})\n"),
    };
    let invocation = |s: &&crate::otlp::ReceivedSpan| s.is_invocation();
    let root = spans
        .iter()
        .filter(invocation)
        .find(|s| s.parent_span_id == parent)
        .or_else(|| spans.iter().find(invocation));
    match root {
        Some(root) => crate::otlp::waterfall(&spans, &root.span_id),
        None => format!(
            "(no trace view: no invocation span of trace {trace_id} arrived within {} s; does the handler export OTLP?)\n",
            TRACE_WAIT.as_secs()
        ),
    }
}
