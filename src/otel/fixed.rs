//! Attributes a span shares with every other span of its kind on the same
//! target (a command's name and node; an invocation's function, method and
//! route), encoded once for the process and kept: encoding attributes was
//! the largest part of what export cost an invocation (BENCHMARKS.md,
//! "Telemetry export"). The sets are bounded (the commands an app sends,
//! the cache's nodes, the registry's routes); past [`MAX`] of them, spans
//! carry their attributes one by one instead.

use super::span::{KeyValue, Value};
use super::{intern, proto};
use arc_swap::ArcSwap;
use std::sync::{Arc, LazyLock, Mutex};

/// The most sets kept, of each kind.
const MAX: usize = 4096;

/// A set of attributes and their protobuf encoding (as `Span.attributes`,
/// field 9).
#[derive(Debug, PartialEq)]
pub(crate) struct Fixed {
    /// The span's name, for the kinds whose name the set decides.
    pub name: &'static str,
    pub attributes: Vec<KeyValue>,
    pub proto: Vec<u8>,
}

impl Fixed {
    fn new(name: &'static str, attributes: Vec<KeyValue>) -> &'static Fixed {
        let proto = proto::span_attributes(&attributes);
        Box::leak(Box::new(Fixed {
            name,
            attributes,
            proto,
        }))
    }
}

/// The sets of one kind, read without a lock.
struct Table<K: 'static> {
    list: LazyLock<ArcSwap<Vec<(K, &'static Fixed)>>>,
    writer: Mutex<()>,
}

impl<K: Clone + 'static> Table<K> {
    const fn new() -> Self {
        Self {
            list: LazyLock::new(|| ArcSwap::from_pointee(Vec::new())),
            writer: Mutex::new(()),
        }
    }

    fn get(
        &self,
        matches: impl Fn(&K) -> bool,
        make: impl FnOnce() -> (K, &'static str, Vec<KeyValue>),
    ) -> Option<&'static Fixed> {
        if let Some((_, f)) = self.list.load().iter().find(|(k, _)| matches(k)) {
            return Some(f);
        }
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let list = self.list.load_full();
        if let Some((_, f)) = list.iter().find(|(k, _)| matches(k)) {
            return Some(f);
        }
        if list.len() >= MAX {
            return None;
        }
        let (key, name, attributes) = make();
        let fixed = Fixed::new(name, attributes);
        let mut longer = Vec::with_capacity(list.len() + 1);
        longer.extend(list.iter().cloned());
        longer.push((key, fixed));
        self.list.store(Arc::new(longer));
        Some(fixed)
    }
}

type CommandKey = (String, String, u16);
static COMMANDS: Table<CommandKey> = Table::new();

/// A Redis command on `host:port`: `db.system.name`, `db.operation.name`,
/// `server.address`, `server.port`.
pub(crate) fn command(operation: &str, host: &str, port: u16) -> Option<&'static Fixed> {
    COMMANDS.get(
        |(o, h, p)| *p == port && o == operation && h == host,
        || {
            let attributes = vec![
                ("db.system.name", Value::from("redis")),
                ("db.operation.name", Value::from(operation.to_owned())),
                ("server.address", Value::from(host.to_owned())),
                ("server.port", Value::Int(i64::from(port))),
            ];
            ((operation.to_owned(), host.to_owned(), port), "", attributes)
        },
    )
}

/// `(function, trigger, method and route)`.
type InvocationKey = (&'static str, &'static str, Option<(&'static str, String)>);
static INVOCATIONS: Table<InvocationKey> = Table::new();

/// An invocation of `function` of the app `app`: `faas.name`
/// (`<app>/<function>`), `faas.trigger`, and for an HTTP request as it came
/// (`http`: its method as the conventions name it, and its route)
/// `http.request.method` and `http.route`; the span's name is
/// `{method} {route}`, else the function's.
pub(crate) fn invocation(
    app: &str,
    function: &'static str,
    trigger: &'static str,
    http: Option<(&'static str, &str)>,
) -> Option<&'static Fixed> {
    INVOCATIONS.get(
        |(f, t, h)| {
            std::ptr::eq(*f, function)
                && *t == trigger
                && match (h, http) {
                    (None, None) => true,
                    (Some((m, r)), Some((method, route))) => *m == method && r == route,
                    _ => false,
                }
        },
        || {
            let mut attributes = vec![
                ("faas.name", Value::from(intern::joined(app, "/", function))),
                ("faas.trigger", Value::from(trigger)),
            ];
            let name = match http {
                Some((method, route)) => {
                    let route = intern::joined(route, "", "");
                    attributes.push(("http.request.method", Value::from(method)));
                    attributes.push(("http.route", Value::from(route)));
                    intern::joined(method, " ", route)
                }
                None => function,
            };
            (
                (function, trigger, http.map(|(m, r)| (m, r.to_owned()))),
                name,
                attributes,
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same target gives the same set, made once; another target another.
    #[test]
    fn one_set_per_target() {
        let a = command("GET", "10.0.0.9", 6380).unwrap();
        let b = command("GET", "10.0.0.9", 6380).unwrap();
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, command("GET", "10.0.0.9", 6381).unwrap()));
        assert!(a.attributes.contains(&("server.port", Value::Int(6380))));
        assert!(!a.proto.is_empty());
        let i = invocation("orders", "CacheItem", "http", Some(("GET", "/api/cache/{key}"))).unwrap();
        assert!(i.attributes.contains(&("faas.name", Value::from("orders/CacheItem"))));
        assert_eq!(i.name, "GET /api/cache/{key}");
        assert_eq!(
            invocation("orders", "CacheHealthCheck", "timer", None).unwrap().name,
            "CacheHealthCheck"
        );
    }
}
