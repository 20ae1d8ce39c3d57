//! The local host's HTTP front: `http://127.0.0.1:<port>/<routePrefix>/...`
//! served as the Functions host serves it, plus the host's own
//! `GET /admin/host/status` and `POST /admin/functions/<name>`.
//!
//! Follows docs/azure.md "The Functions host and a custom handler", in the
//! mode host.json picks ([`HttpMode`]) for a function with exactly one
//! httpTrigger and one http out: with `enableProxyingHttpRequest` (which
//! wins when both flags are set) the host's YARP proxy streams the request
//! and the answer (`proxy.rs`); with `enableForwardingHttpRequest`
//! (legacy) the handler gets the original request (path with prefix, query
//! with repeated keys comma-joined, all headers plus invocation id and host
//! version, the body only when Content-Length > 0) and its answer goes back
//! as is. Any other HTTP function, or either without a flag, gets the
//! envelope (`Data.req`) and answers in `Outputs.<out binding>` (or
//! `ReturnValue` for `$return`). Function keys are not checked, as with
//! `func start`.

use super::console::{self, Outcome};
use super::routes::RouteMatch;
use super::state::HostState;
use crate::app_manifest::{Function, HttpMode, HttpTrigger, Trigger};
use crate::functions_host::{http_envelope_metadata, http_envelope_request, new_invocation_id, HandlerClient};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// Largest request body accepted (the host's limit is 100 MB).
const MAX_BODY: usize = 100 * 1024 * 1024;

/// Hop-by-hop headers, never passed through.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The local host's routes.
pub fn router(shared: Arc<HostState>) -> Router {
    Router::new()
        .route("/admin/host/status", get(host_status))
        .route("/admin/functions/{name}", post(admin_invoke))
        .route("/admin/devhost/maintenance/{play}", post(maintenance))
        .fallback(any)
        .with_state(shared)
}

async fn host_status() -> Json<Value> {
    Json(json!({ "state": "Running", "version": crate::functions_host::HOST_VERSION }))
}

/// The admin API's manual run of a non-HTTP function: 202 at once, the
/// invocation printed when it ends.
async fn admin_invoke(State(s): State<Arc<HostState>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(f) = s.manifest.function(&name).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no function named {name}\n")).into_response();
    };
    let input = serde_json::from_slice::<Value>(&body).ok().map(|v| v["input"].clone());
    match &f.trigger {
        Trigger::Http(_) => (StatusCode::BAD_REQUEST, "HTTP functions are called at their URL\n").into_response(),
        Trigger::Timer(_) => {
            if let Some(t) = s.timers.iter().find(|t| t.function == f.name).cloned() {
                tokio::spawn(async move { t.fire(&s.handler, &s.log, "timer (admin)", None).await });
            }
            StatusCode::ACCEPTED.into_response()
        }
        Trigger::Other { binding, .. } => {
            let data = json!({ binding: input.unwrap_or(Value::Null) });
            tokio::spawn(async move {
                let (id, started) = (new_invocation_id(), Instant::now());
                let outcome = match s.handler.invoke_as(&id, &f.name, data, json!({})).await {
                    Ok(r) => Outcome::Status(r.status().as_u16()),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                s.record(&f.name, "(admin)", outcome, started, &id);
            });
            StatusCode::ACCEPTED.into_response()
        }
    }
}

