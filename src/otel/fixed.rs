//! Attributes a span shares with every other span of its kind on the same
//! target (a command's name and node; an invocation's function, method and
//! route), encoded once for the process and kept: encoding attributes was
//! the largest part of what export cost an invocation (BENCHMARKS.md,
//! "Telemetry export"). They are read without a lock (`super::table`).
//! The sets are bounded (the commands an app sends,
//! the cache's nodes, the registry's routes); past [`MAX`] of them, spans
//! carry their attributes one by one instead.

use super::span::{KeyValue, Value};
use super::table::Table;
use super::{intern, proto};

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

type CommandKey = (String, String, u16);
static COMMANDS: Table<CommandKey, &'static Fixed> = Table::new(MAX);

/// A Redis command on `host:port`: `db.system.name`, `db.operation.name`,
/// `server.address`, `server.port`.
pub(crate) fn command(operation: &str, host: &str, port: u16) -> Option<&'static Fixed> {
    COMMANDS.with(
        |(o, h, p)| *p == port && o == operation && h == host,
        || {
            let attributes = vec![
                ("db.system.name", Value::from("redis")),
                ("db.operation.name", Value::from(operation.to_owned())),
                ("server.address", Value::from(host.to_owned())),
                ("server.port", Value::Int(i64::from(port))),
            ];
            (
                (operation.to_owned(), host.to_owned(), port),
                Fixed::new("", attributes),
            )
        },
        |f| *f,
    )
}

/// `(function, trigger, method and route)`.
type InvocationKey = (&'static str, &'static str, Option<(&'static str, String)>);
static INVOCATIONS: Table<InvocationKey, &'static Fixed> = Table::new(MAX);

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
    INVOCATIONS.with(
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
            let key = (function, trigger, http.map(|(m, r)| (m, r.to_owned())));
            (key, Fixed::new(name, attributes))
        },
        |f| *f,
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
