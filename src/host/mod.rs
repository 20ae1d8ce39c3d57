//! The Functions host's custom-handler protocol, typed.
//!
//! For non-HTTP triggers, and for HTTP functions when the host does not
//! forward the request, the host sends `POST /<FunctionName>` with an
//! [`InvocationRequest`] and expects an [`InvocationResponse`] (docs/azure.md,
//! "The Functions host and a custom handler"). Strings and numbers inside
//! `Data` and `Metadata` arrive JSON-encoded a second time, so binding values
//! are read leniently through [`binding`]. With every request the host
//! sends its invocation id in a header (`invocation_id`). (The adapter that
//! answers the envelope sits next to the router: `router/envelope.rs`.)

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The body of `POST /<FunctionName>`.
#[derive(Debug, Clone, Deserialize)]
pub struct InvocationRequest {
    /// Trigger and input binding values by binding name.
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    /// Trigger metadata, including `sys` (`MethodName`, `UtcNow`, `RandGuid`).
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// The answer to an invocation: output bindings, log lines, return value.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct InvocationResponse {
    /// Output binding values by binding name (case-sensitive).
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Lines the host logs at Information on the invocation's logger
    /// (dropped by the host when the answer is not 2xx).
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// The function's return value (`$return` binding).
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

/// A timer trigger's value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TimerInfo {
    /// The schedule (`{"AdjustForDST": true}`), as the host sends it.
    #[serde(rename = "Schedule", default)]
    pub schedule: Option<Value>,
    /// Last/next run; null with `useMonitor: false`, frequent schedules, local runs.
    #[serde(rename = "ScheduleStatus", default)]
    pub schedule_status: Option<ScheduleStatus>,
    /// Whether this run is late. Required: the host always sends it, and it
    /// is what tells a timer value from any other object.
    #[serde(rename = "IsPastDue")]
    pub is_past_due: bool,
}

/// When the timer last ran and runs next.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ScheduleStatus {
    /// Last run (`0001-01-01T00:00:00` before the first).
    #[serde(rename = "Last", default)]
    pub last: Option<String>,
    /// When the next run is due, as the host computed it from the schedule.
    #[serde(rename = "Next", default)]
    pub next: Option<String>,
    /// When this status was last written.
    #[serde(rename = "LastUpdated", default)]
    pub last_updated: Option<String>,
}

/// An HTTP trigger's value when the host sends the envelope (`Data.req`).
#[derive(Debug, Clone, Deserialize)]
pub struct HttpRequestData {
    /// The original URL, scheme and host included.
    #[serde(rename = "Url")]
    pub url: String,
    /// `GET`, `PUT`, … as the caller sent it.
    #[serde(rename = "Method")]
    pub method: String,
    /// The query string, one entry per parameter name.
    #[serde(rename = "Query", default)]
    pub query: Map<String, Value>,
    /// Headers, each a list of values (a plain string is accepted too).
    #[serde(rename = "Headers", default)]
    pub headers: Map<String, Value>,
    /// The values of the route template's `{name}` segments.
    #[serde(rename = "Params", default)]
    pub params: Map<String, Value>,
    /// The body, present only when the request had one.
    #[serde(rename = "Body", default)]
    pub body: Option<Value>,
}

/// An HTTP output binding's value (`Outputs.res`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct HttpResponseData {
    /// The HTTP status the host answers the caller with.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// The body, as text.
    pub body: String,
    /// Headers the host adds to its answer.
    pub headers: BTreeMap<String, String>,
}

/// Parses the body of `POST /<FunctionName>`; the error is a short
/// sentence for the caller (no input echoed back beyond the parser's words).
pub fn parse_invocation(body: &[u8]) -> Result<InvocationRequest, String> {
    serde_json::from_slice(body).map_err(|e| {
        let msg: String = e.to_string().chars().take(200).collect();
        format!("the invocation body is not a host envelope: {msg}")
    })
}

/// Reads a binding value: by `name` when given and present, else the first
/// value that has the expected shape. Values encoded a second time as JSON
/// strings are decoded first.
pub fn binding<T: DeserializeOwned>(data: &Map<String, Value>, name: Option<&str>) -> Option<T> {
    let decode = |v: &Value| -> Option<T> {
        match v {
            Value::String(s) => serde_json::from_str::<T>(s).ok(),
            other => T::deserialize(other).ok(),
        }
    };
    if let Some(v) = name.and_then(|n| data.get(n)) {
        return decode(v);
    }
    data.values().find_map(decode)
}

