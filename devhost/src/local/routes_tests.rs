use super::*;
use crate::app_manifest::{Function, HostSettings};
use serde_json::json;
use std::path::PathBuf;

fn http(name: &str, route: &str, methods: &[&str]) -> Function {
    let mut trigger = json!({"type": "httpTrigger", "direction": "in", "name": "req", "route": route});
    if !methods.is_empty() {
        trigger["methods"] = json!(methods);
    }
    let bindings = json!({"bindings": [trigger, {"type": "http", "direction": "out", "name": "res"}]});
    Function::from_json(name.into(), &bindings).unwrap()
}

fn table(prefix: &str, functions: Vec<Function>) -> RouteTable {
    let host = json!({"customHandler": {"description": {"defaultExecutablePath": "handler"}},
                      "extensions": {"http": {"routePrefix": prefix}}});
    RouteTable::new(&AppManifest {
        root: PathBuf::from("."),
        functions_dir: PathBuf::from("."),
        host: HostSettings::from_json(&host).unwrap(),
        functions,
    })
}

fn found(t: &RouteTable, method: &str, path: &str) -> Option<(String, Vec<(String, String)>)> {
    t.find(method, path).map(|m| (m.function, m.params))
}

#[test]
fn matches_routes_params_and_methods() {
    let t = table(
        "api",
        vec![
            http("CacheItem", "cache/{key}", &["get", "put", "delete"]),
            http("Ping", "ping", &["get"]),
            http("Stats", "cache/stats", &[]),
            http("CacheIncr", "cache/{key}/incr", &["post"]),
        ],
    );
    let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    assert_eq!(found(&t, "GET", "/api/ping"), Some(("Ping".into(), vec![])));
    assert_eq!(
        found(&t, "GET", "/API/Ping/"),
        Some(("Ping".into(), vec![])),
        "case-insensitive"
    );
    assert_eq!(found(&t, "POST", "/api/ping"), None, "method not listed: 404");
    assert_eq!(
        found(&t, "PUT", "/api/cache/k%201"),
        Some(("CacheItem".into(), p("key", "k 1")))
    );
    assert_eq!(
        found(&t, "GET", "/api/cache/stats"),
        Some(("Stats".into(), vec![])),
        "literal first"
    );
    assert_eq!(found(&t, "GET", "/api/cache"), None);
    assert_eq!(found(&t, "GET", "/api/cache/a/b"), None);
    assert_eq!(
        found(&t, "POST", "/api/cache/k1/incr"),
        Some(("CacheIncr".into(), p("key", "k1"))),
        "a parameter before a literal"
    );
    assert_eq!(found(&t, "GET", "/api/cache/k/incr"), None, "method not listed: 404");
    assert_eq!(found(&t, "GET", "/ping"), None, "prefix required");
    assert_eq!(found(&t, "GET", "/api/nope"), None);
}

#[test]
fn empty_prefix() {
    let t = table("", vec![http("Item", "items/{id}", &["get"])]);
    assert_eq!(
        found(&t, "GET", "/items/3"),
        Some(("Item".into(), vec![("id".into(), "3".into())]))
    );
    assert!(found(&t, "GET", "/api/items/3").is_none());
}
