//! The functions, one file each, and the registry that ties each to its
//! route, its methods, its name in the logs and its
//! `function-app/<Name>/function.json`.
//!
//! Each function's file declares it once, as a [`Function`] constant
//! (name, trigger, route, methods and handlers). [`FUNCTIONS`] lists them;
//! the router, the envelope dispatch, the invocation log's function name
//! and the check of the function.json files all come from that list. Adding
//! an HTTP function is one new file, one line here, and its function.json
//! (which the host reads; a test holds it to the declaration). A second
//! timer needs nothing else either.

pub(crate) mod cache_health_check;
pub(crate) mod cache_incr;
pub(crate) mod cache_item;
pub(crate) mod clients;
pub(crate) mod health;
pub(crate) mod json;
mod last_check;
pub(crate) mod once;
pub(crate) mod ping;
pub(crate) mod quickstart;
mod state;

pub use state::AppState;

use crate::error::AppError;
use crate::host::InvocationRequest;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use std::future::Future;
use std::pin::Pin;

/// Every function the handler serves.
pub const FUNCTIONS: &[Function] = &[
    ping::FUNCTION,
    cache_item::FUNCTION,
    cache_incr::FUNCTION,
    clients::FUNCTION,
    quickstart::FUNCTION,
    health::FUNCTION,
    cache_health_check::FUNCTION,
];

/// One function of the app.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// The folder name under `function-app/`, which the host uses as the
    /// function's name (and the envelope's path, `POST /<Name>`).
    pub name: &'static str,
    /// How the host triggers it.
    pub trigger: Trigger,
}

/// How the host triggers a function.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// An HTTP trigger: served at `/api/<route>` (proxied or forwarded), or
    /// sent as an envelope and run through the same route.
    Http {
        /// The `route` in function.json, under the `api` prefix.
        route: &'static str,
        /// One handler per method; the methods are function.json's `methods`.
        endpoints: &'static [Endpoint],
        /// Other paths the function answers (e.g. a route with an empty
        /// parameter, answered 400 rather than 404).
        also: &'static [ExtraRoute],
    },
    /// A timer trigger, sent as `POST /<Name>`.
    Timer {
        /// The NCRONTAB `schedule` in function.json.
        schedule: &'static str,
        /// Runs one invocation and answers the host.
        run: TimerRun,
    },
}

/// Another path an HTTP function answers, and its routes.
pub type ExtraRoute = (&'static str, fn() -> MethodRouter<AppState>);

/// A timer function's body: the state and the host's invocation, to the
/// answer for the host.
pub type TimerRun = for<'a> fn(
    &'a AppState,
    &'a InvocationRequest,
) -> Pin<Box<dyn Future<Output = Result<Response, AppError>> + Send + 'a>>;

/// An HTTP method a function serves: each variant is the method of its
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum HttpMethod {
    Get,
    Put,
    Post,
    Delete,
}

impl HttpMethod {
    /// As function.json spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Post => "post",
            Self::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Put => MethodFilter::PUT,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// One method of an HTTP function and its handler, given as
/// `|on| axum::routing::on(on, handler)` so the method is written once.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Which requests reach `handler`.
    pub method: HttpMethod,
    /// Routes the method to the handler.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Function {
    /// The HTTP methods, as function.json lists them; empty for a timer.
    pub fn methods(&self) -> Vec<&'static str> {
        match self.trigger {
            Trigger::Http { endpoints, .. } => endpoints.iter().map(|e| e.method.as_str()).collect(),
            Trigger::Timer { .. } => Vec::new(),
        }
    }

    /// The path the handler serves the function at (`/api/<route>` in
    /// axum's syntax, which function.json's shares for plain parameters).
    pub(crate) fn api_path(&self) -> Option<String> {
        match self.trigger {
            Trigger::Http { route, .. } => Some(format!("/api/{route}")),
            Trigger::Timer { .. } => None,
        }
    }

    /// The function's methods merged into one router for its path.
    pub(crate) fn method_router(&self) -> Option<MethodRouter<AppState>> {
        let Trigger::Http { endpoints, .. } = self.trigger else {
            return None;
        };
        Some(endpoints.iter().fold(MethodRouter::new(), |router, e| {
            router.merge((e.handler)(e.method.filter()))
        }))
    }
}