impl HttpRequestData {
    /// The path and query of the original URL (`/api/cache/k?ttl=5`).
    pub fn path_and_query(&self) -> String {
        let after_scheme = self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest);
        let path = match after_scheme.find('/') {
            Some(i) if self.url.contains("://") => &after_scheme[i..],
            _ if self.url.starts_with('/') => self.url.as_str(),
            _ => "/",
        };
        if path.contains('?') || self.query.is_empty() {
            return path.to_owned();
        }
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(&value_text(v))))
            .collect();
        format!("{path}?{}", query.join("&"))
    }

    /// Header name/value pairs, a list value giving one pair per item.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            match value {
                Value::Array(items) => out.extend(items.iter().map(|v| (name.clone(), value_text(v)))),
                other => out.push((name.clone(), value_text(other))),
            }
        }
        out
    }

    /// The body's bytes: a string as is, anything else as JSON text.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes a query component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers that may carry the host's invocation id, in the order they
/// are read: the host's own, then the one its proxy adds.
/// (Header names rather than strings: a lookup by a string parses it first.)
const INVOCATION_ID_HEADERS: [axum::http::HeaderName; 2] = [
    axum::http::HeaderName::from_static("x-azure-functions-invocationid"),
    axum::http::HeaderName::from_static("x-ms-invocation-id"),
];

/// The invocation id: the first of [`INVOCATION_ID_HEADERS`] with a usable
/// value, at most 64 characters; empty when none has one.
pub(crate) fn invocation_id(headers: &axum::http::HeaderMap) -> &str {
    InvocationHeaders::of(headers).id
}

/// What an invocation reads from its request's headers, found in one pass
/// over them: a lookup by name hashes the name, and the three lookups this
/// stands for were about 2% of the instructions of a `GET`.
pub(crate) struct InvocationHeaders<'a> {
    /// [`invocation_id`].
    pub id: &'a str,
    /// The first `traceparent`, as `HeaderMap::get` finds it.
    pub traceparent: Option<&'a axum::http::HeaderValue>,
}

