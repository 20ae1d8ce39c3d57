//! The router and per-invocation logging.
//!
//! Two ways in, one set of handlers: the host passes HTTP requests at their
//! original `/api/...` paths, streamed by its proxy
//! (`enableProxyingHttpRequest`) or forwarded (`enableForwardingHttpRequest`,
//! legacy), and sends everything else as `POST /<FunctionName>` envelopes,
//! which [`crate::host::envelope`] turns back into `/api/...` requests for
//! the same router (or runs as a timer). Routes come from the function
//! registry, [`functions::FUNCTIONS`].
//!
//! Functions added with [`AppState::with_functions`] are served the same
//! way as the built-in ones.
//!
//! Whichever way, the invocation id comes in a header
//! (`X-Azure-Functions-InvocationId`, and from the proxy `x-ms-invocation-id`
//! too) and every log line of the invocation carries it: the proxy's answer
//! has no `Logs` array for the host to file under the invocation.

mod envelope;

use crate::error::AppError;
use crate::functions::AppState;
use crate::functions::{self, Function, Trigger};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The `/api/...` routes alone, one per HTTP function of the state
/// (what proxying and forwarding reach, and what envelopes are turned into).
fn api_router(state: AppState) -> Router {
    let mut router = Router::new();
    for function in state.functions() {
        let (Some(path), Some(methods)) = (function.api_path(), function.method_router()) else {
            continue;
        };
        router = router.route(&path, methods.fallback(method_not_allowed));
        if let Trigger::Http { also, .. } = function.trigger {
            for (path, methods) in also {
                router = router.route(path, methods());
            }
        }
    }
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The whole handler for `state`'s functions: readiness (`GET /`), the
/// HTTP functions at `/api/...`, the host's envelopes (`POST /<Name>`), and
/// one log line per invocation. [`crate::run`] serves it; a program of its
/// own can serve it, or merge it into a router of its own.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use azure_redis_handler::{router, AppState, Cache, Settings};
///
/// let settings = Settings::from_env()?;
/// let state = AppState::new(Cache::from_settings(&settings)?, &settings);
/// let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.listen_port)).await?;
/// axum::serve(listener, router(state)).await?;
/// # Ok(()) }
/// ```
pub fn router(state: AppState) -> Router {
    let functions: Arc<[Function]> = state.functions().into();
    let api = api_router(state.clone());
    let envelopes = Router::new()
        .route("/{function}", post(envelope::envelope).fallback(method_not_allowed))
        .with_state((state, api.clone()));
    Router::new()
        .route("/", get(ready).head(ready))
        .merge(api)
        .merge(envelopes)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(functions, log_invocation))
}

/// `GET /`: the host polls this every 25 ms until it answers.
async fn ready() -> StatusCode {
    StatusCode::OK
}

async fn not_found(uri: axum::http::Uri) -> AppError {
    AppError::NotFound(format!("no function is served at {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method) -> AppError {
    AppError::MethodNotAllowed(method.to_string())
}

/// The headers that may carry the host's invocation id, in the order they
/// are read: the host's own, then the one its proxy adds.
const INVOCATION_ID_HEADERS: [&str; 2] = ["x-azure-functions-invocationid", "x-ms-invocation-id"];

/// The invocation id: the first of [`INVOCATION_ID_HEADERS`] with a usable
/// value, at most 64 characters; empty when none has one.
pub(crate) fn invocation_id(headers: &axum::http::HeaderMap) -> &str {
    let id = INVOCATION_ID_HEADERS
        .iter()
        .flat_map(|h| headers.get_all(*h))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|v| !v.is_empty())
        .unwrap_or("");
    id.char_indices().nth(64).map_or(id, |(end, _)| &id[..end])
}

/// Runs the invocation in a span holding the function name and invocation
/// id, so that every line it logs carries both, and logs one line when it is
/// done: function, invocation id, status, duration.
async fn log_invocation(State(functions): State<Arc<[Function]>>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str);
    if path == "/" {
        return next.run(request).await;
    }
    let function = match functions::by_path(&functions, path) {
        Some(f) => f.name,
        None if path == "/{function}" => {
            functions::by_path(&functions, request.uri().path()).map_or("unknown", |f| f.name)
        }
        None => "unknown",
    };
    // Borrowed: the span formats it right away.
    let invocation_id = invocation_id(request.headers());
    let method = request.method().clone();
    let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id);
    let start = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(%method, status, duration_ms = crate::functions::elapsed_ms(start), "invocation done");
    });
    response
}

#[cfg(test)]
mod tests;
