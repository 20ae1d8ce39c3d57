//! HTTP routes of the function app, matched as the Functions host matches
//! them: `/<routePrefix>/<route>` with `{param}` segments, literal segments
//! case-insensitive, the function's `methods` (all when absent), and 404 for
//! anything else (a known route with another method is a 404 too: the host
//! only registers the listed methods).
//!
//! Template syntax (ASP.NET's): `{name}`, `{name?}` (optional),
//! `{name=default}`, `{*name}` (rest of the path), `{name:constraint}`
//! (constraints are accepted but not checked locally).

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
    Param {
        name: String,
        optional: bool,
        default: Option<String>,
        catch_all: bool,
    },
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
                    Segment::Param { catch_all: false, .. } => 1,
                    Segment::Param { catch_all: true, .. } => 2,
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
            Some(inner) => {
                let (catch_all, inner) = match inner.strip_prefix('*') {
                    Some(rest) => (true, rest.trim_start_matches('*')),
                    None => (false, inner),
                };
                let (inner, default) = match inner.split_once('=') {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (inner, None),
                };
                let optional = inner.ends_with('?');
                let name = inner.trim_end_matches('?').split(':').next().unwrap_or_default();
                Segment::Param {
                    name: name.to_string(),
                    optional,
                    default,
                    catch_all,
                }
            }
        })
        .collect()
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut i = 0;
    for (n, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Literal(lit) => {
                let part = parts.get(i)?;
                if !decode(part).eq_ignore_ascii_case(lit) {
                    return None;
                }
                i += 1;
            }
            Segment::Param {
                name,
                optional,
                default,
                catch_all,
            } => {
                if *catch_all {
                    let rest: Vec<String> = parts[i.min(parts.len())..].iter().map(|p| decode(p)).collect();
                    i = parts.len();
                    if !rest.is_empty() || default.is_some() {
                        params.push((
                            name.clone(),
                            default.clone().filter(|_| rest.is_empty()).unwrap_or(rest.join("/")),
                        ));
                    }
                } else if let Some(part) = parts.get(i) {
                    params.push((name.clone(), decode(part)));
                    i += 1;
                } else if let Some(d) = default {
                    params.push((name.clone(), d.clone()));
                } else if !*optional || n + 1 != segments.len() {
                    return None;
                }
            }
        }
    }
    (i == parts.len()).then_some(params)
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
#[path = "routes_tests.rs"]
mod tests;