/// `devhost maintenance <play>`: plays it against the built-in cache and
/// answers its steps when done.
async fn maintenance(State(s): State<Arc<HostState>>, Path(play): Path<String>) -> Response {
    let Some(play) = super::maintenance::Play::parse(&play) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no maintenance named {play:?}: restart, failover or moving\n"),
        )
            .into_response();
    };
    let Some(local) = s.local.clone() else {
        return (
            StatusCode::CONFLICT,
            "maintenance is played against the built-in cache; this run uses a real one\n",
        )
            .into_response();
    };
    match super::maintenance::play(&local, play).await {
        Ok(steps) => Json(json!({ "steps": steps })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}

async fn any(State(s): State<Arc<HostState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(RouteMatch { function, params }) = s.routes.find(req.method().as_str(), &path) else {
        if path == "/" && req.method() == Method::GET {
            let page = "<html><body><h1>Your Functions 4.0 app is up and running (devhost)</h1></body></html>";
            return ([(header::CONTENT_TYPE, "text/html")], page).into_response();
        }
        return StatusCode::NOT_FOUND.into_response();
    };
    let f = s.manifest.function(&function).expect("routes come from the manifest");
    let Trigger::Http(trigger) = &f.trigger else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let what = format!("{} {path}", req.method());
    let id = new_invocation_id();
    let started = Instant::now();
    let mode = match trigger.forwardable {
        true => s.manifest.host.http_mode,
        false => HttpMode::Envelope,
    };
    if mode == HttpMode::Proxying {
        return super::proxy::proxy(&s, &f.name, what, id, started, req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let has_body = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let body = has_body.then(|| bytes.to_vec());
    let query = query_pairs(parts.uri.query().unwrap_or(""));
    let call = Call {
        id: &id,
        method: &parts.method,
        path: &path,
        query: &query,
        headers: &parts.headers,
        params: &params,
        body,
    };
    let result = match mode {
        HttpMode::Forwarding => forward(&s.handler, call).await,
        _ => via_envelope(&s.handler, f, trigger, call).await,
    };
    match result {
        Ok(rsp) => {
            s.record(&f.name, &what, Outcome::Status(rsp.status().as_u16()), started, &id);
            rsp
        }
        Err(e) => s.failed(&f.name, &what, &e, started, &id),
    }
}

/// One incoming request, parsed.
struct Call<'a> {
    id: &'a str,
    method: &'a Method,
    path: &'a str,
    query: &'a [(String, String)],
    headers: &'a HeaderMap,
    params: &'a [(String, String)],
    body: Option<Vec<u8>>,
}

/// Query pairs with repeated names comma-joined, first-seen order.
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            None => out.push((k.into_owned(), v.into_owned())),
        }
    }
    out
}

/// Borrowed `(name, value)` pairs, as the envelope builders take them.
pub fn str_pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn passes(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str()) && name != header::HOST && name != header::CONTENT_LENGTH
}

async fn forward(handler: &HandlerClient, c: Call<'_>) -> anyhow::Result<Response> {
    let mut pq = c.path.to_string();
    if !c.query.is_empty() {
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(c.query)
            .finish();
        pq = format!("{pq}?{q}");
    }
    let mut headers = HeaderMap::new();
    for (k, v) in c.headers.iter().filter(|(k, _)| passes(k)) {
        headers.append(k, v.clone());
    }
    let rsp = handler.forward_as(c.id, c.method.clone(), &pq, headers, c.body).await?;
    let mut out = Response::builder().status(rsp.status());
    for (k, v) in rsp.headers().iter().filter(|(k, _)| passes(k)) {
        out = out.header(k, v);
    }
    Ok(out.body(Body::from(rsp.bytes().await?))?)
}

async fn via_envelope(handler: &HandlerClient, f: &Function, t: &HttpTrigger, c: Call<'_>) -> anyhow::Result<Response> {
    let hdrs: Vec<(String, String)> = c
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let host = c
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = format!("http://{host}{}", c.path);
    let body = c.body.map(|b| String::from_utf8_lossy(&b).into_owned());
    let (qr, hr, pr) = (str_pairs(c.query), str_pairs(&hdrs), str_pairs(c.params));
    let req = http_envelope_request(c.method.as_str(), &url, &qr, &hr, &pr, body.as_deref());
    let meta = http_envelope_metadata(&qr, &hr, &pr);
    let rsp = handler
        .invoke_as(c.id, &f.name, json!({ &t.binding: req }), meta)
        .await?;
    let status = rsp.status();
    let answer: Value = rsp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "the handler answered {status}: {answer}");
    let logs: Vec<String> = answer["Logs"]
        .as_array()
        .map(|l| l.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    console::logs(&f.name, &logs);
    let res = match t.out_binding.as_deref() {
        Some("$return") | None => &answer["ReturnValue"],
        Some(name) => &answer["Outputs"][name],
    };
    http_output(res)
}

/// Turns an http output binding's value (`{"statusCode", "body", "headers"}`) into a response.
fn http_output(res: &Value) -> anyhow::Result<Response> {
    let code = match &res["statusCode"] {
        Value::Number(n) => n.as_u64().unwrap_or(200),
        Value::String(s) => s.parse().unwrap_or(200),
        _ => 200,
    };
    let mut out = Response::builder().status(u16::try_from(code)?);
    if let Some(h) = res["headers"].as_object() {
        for (k, v) in h {
            out = out.header(k.as_str(), v.as_str().map_or_else(|| v.to_string(), String::from));
        }
    }
    let body = match &res["body"] {
        Value::Null => Vec::new(),
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    Ok(out.body(Body::from(body))?)
}
