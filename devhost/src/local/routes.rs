//! HTTP routes of the function app, matched as the Functions host matches
//! them: `/<routePrefix>/<route>` with `{param}` segments, literal segments
//! case-insensitive, the function's `methods` (all when absent), and 404 for
//! anything else (a known route with another method is a 404 too: the host
//! only registers the listed methods).
//!
//! Templates are literal segments and `{name}` parameters, all this app's
//! functions use; [`crate::app_manifest`] turns down ASP.NET's other forms
//! (`{name?}`, `{name=default}`, `{*name}`, `{name:constraint}`).

use crate::app_manifest::{AppManifest, Trigger};

/// One compiled route.
#[derive(Debug, Clone)]
struct Route {
    function: String,
    segments: Vec<Segment>,
    methods: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A match: the function and its route values, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The function's name.
    pub function: String,
    /// Route values in template order.
    pub params: Vec<(String, String)>,
}

/// Every HTTP function's route, most specific first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles the HTTP triggers of `manifest`.
    pub fn new(manifest: &AppManifest) -> RouteTable {
        let prefix = &manifest.host.route_prefix;
        let mut routes: Vec<Route> = manifest
            .functions
            .iter()
            .filter_map(|f| match &f.trigger {
                Trigger::Http(h) => Some(Route {
                    function: f.name.clone(),
                    segments: compile(prefix, &h.route),
                    methods: h.methods.clone(),
                }),
                _ => None,
            })
            .collect();
        // Literal segments before parameters, as ASP.NET orders by precedence.
        routes.sort_by_key(|r| {
            let rank: Vec<u8> = r
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(_) => 0,
                    Segment::Param(_) => 1,
                })
                .collect();
            rank
        });
        RouteTable { routes }
    }

    /// The function serving `method` at `path` (no query), if any.
    pub fn find(&self, method: &str, path: &str) -> Option<RouteMatch> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.routes.iter().find_map(|r| {
            let allowed = r
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x.eq_ignore_ascii_case(method)));
            if !allowed {
                return None;
            }
            let params = match_segments(&r.segments, &parts)?;
            Some(RouteMatch {
                function: r.function.clone(),
                params,
            })
        })
    }
}

fn compile(prefix: &str, route: &str) -> Vec<Segment> {
    let full = format!("{prefix}/{route}");
    full.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None => Segment::Literal(s.to_string()),
            Some(name) => Segment::Param(name.to_string()),
        })
        .collect()
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<Vec<(String, String)>> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = Vec::new();
    for (seg, part) in segments.iter().zip(parts) {
        let value = decode(part);
        match seg {
            Segment::Literal(lit) if value.eq_ignore_ascii_case(lit) => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.push((name.clone(), value)),
        }
    }
    Some(params)
}

/// Percent-decodes one path segment (`+` stays a plus in a path).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
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
}
