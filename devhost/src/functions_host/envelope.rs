//! The JSON the Functions host sends to a custom handler for a non-forwarded
//! invocation: the `{"Data", "Metadata"}` envelope, the timer's `TimerInfo`
//! and an HTTP trigger's `Data.req`.
//!
//! Follows docs/azure.md "The Functions host and a custom handler": "Body",
//! "Timer value" and "HTTP with the envelope (no forwarding)".

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// The host re-encodes strings and numbers as JSON text (`"HelloWorld"`
/// arrives as `"\"HelloWorld\""`, 4 as `"4"`); objects, arrays, booleans and
/// null are left alone.
pub fn host_encode(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(Value::String(s).to_string()),
        Value::Number(n) => Value::String(n.to_string()),
        other => other,
    }
}

/// Builds the body of `POST /{FunctionName}`: `{"Data": data, "Metadata":
/// metadata + sys}`, with each top-level value of `data` and `metadata`
/// passed through [`host_encode`] (give values as the binding produced them)
/// and `sys` = `{"MethodName", "UtcNow", "RandGuid"}` added to `Metadata`.
/// `data`/`metadata` that are not objects count as empty.
pub fn envelope(function_name: &str, data: Value, metadata: Value) -> Value {
    let encode = |v: Value| -> Map<String, Value> {
        match v {
            Value::Object(m) => m.into_iter().map(|(k, v)| (k, host_encode(v))).collect(),
            _ => Map::new(),
        }
    };
    let mut meta = encode(metadata);
    meta.insert(
        "sys".into(),
        json!({
            "MethodName": function_name,
            "UtcNow": utc_now_dotnet(),
            "RandGuid": crate::util::uuid_v4(),
        }),
    );
    json!({ "Data": encode(data), "Metadata": meta })
}

/// A timer trigger's value, in the host's exact shape:
/// `{"Schedule": {"AdjustForDST": true}, "ScheduleStatus": {"Last", "Next",
/// "LastUpdated"} or null, "IsPastDue": bool}`. `ScheduleStatus` is null
/// without a monitor (local runs, `useMonitor: false`, sub-minute schedules);
/// with one, `Last` is a minute ago, `Next` a minute ahead.
pub fn timer_info(is_past_due: bool, with_schedule_status: bool) -> Value {
    let now = OffsetDateTime::now_utc();
    let minute = time::Duration::minutes(1);
    let status = with_schedule_status.then(|| ScheduleStatus {
        last: Some(now - minute),
        next: now + minute,
        last_updated: now,
    });
    timer_info_with_status(is_past_due, status.as_ref())
}

/// What the host's schedule monitor knows of a timer when it fires it: the
/// status written after the previous run (or at the first start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleStatus {
    /// The previous run's scheduled time; `None` before the first run (sent
    /// as `0001-01-01T00:00:00`).
    pub last: Option<OffsetDateTime>,
    /// The occurrence this status expected next (the one firing now).
    pub next: OffsetDateTime,
    /// When the status was written.
    pub last_updated: OffsetDateTime,
}

/// [`timer_info`] with a given `ScheduleStatus` (`None` sends null).
pub fn timer_info_with_status(is_past_due: bool, status: Option<&ScheduleStatus>) -> Value {
    let status = match status {
        Some(s) => json!({
            "Last": s.last.map_or_else(|| "0001-01-01T00:00:00".to_string(), dotnet_time),
            "Next": dotnet_time(s.next),
            "LastUpdated": dotnet_time(s.last_updated),
        }),
        None => Value::Null,
    };
    json!({
        "Schedule": { "AdjustForDST": true },
        "ScheduleStatus": status,
        "IsPastDue": is_past_due,
    })
}

