//! What [`crate::run`] serves: the router behind [`Fast`], which takes the
//! hottest routes, `GET`, `PUT` and `DELETE /api/cache/{key}`, straight to
//! their handlers.
//!
//! Through axum's router each of those requests paid for the route table
//! lookup, the `MatchedPath` and URL parameters in the request's extensions,
//! three clones of boxed route services and their boxed futures, and the
//! extractors: about fifteen heap allocations, as many as the whole floor
//! server makes per request (`cargo run --release -p bench -- --profile`).
//! Here the path is matched by hand and the handlers are called with what
//! their extractors would have given them. The invocation layer is the
//! router's own ([`Begun`]), so the log line, the span and the metrics are
//! the same, and so are the answers.
//!
//! Anything else goes to the router unchanged: other paths, other methods
//! (`HEAD`, and the 405s), and any key the router would treat differently
//! from its raw text: one that needs percent-decoding (`%`), holds a `/`,
//! or is empty.

use super::Begun;
use crate::body::Out;
use crate::functions::cache_item;
use crate::functions::{self, AppState, Function};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, Query, Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::{BoxError, Router};
use futures_util::future::{Either, FutureExt};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::Service;

/// `CacheItem`'s route, as the router matches it (and names it in the
/// span): `/api/` and the function's `route`.
const ROUTE: &str = "/api/cache/{key}";

/// The router with `CacheItem` matched by hand in front of it; see the
/// module's documentation.
#[derive(Clone)]
pub(crate) struct Fast {
    router: Router,
    state: AppState,
    /// `CacheItem`, as the state serves it.
    function: Function,
}

impl Fast {
    /// `router` (the router of `state`'s functions) with the fast path in
    /// front.
    pub(crate) fn new(router: Router, state: AppState) -> Self {
        let function = *functions::by_path(state.functions(), ROUTE).unwrap_or(&cache_item::FUNCTION);
        Self {
            // Every route turned into its service once, here, and shared:
            // a `Router` served as it is rebuilds its route table for each
            // connection.
            router: router.with_state(()),
            state,
            function,
        }
    }
}

/// A `CacheItem` method the fast path takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    Get,
    Put,
    Delete,
}

/// The method and the key of a request the fast path takes, if it is one.
fn hot<B>(request: &axum::http::Request<B>) -> Option<(Hot, &str)> {
    if cfg!(feature = "experiment-no-fast-path") {
        return None;
    }
    let method = match *request.method() {
        Method::GET => Hot::Get,
        Method::PUT => Hot::Put,
        Method::DELETE => Hot::Delete,
        _ => return None,
    };
    let key = request.uri().path().strip_prefix(PREFIX)?;
    (!key.is_empty() && !key.contains(['/', '%'])).then_some((method, key))
}

/// What comes before the key in [`ROUTE`].
const PREFIX: &str = "/api/cache/";

/// The key of a request [`hot`] took.
fn key_of<B>(request: &axum::http::Request<B>) -> &str {
    &request.uri().path()[PREFIX.len()..]
}

/// The answer of the fast path's handler, boxed on its own (see
/// [`Fast::answer`]).
type Handled = Pin<Box<dyn Future<Output = Result<axum::http::Response<Out>, Infallible>> + Send>>;

impl Service<Request> for Fast {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so are the handlers.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = self.answer(request);
        Box::pin(async move { Ok(answer.await?.map(Body::new)) })
    }
}

impl Fast {
    /// The answer to `request`, with its body as the server writes it
    /// ([`Out`]).
    ///
    /// The future is not boxed: the server keeps it in hyper's slot for the
    /// request in flight, made once per connection. The handler's future
    /// inside it is, on its own, so that the layers of the invocation around
    /// it (the log line's scope, the span's) move a pointer, not the
    /// handler's future: each move of that copied about 1.5 KiB. A `GET`'s
    /// request body is never boxed: only `PUT` and the router read one.
    pub(crate) fn answer<B>(
        &self,
        request: axum::http::Request<B>,
    ) -> impl Future<Output = Result<axum::http::Response<Out>, Infallible>> + Send + 'static
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some((method, _)) = hot(&request) else {
            let routed = self.router.clone().call(request);
            return Either::Left(routed.map(|routed| Ok(routed?.map(Out::Right))));
        };
        // The trace context goes nowhere: no `CacheItem` handler calls on.
        let (begun, _) = Begun::start(Some(&self.function), Some(ROUTE), &request);
        let handled = handler(method, State(self.state.clone()), request);
        Either::Right(begun.run(handled).map(Ok))
    }
}

