//! The functions, one file each, and the table that ties them to
//! `function-app/<Name>/function.json`.

pub mod cache_item;
pub mod clients;
pub mod health;
pub mod health_check;
pub mod ping;
pub mod quickstart;

/// How the host triggers a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An HTTP trigger, forwarded to `/api/<route>` or sent as an envelope.
    Http {
        /// The `route` in function.json (under the `api` prefix).
        route: &'static str,
        /// The `methods` in function.json, lower case.
        methods: &'static [&'static str],
    },
    /// A timer trigger, sent as `POST /<Name>`.
    Timer,
}

/// One function of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The folder name under `function-app/`, which the host uses as the name.
    pub name: &'static str,
    /// Its trigger.
    pub trigger: Trigger,
}

/// Every function the handler serves. A test checks this against the
/// function.json files so the two cannot drift apart.
pub const FUNCTIONS: &[FunctionSpec] = &[
    FunctionSpec {
        name: "Ping",
        trigger: Trigger::Http {
            route: "ping",
            methods: &["get"],
        },
    },
    FunctionSpec {
        name: "CacheItem",
        trigger: Trigger::Http {
            route: "cache/{key}",
            methods: &["get", "put", "delete"],
        },
    },
    FunctionSpec {
        name: "Clients",
        trigger: Trigger::Http {
            route: "clients",
            methods: &["get"],
        },
    },
    FunctionSpec {
        name: "Quickstart",
        trigger: Trigger::Http {
            route: "quickstart",
            methods: &["post"],
        },
    },
    FunctionSpec {
        name: "Health",
        trigger: Trigger::Http {
            route: "health",
            methods: &["get"],
        },
    },
    FunctionSpec {
        name: "CacheHealthCheck",
        trigger: Trigger::Timer,
    },
];

/// The function serving a matched axum path (`/api/cache/{key}`) or an
/// envelope path (`/CacheHealthCheck`).
pub fn by_path(path: &str) -> Option<&'static FunctionSpec> {
    FUNCTIONS.iter().find(|f| match f.trigger {
        Trigger::Http { route, .. } => path.strip_prefix("/api/") == Some(route),
        Trigger::Timer => false,
    } || path.strip_prefix('/') == Some(f.name))
}

/// Milliseconds since `start`, to the microsecond.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}