impl<'a> InvocationHeaders<'a> {
    pub(crate) fn of(headers: &'a axum::http::HeaderMap) -> Self {
        // The first usable value of each name in `INVOCATION_ID_HEADERS`.
        let mut ids: [Option<&str>; 2] = [None, None];
        let mut traceparent = None;
        for (name, value) in headers {
            if let Some(i) = INVOCATION_ID_HEADERS.iter().position(|h| h == name) {
                if ids[i].is_none() {
                    ids[i] = value.to_str().ok().map(str::trim).filter(|v| !v.is_empty());
                }
            } else if traceparent.is_none() && name == crate::trace_context::TRACEPARENT {
                traceparent = Some(value);
            }
        }
        let id = ids[0].or(ids[1]).unwrap_or("");
        Self {
            id: id.char_indices().nth(64).map_or(id, |(end, _)| &id[..end]),
            traceparent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    /// The host's header before the proxy's, wherever each comes; the first
    /// usable value of a header, trimmed; at most 64 characters; and the
    /// first `traceparent`.
    #[test]
    fn invocation_headers_in_their_order() {
        let id = |pairs: &[(&'static str, &str)]| InvocationHeaders::of(&headers(pairs)).id.to_owned();
        assert_eq!(id(&[]), "");
        assert_eq!(id(&[("host", "x"), ("x-ms-invocation-id", "proxy")]), "proxy");
        assert_eq!(
            id(&[
                ("x-ms-invocation-id", "proxy"),
                ("x-azure-functions-invocationid", "host")
            ]),
            "host"
        );
        assert_eq!(
            id(&[
                ("x-azure-functions-invocationid", "  "),
                ("x-ms-invocation-id", "proxy"),
                ("x-azure-functions-invocationid", " second ")
            ]),
            "second"
        );
        assert_eq!(
            id(&[("x-azure-functions-invocationid", " "), ("x-ms-invocation-id", "proxy")]),
            "proxy"
        );
        assert_eq!(id(&[("x-ms-invocation-id", &"a".repeat(70))]), "a".repeat(64));
        assert_eq!(
            id(&[("x-azure-functions-invocationid", "é"), ("x-ms-invocation-id", "p")]),
            "p"
        );
        let found = headers(&[
            ("traceparent", "first"),
            ("x-ms-invocation-id", "p"),
            ("traceparent", "second"),
        ]);
        let found = InvocationHeaders::of(&found);
        assert_eq!(found.traceparent.map(|v| v.to_str().unwrap()), Some("first"));
        assert!(InvocationHeaders::of(&headers(&[("host", "x")])).traceparent.is_none());
    }

    fn load(text: &str) -> InvocationRequest {
        serde_json::from_str(text).expect("fixture parses")
    }

    /// A timer run with a schedule status, as the host sends it in Azure.
    #[test]
    fn timer_with_status_fixture() {
        let req = load(include_str!("../../tests/data/timer_with_status.json"));
        let t: TimerInfo = binding(&req.data, None).unwrap();
        assert!(!t.is_past_due);
        let status = t.schedule_status.unwrap();
        assert_eq!(status.next.as_deref(), Some("2026-11-24T01:05:00+00:00"));
        assert_eq!(req.metadata["sys"]["MethodName"], "CacheHealthCheck");
    }

    /// A late run with ScheduleStatus null (useMonitor false, local runs).
    #[test]
    fn timer_null_status_fixture() {
        let req = load(include_str!("../../tests/data/timer_null_status.json"));
        let t: TimerInfo = binding(&req.data, Some("timer")).unwrap();
        assert!(t.is_past_due);
        assert_eq!(t.schedule_status, None);
    }

    /// The first run reports Last as 0001-01-01.
    #[test]
    fn timer_first_run_fixture() {
        let req = load(include_str!("../../tests/data/timer_first_run.json"));
        let t: TimerInfo = binding(&req.data, Some("myTimer")).unwrap();
        assert_eq!(t.schedule_status.unwrap().last.as_deref(), Some("0001-01-01T00:00:00"));
    }

    /// A timer value encoded a second time as a JSON string is still read.
    #[test]
    fn double_encoded_binding() {
        let inner = serde_json::json!({"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false});
        let data: Map<String, Value> = serde_json::from_value(serde_json::json!({"t": inner.to_string()})).unwrap();
        let t: TimerInfo = binding(&data, None).unwrap();
        assert!(!t.is_past_due);
    }

    /// An HTTP GET in the envelope: path, query, headers, no body.
    #[test]
    fn http_get_fixture() {
        let req = load(include_str!("../../tests/data/http_get_envelope.json"));
        let http: HttpRequestData = binding(&req.data, Some("req")).unwrap();
        assert_eq!(http.method, "GET");
        assert_eq!(http.path_and_query(), "/api/cache/greeting?code=abc123");
        assert!(http.body_bytes().is_empty());
        assert!(http
            .header_pairs()
            .contains(&("Accept".to_owned(), "application/json".to_owned())));
        assert_eq!(http.params["key"], "greeting");
    }

    /// An HTTP PUT in the envelope whose URL lacks the query: the query is rebuilt.
    #[test]
    fn http_put_fixture() {
        let req = load(include_str!("../../tests/data/http_put_envelope.json"));
        let http: HttpRequestData = binding(&req.data, None).unwrap();
        assert_eq!(http.method, "PUT");
        assert_eq!(http.path_and_query(), "/api/cache/greeting?ttl=60");
        assert_eq!(http.body_bytes(), b"Hello, world!");
    }

    /// A response serialises with the host's field names.
    #[test]
    fn response_shape() {
        let mut outputs = Map::new();
        let res = HttpResponseData {
            status_code: 200,
            body: "{}".into(),
            headers: BTreeMap::new(),
        };
        outputs.insert("res".into(), serde_json::to_value(&res).unwrap());
        let r = InvocationResponse {
            outputs,
            logs: vec!["a".into()],
            return_value: Value::Null,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["Outputs"]["res"]["statusCode"], 200);
        assert_eq!(v["Logs"][0], "a");
        assert!(v.as_object().unwrap().contains_key("ReturnValue"));
    }

    /// Query components are percent-encoded when the path is rebuilt.
    #[test]
    fn query_is_encoded() {
        let http: HttpRequestData = serde_json::from_value(serde_json::json!({
            "Url": "http://h/api/cache/a%20b", "Method": "PUT", "Query": {"ttl": "1 0&x"}
        }))
        .unwrap();
        assert_eq!(http.path_and_query(), "/api/cache/a%20b?ttl=1%200%26x");
    }
}
