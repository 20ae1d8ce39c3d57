//! The deployable app's files agree with the handler: every
//! `function-app/*/function.json` has a route the handler serves, every
//! function the handler serves has a function.json, and host.json sets the
//! custom handler up as docs/contract.md and docs/azure.md say.

use crate::support;

use azure_redis_handler::{Trigger, FUNCTIONS};
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn function_jsons() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("function-app")).unwrap() {
        let dir = entry.unwrap().path();
        let text = std::fs::read_to_string(dir.join("function.json"))
            .unwrap_or_else(|e| panic!("{} has no function.json: {e}", dir.display()));
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, serde_json::from_str(&text).expect("function.json is JSON"));
    }
    out
}

fn trigger_of(json: &Value) -> &Value {
    json["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["direction"] == "in")
        .expect("an input binding")
}

/// Every function.json matches a function the handler serves, and back.
#[test]
fn function_jsons_and_handler_routes_agree() {
    let files = function_jsons();
    let served: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    assert_eq!(files.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut s = served.clone();
        s.sort();
        s
    });
    for spec in FUNCTIONS {
        let json = &files[spec.name];
        let trigger = trigger_of(json);
        match spec.trigger {
            Trigger::Http { route, .. } => {
                let methods = spec.methods();
                assert_eq!(trigger["type"], "httpTrigger", "{}", spec.name);
                assert_eq!(trigger["route"], route, "{}", spec.name);
                assert_eq!(trigger["authLevel"], "function", "{}", spec.name);
                let listed: Vec<&str> = trigger["methods"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap())
                    .collect();
                assert_eq!(listed, methods, "{}", spec.name);
                let bindings = json["bindings"].as_array().unwrap();
                assert_eq!(
                    bindings.len(),
                    2,
                    "{}: one http in and one http out, so forwarding applies",
                    spec.name
                );
                let out = bindings.iter().find(|b| b["direction"] == "out").unwrap();
                assert_eq!(
                    (out["type"].as_str(), out["name"].as_str()),
                    (Some("http"), Some("res")),
                    "{}",
                    spec.name
                );
            }
            Trigger::Timer { schedule: declared, .. } => {
                assert_eq!(trigger["type"], "timerTrigger", "{}", spec.name);
                let schedule = trigger["schedule"].as_str().unwrap();
                assert_eq!(
                    schedule.split_whitespace().count(),
                    6,
                    "NCRONTAB with seconds: {schedule}"
                );
                assert_eq!(schedule, declared, "{}", spec.name);
            }
        }
    }
}

/// Each function.json route is actually served by the router (not 404/405).
#[tokio::test]
async fn every_route_is_served() {
    use axum::body::Body;
    use tower::ServiceExt;
    let app = support::router_without_cache(azure_redis_handler::settings::DEFAULT_MAX_VALUE_BYTES);
    for (name, json) in function_jsons() {
        let trigger = trigger_of(&json);
        let requests: Vec<(String, String)> = if trigger["type"] == "httpTrigger" {
            let path = format!("/api/{}", trigger["route"].as_str().unwrap().replace("{key}", "probe"));
            trigger["methods"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m.as_str().unwrap().to_uppercase(), path.clone()))
                .collect()
        } else {
            vec![("POST".into(), format!("/{name}"))]
        };
        for (method, path) in requests {
            let body = if method == "POST" && !path.starts_with("/api") {
                include_str!("../data/timer_with_status.json")
            } else {
                ""
            };
            let req = axum::http::Request::builder()
                .method(method.as_str())
                .uri(&path)
                .body(Body::from(body))
                .unwrap();
            let status = app.clone().oneshot(req).await.unwrap().status().as_u16();
            assert!(
                ![404, 405].contains(&status),
                "{name}: {method} {path} is not served ({status})"
            );
        }
    }
}

/// host.json runs the `handler` binary as a custom handler in the proxying
/// HTTP mode, with legacy forwarding on too for a host that predates proxying
/// (a host that has both uses proxying).
#[test]
fn host_json_configures_the_custom_handler() {
    let host: Value = serde_json::from_str(&std::fs::read_to_string(root().join("host.json")).unwrap()).unwrap();
    assert_eq!(host["version"], "2.0");
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "handler");
    assert_eq!(host["customHandler"]["enableProxyingHttpRequest"], true);
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], true);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert_eq!(host["extensions"]["http"]["routePrefix"], "api");
}

/// `examples/visits.rs`, a function app of its own on the library's public
/// face, serves its `Visits` function beside the built-in ones, over the
/// same Entra ID connection, and logs it under its name. (`cargo test`
/// builds the examples; the binary is found beside the test target.)
#[tokio::test]
async fn the_example_app_serves_its_own_function() {
    let example = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("debug/examples/visits");
    assert!(example.is_file(), "no example at {}", example.display());
    let app = support::spawn_app(support::Options::default()).await;
    let visits = devhost::functions_host::HandlerProcess::spawn(&example, support::app_root(), &app.env)
        .await
        .expect("the example starts");
    for want in [1, 2] {
        let (s, b) = support::call_handler(&visits, Method::POST, "/api/visits/home", None).await;
        assert_eq!((s, b["visits"].as_i64()), (200, Some(want)), "{b}");
    }
    let (s, b) = support::call_handler(&visits, Method::GET, "/api/visits/home", None).await;
    assert_eq!((s, b["visits"].as_i64()), (200, Some(2)), "{b}");
    let (s, b) = support::call_handler(&visits, Method::GET, "/api/ping", None).await;
    assert_eq!((s, b["pong"].as_bool()), (200, Some(true)), "the built-ins too: {b}");
    support::wait_for_handler_output(&visits, "function=\"Visits\"", Duration::from_secs(5)).await;
}