/// The function of `functions` named `name` (the envelope's path).
pub(crate) fn by_name<'a>(functions: &'a [Function], name: &str) -> Option<&'a Function> {
    functions.iter().find(|f| f.name == name)
}

/// The function of `functions` serving a matched axum path
/// (`/api/cache/{key}`), or an envelope path (`/CacheHealthCheck`).
pub(crate) fn by_path<'a>(functions: &'a [Function], path: &str) -> Option<&'a Function> {
    functions.iter().find(|f| {
        let served = match f.trigger {
            Trigger::Http { route, also, .. } => match path.strip_prefix("/api/") {
                Some(rest) => rest == route || also.iter().any(|(p, _)| *p == path),
                None => also.iter().any(|(p, _)| *p == path),
            },
            Trigger::Timer { .. } => false,
        };
        served || path.strip_prefix('/') == Some(f.name)
    })
}

/// A JSON answer on the hot path, written by hand ([`json`]) into one
/// buffer of its exact size, which becomes the body without a copy or an
/// allocation (axum's `Json` starts at 128 bytes and grows, through an
/// `io::Write` adapter, and `Bytes` allocates for a buffer with room left).
#[derive(Debug)]
pub(crate) struct Answer<T>(pub T);

impl<T: json::Json> Answer<T>
where
    Answer<T>: axum::response::IntoResponse,
{
    /// The answer with its body as it is (no box around it), for the
    /// server's fast path: [`crate::body::Out`].
    pub(crate) fn into_out(self) -> axum::http::Response<crate::body::Out> {
        if cfg!(feature = "experiment-no-json") {
            return axum::response::IntoResponse::into_response(self).map(crate::body::Out::Right);
        }
        json_response(&self.0).map(crate::body::Out::Left)
    }
}

/// A handler's result as the fast path answers it: an [`Answer`] with its
/// body as it is, an error as its usual answer.
pub(crate) fn out<T: json::Json>(result: Result<Answer<T>, AppError>) -> axum::http::Response<crate::body::Out>
where
    Answer<T>: axum::response::IntoResponse,
{
    result.map_or_else(
        |e| axum::response::IntoResponse::into_response(e).map(crate::body::Out::Right),
        Answer::into_out,
    )
}

/// `value`'s JSON, as a 200 answer.
fn json_response(value: &impl json::Json) -> axum::http::Response<http_body_util::Full<axum::body::Bytes>> {
    let body = axum::body::Bytes::from(json::to_vec(value));
    let mut response = axum::http::Response::new(http_body_util::Full::new(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(not(feature = "experiment-no-json"))]
impl<T: json::Json> axum::response::IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        json_response(&self.0).map(axum::body::Body::new)
    }
}

/// Milliseconds since `start`, to the microsecond.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    //! The registry against the function.json files the host reads, and the
    //! router built from it.

    use super::*;

    /// The registry's names are the folders under `function-app/`, one each.
    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a function is declared twice");
    }

    /// Each HTTP function declares each method once, and a route the path
    /// lookup (the invocation log's function name) finds again.
    #[test]
    fn routes_find_their_function() {
        for f in FUNCTIONS {
            if let Some(path) = f.api_path() {
                assert_eq!(by_path(FUNCTIONS, &path).map(|g| g.name), Some(f.name), "{path}");
                let mut methods = f.methods();
                let count = methods.len();
                methods.sort_unstable();
                methods.dedup();
                assert!(count > 0 && methods.len() == count, "{}: {methods:?}", f.name);
            }
            assert_eq!(
                by_path(FUNCTIONS, &format!("/{}", f.name)).map(|g| g.name),
                Some(f.name)
            );
            assert_eq!(by_name(FUNCTIONS, f.name).map(|g| g.name), Some(f.name));
        }
        assert_eq!(by_path(FUNCTIONS, "/api/cache").map(|f| f.name), Some("CacheItem"));
        assert_eq!(
            by_path(FUNCTIONS, "/api/cache/{key}/incr").map(|f| f.name),
            Some("CacheIncr")
        );
        assert!(by_path(FUNCTIONS, "/api/nothing").is_none());
        assert!(by_name(FUNCTIONS, "Nothing").is_none());
    }
}
