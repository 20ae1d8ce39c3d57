use super::*;

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