/// The fast path's handler of `method` for `request`, boxed (see
/// [`Fast::answer`]).
fn handler<B>(method: Hot, state: State<AppState>, request: axum::http::Request<B>) -> Handled
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(async move {
        Ok(match method {
            Hot::Get => cache_item::get_key(state, key_of(&request)).await,
            Hot::Put => {
                let query = Query::try_from_uri(request.uri());
                let key = Ok(Path(key_of(&request).to_owned()));
                functions::out(cache_item::put(state, key, query, Body::new(request.into_body())).await)
            }
            Hot::Delete => {
                let key = Ok(Path(key_of(&request).to_owned()));
                let (parts, _) = request.into_parts();
                // Boxed on its own: the largest of the three (its
                // script, tried as `EVALSHA` and then `EVAL`), and the
                // least called; unboxed, every `GET`'s and `PUT`'s box
                // was made that much larger.
                functions::out(Box::pin(cache_item::delete(state, key, parts.headers)).await)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_state;
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// The box a `GET` is handled in holds no room for a `DELETE`'s
    /// handler, the largest of the three, which has a box of its own.
    /// (Checked broken: unboxed, the `GET`'s box is the larger.)
    #[test]
    fn a_get_is_handled_in_a_box_smaller_than_a_deletes_handler() {
        let state = test_state(1024);
        let request = axum::http::Request::get("/api/cache/k").body(Body::empty()).unwrap();
        let get = handler(Hot::Get, State(state.clone()), request);
        let delete = cache_item::delete(State(state), Ok(Path("k".to_owned())), axum::http::HeaderMap::new());
        let (get, delete) = (std::mem::size_of_val(&*get), std::mem::size_of_val(&delete));
        assert!(get < delete, "a GET's box: {get} bytes; a DELETE's handler: {delete}");
    }

    /// `ROUTE` is `CacheItem`'s route as the registry declares it.
    #[test]
    fn route_is_cache_items() {
        assert_eq!(cache_item::FUNCTION.api_path().as_deref(), Some(ROUTE));
    }

    /// Only `GET`, `PUT` and `DELETE` with a key that is its own raw text
    /// take the fast path.
    #[test]
    fn takes_only_plain_keys_of_three_methods() {
        let request = |method: &str, uri: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap()
        };
        for (method, uri, want) in [
            ("GET", "/api/cache/k", Some((Hot::Get, "k"))),
            ("PUT", "/api/cache/k.1-x_y?ttl=5", Some((Hot::Put, "k.1-x_y"))),
            ("DELETE", "/api/cache/k", Some((Hot::Delete, "k"))),
            ("HEAD", "/api/cache/k", None),
            ("POST", "/api/cache/k", None),
            ("GET", "/api/cache/", None),
            ("GET", "/api/cache", None),
            ("GET", "/api/cache/a%20b", None),
            ("GET", "/api/cache/a/b", None),
            ("GET", "/api/cache/k/incr", None),
            ("GET", "/api/cachek", None),
            ("GET", "/api/ping", None),
        ] {
            assert_eq!(hot(&request(method, uri)), want, "{method} {uri}");
        }
    }

    /// Status, headers and body, as hyper writes them: the router puts a
    /// `content-length` in the headers, where hyper writes one from the
    /// body's exact size when there is none.
    async fn answer(response: Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use axum::body::HttpBody;
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        if !response.headers().contains_key("content-length") {
            let exact = response.body().size_hint().exact().expect("a body of known size");
            headers.push(("content-length".into(), exact.to_string()));
        }
        headers.sort();
        (
            status,
            headers,
            response.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    }

    /// Every request answers the same through the fast path as through the
    /// router: bad keys, bad TTLs, bad and oversized values, other methods,
    /// and a cache that cannot be reached.
    #[tokio::test]
    async fn answers_as_the_router_does() {
        // Each with a cache of its own, so that both meet it in the same
        // state (its errors say how long it has been failing).
        let router = super::super::router(test_state(10));
        let fast = test_state(10);
        let fast = Fast::new(super::super::router(fast.clone()), fast);
        let long = format!("/api/cache/{}", "k".repeat(1025));
        let cases: Vec<(&str, &str, &[u8])> = vec![
            ("GET", "/api/cache/k", b""),
            ("GET", &long, b""),
            ("GET", "/api/cache/%FF", b""),
            ("GET", "/api/cache/a%20b", b""),
            ("GET", "/api/cache/", b""),
            ("HEAD", "/api/cache/k", b""),
            ("PATCH", "/api/cache/k", b""),
            ("PUT", "/api/cache/k", b"v"),
            ("PUT", "/api/cache/k?ttl=0", b"v"),
            ("PUT", "/api/cache/k?ttl=abc", b"v"),
            ("PUT", "/api/cache/k?ttl=%zz", b"v"),
            ("PUT", "/api/cache/k?ttl=5&code=x", b"v"),
            ("PUT", "/api/cache/k", &[0xff, 0xfe]),
            ("PUT", "/api/cache/k", b"01234567890"),
            ("PUT", &long, b"v"),
            ("DELETE", "/api/cache/k", b""),
            ("DELETE", &long, b""),
        ];
        for (method, uri, body) in cases {
            let request = || {
                axum::http::Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("x-azure-functions-invocationid", "7c3f3b9e-1d3c-4bd6-9c55-0e8bd6a3c0a1")
                    .body(Body::from(body.to_vec()))
                    .unwrap()
            };
            let routed = answer(router.clone().oneshot(request()).await.unwrap()).await;
            let fast = answer(fast.clone().oneshot(request()).await.unwrap()).await;
            assert_eq!(fast, routed, "{method} {uri}");
        }
    }
}