/// An HTTP trigger's `Data.req`: `{"Url", "Method", "Query": {name: value},
/// "Headers": {name: [values]}, "Params": {route values}, "Identities":
/// [...], "Body": string}`; `Body` only when non-empty (the host sends it
/// only when Content-Length > 0). Repeated query keys are comma-joined.
pub fn http_envelope_request(
    method: &str,
    url: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    params: &[(&str, &str)],
    body: Option<&str>,
) -> Value {
    let mut hdrs = Map::new();
    for (k, v) in headers {
        let entry = hdrs.entry(k.to_string()).or_insert_with(|| json!([]));
        entry.as_array_mut().expect("array").push(json!(v));
    }
    let mut req = json!({
        "Url": url,
        "Method": method.to_uppercase(),
        "Query": flat(query),
        "Headers": hdrs,
        "Params": flat(params),
        "Identities": [{
            "AuthenticationType": null,
            "IsAuthenticated": false,
            "Actor": null,
            "BootstrapContext": null,
            "Claims": [],
            "Label": null,
            "Name": null,
            "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        }],
    });
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        req["Body"] = json!(b);
    }
    req
}

/// The `Metadata` of an HTTP envelope invocation: `Query` and `Headers` as
/// flat objects plus the route values (which [`envelope`] re-encodes).
pub fn http_envelope_metadata(query: &[(&str, &str)], headers: &[(&str, &str)], params: &[(&str, &str)]) -> Value {
    let mut meta = flat(params);
    meta.insert("Query".into(), Value::Object(flat(query)));
    meta.insert("Headers".into(), Value::Object(flat(headers)));
    Value::Object(meta)
}

/// `{name: value}`, repeated names comma-joined.
fn flat(pairs: &[(&str, &str)]) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in pairs {
        let joined = match m.get(*k).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{v}"),
            None => v.to_string(),
        };
        m.insert(k.to_string(), json!(joined));
    }
    m
}

/// .NET's `DateTimeOffset` text in UTC, `2024-05-01T10:15:00+00:00`.
pub fn dotnet_time(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    t.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

/// .NET's UTC `DateTime` text with 7 fractional digits, `…T10:15:00.1234567Z`.
fn utc_now_dotnet() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
    OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_info_shape() {
        let t = timer_info(true, false);
        assert_eq!(t["Schedule"], json!({"AdjustForDST": true}));
        assert_eq!(t["ScheduleStatus"], Value::Null);
        assert_eq!(t["IsPastDue"], json!(true));
        let t = timer_info(false, true);
        let s = &t["ScheduleStatus"];
        for k in ["Last", "Next", "LastUpdated"] {
            assert!(s[k].as_str().unwrap().ends_with("+00:00"), "{k}: {s}");
        }
        let next = OffsetDateTime::from_unix_timestamp(1_714_558_500).unwrap();
        let first = ScheduleStatus {
            last: None,
            next,
            last_updated: next - time::Duration::seconds(30),
        };
        let t = timer_info_with_status(false, Some(&first));
        assert_eq!(t["ScheduleStatus"]["Last"], "0001-01-01T00:00:00");
        assert_eq!(t["ScheduleStatus"]["Next"], "2024-05-01T10:15:00+00:00");
        assert_eq!(t["ScheduleStatus"]["LastUpdated"], "2024-05-01T10:14:30+00:00");
    }

    #[test]
    fn envelope_reencodes_and_adds_sys() {
        let e = envelope(
            "CacheHealthCheck",
            json!({"myTimer": timer_info(false, false), "s": "HelloWorld", "n": 4}),
            json!({"x": "y"}),
        );
        assert_eq!(e["Data"]["s"], json!("\"HelloWorld\""));
        assert_eq!(e["Data"]["n"], json!("4"));
        assert!(e["Data"]["myTimer"].is_object());
        assert_eq!(e["Metadata"]["x"], json!("\"y\""));
        let sys = &e["Metadata"]["sys"];
        assert_eq!(sys["MethodName"], json!("CacheHealthCheck"));
        assert!(sys["UtcNow"].as_str().unwrap().ends_with('Z'));
        assert_eq!(sys["RandGuid"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn http_request_shape() {
        let q = [("ttl", "5"), ("a", "1"), ("a", "2")];
        let h = [("Accept", "*/*"), ("X-A", "1"), ("X-A", "2")];
        let p = [("key", "k1")];
        let r = http_envelope_request("put", "http://localhost/api/cache/k1", &q, &h, &p, Some("v"));
        assert_eq!(r["Method"], json!("PUT"));
        assert_eq!(r["Query"], json!({"ttl": "5", "a": "1,2"}));
        assert_eq!(r["Headers"]["X-A"], json!(["1", "2"]));
        assert_eq!(r["Params"], json!({"key": "k1"}));
        assert_eq!(r["Body"], json!("v"));
        assert!(r["Identities"].is_array());
        let r = http_envelope_request("GET", "http://x/", &[], &[], &[], Some(""));
        assert!(r.get("Body").is_none());
        let m = http_envelope_metadata(&q, &h, &p);
        assert_eq!(m["Headers"]["X-A"], json!("1,2"));
        let e = envelope("CacheItem", json!({"req": r}), m);
        assert_eq!(e["Metadata"]["key"], json!("\"k1\""));
        assert!(e["Metadata"]["Query"].is_object());
    }
}
