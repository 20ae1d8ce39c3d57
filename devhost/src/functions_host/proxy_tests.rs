use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

fn caller_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "myapp.azurewebsites.net"),
        ("x-azure-functions-invocationid", "spoofed"),
        ("x-ms-invocation-id", "spoofed"),
        ("x-azure-functions-hostversion", "0.0"),
        ("forwarded", "for=10.0.0.9"),
        ("x-forwarded-for", "10.0.0.9"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-prefix", "/evil"),
        ("x-functions-key", "k3y"),
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("content-length", "12"),
        ("accept", "application/json"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h.append("x-multi", HeaderValue::from_static("a"));
    h.append("x-multi", HeaderValue::from_static("b"));
    h
}

/// The proxy's headers are YARP's: invocation ids and X-Forwarded-* set
/// over the caller's, Forwarded, Host and hop-by-hop headers dropped, the
/// function key, Content-Length and the rest passed on.
#[test]
fn headers_are_set_the_way_yarp_sets_them() {
    let origin = Origin {
        client_ip: Some("127.0.0.1".parse().unwrap()),
        host: Some(HeaderValue::from_static("myapp.azurewebsites.net")),
        proto: "http",
        path_base: String::new(),
    };
    let out = proxy_headers(&caller_headers(), "inv-1", &origin);
    let one = |name: &str| {
        let all: Vec<&str> = out.get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
        match all[..] {
            [] => None,
            [v] => Some(v.to_string()),
            _ => panic!("{name} sent {} times: {all:?}", all.len()),
        }
    };
    assert_eq!(one("x-azure-functions-invocationid").as_deref(), Some("inv-1"));
    assert_eq!(one("x-ms-invocation-id").as_deref(), Some("inv-1"));
    assert_eq!(one("x-azure-functions-hostversion").as_deref(), Some(HOST_VERSION));
    assert_eq!(one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(one("x-forwarded-host").as_deref(), Some("myapp.azurewebsites.net"));
    assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(one("x-forwarded-prefix"), None, "no path base: the caller's is dropped");
    for gone in ["forwarded", "host", "connection", "transfer-encoding"] {
        assert_eq!(one(gone), None, "{gone}");
    }
    assert_eq!(one("x-functions-key").as_deref(), Some("k3y"));
    assert_eq!(one("content-length").as_deref(), Some("12"));
    assert_eq!(one("accept").as_deref(), Some("application/json"));
    assert_eq!(out.get_all("x-multi").iter().count(), 2);

    let bare = Origin {
        path_base: "/base".into(),
        ..Origin::default()
    };
    let out = proxy_headers(&caller_headers(), "inv-2", &bare);
    assert_eq!(out["x-forwarded-prefix"], "/base");
    assert_eq!(out["x-forwarded-proto"], "http", "the local host speaks http");
    assert!(out.get("x-forwarded-for").is_none() && out.get("x-forwarded-host").is_none());
}

/// The waits between tries are 50 ms doubling to 250 ms, 9 of them: 10
/// tries in all.
#[test]
fn retry_delays_are_50_to_250_ms_for_ten_tries() {
    let ms: Vec<u128> = retry_delays().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [50, 100, 200, 250, 250, 250, 250, 250, 250]);
}

/// How many tries `with_retries` makes when the first `fail_first` fail.
async fn tries(fail_first: u32, retryable: bool) -> (Result<u32, &'static str>, u32) {
    let calls = AtomicU32::new(0);
    let result = with_retries(
        || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                match n <= fail_first {
                    true => Err("refused"),
                    false => Ok(n),
                }
            }
        },
        |_| retryable,
    )
    .await;
    (result, calls.load(Ordering::SeqCst))
}

/// A success ends the tries; an error the proxy does not retry ends them at
/// once. (All ten tries, with their real waits, are in the local host's
/// `proxying_retries_a_handler_that_refuses_connections`.)
#[tokio::test]
async fn tries_stop_at_a_success_or_an_error_not_retried() {
    assert_eq!(tries(2, true).await, (Ok(3), 3));
    assert_eq!(tries(u32::MAX, false).await, (Err("refused"), 1));
}
