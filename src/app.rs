//! The router, the state it shares, and per-invocation logging.
//!
//! Two ways in, one set of handlers: the host passes HTTP requests at their
//! original `/api/...` paths, streamed by its proxy
//! (`enableProxyingHttpRequest`) or forwarded (`enableForwardingHttpRequest`,
//! legacy), and sends everything else as `POST /<FunctionName>` envelopes,
//! which [`envelope`] turns back into `/api/...` requests for the same router.
//!
//! Whichever way, the invocation id comes in a header
//! (`X-Azure-Functions-InvocationId`, and from the proxy `x-ms-invocation-id`
//! too) and every log line of the invocation carries it: the proxy's answer
//! has no `Logs` array for the host to file under the invocation.

use crate::cache::{Auth, Cache, Target};
use crate::credential::AzureTokenSource;
use crate::error::AppError;
use crate::functions::{self, cache_item, health_check, Trigger};
use crate::host::{binding, HttpRequestData, HttpResponseData, InvocationRequest, InvocationResponse};
use crate::settings::{AuthSettings, Settings};
use crate::token::TokenManager;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

/// What every handler shares. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The one Redis connection.
    pub cache: Arc<Cache>,
    /// Largest value a PUT may store.
    pub max_value_bytes: usize,
    /// Names this process (probe keys).
    pub worker_id: Arc<str>,
    /// The last timer check, for Health.
    pub last_check: Arc<Mutex<Option<health_check::CheckReport>>>,
}

impl AppState {
    /// State around an existing cache handle.
    pub fn new(cache: Arc<Cache>, settings: &Settings) -> Self {
        Self {
            cache,
            max_value_bytes: settings.max_value_bytes,
            worker_id: settings.worker_id.as_str().into(),
            last_check: Arc::default(),
        }
    }
}

/// Builds the cache handle the settings describe (no I/O: nothing connects yet).
pub fn build_cache(settings: &Settings) -> Result<Arc<Cache>, String> {
    let target = Target::from_settings(&settings.redis, settings.deadlines)?;
    let auth = match &settings.redis.auth {
        AuthSettings::AccessKey { user, password } => Auth::AccessKey {
            user: user.clone(),
            password: password.clone(),
        },
        AuthSettings::Entra(entra) => {
            let source = AzureTokenSource::from_choice(&entra.credential, entra.scope.clone())
                .map_err(|e| format!("credential: {e}"))?;
            Auth::Entra(Arc::new(TokenManager::new(
                Arc::new(source),
                entra.principal_id.clone(),
                entra.refresh_offset,
                settings.deadlines.token_fetch,
            )))
        }
    };
    Ok(Cache::with_mode(target, auth, settings.redis.cluster_mode))
}

/// The `/api/...` routes alone (what proxying and forwarding reach, and what envelopes are turned into).
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/api/ping", get(functions::ping::ping).fallback(method_not_allowed))
        .route(
            "/api/cache/{key}",
            get(cache_item::get)
                .put(cache_item::put)
                .delete(cache_item::delete)
                .fallback(method_not_allowed),
        )
        .route("/api/cache/", axum::routing::any(cache_item::empty_key))
        .route("/api/cache", axum::routing::any(cache_item::empty_key))
        .route(
            "/api/clients",
            get(functions::clients::clients).fallback(method_not_allowed),
        )
        .route(
            "/api/quickstart",
            post(functions::quickstart::quickstart).fallback(method_not_allowed),
        )
        .route(
            "/api/health",
            get(functions::health::health).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The whole handler: readiness, `/api/...`, envelopes, logging.
pub fn app(state: AppState) -> Router {
    let api = api_router(state.clone());
    let envelopes = Router::new()
        .route("/{function}", post(envelope).fallback(method_not_allowed))
        .with_state((state, api.clone()));
    Router::new()
        .route("/", get(ready).head(ready))
        .merge(api)
        .merge(envelopes)
        .fallback(not_found)
        .layer(middleware::from_fn(log_invocation))
}

/// `GET /`: the host polls this every 25 ms until it answers.
async fn ready() -> StatusCode {
    StatusCode::OK
}

async fn not_found(uri: axum::http::Uri) -> AppError {
    AppError::NotFound(format!("no function is served at {}", uri.path()))
}

async fn method_not_allowed(method: Method) -> AppError {
    AppError::MethodNotAllowed(method.to_string())
}

/// `POST /<FunctionName>`: the host's envelope for a timer or an HTTP function.
async fn envelope(
    State((state, api)): State<(AppState, Router)>,
    Path(function): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let spec = functions::FUNCTIONS
        .iter()
        .find(|f| f.name == function)
        .ok_or_else(|| AppError::NotFound(format!("no function named {function:?}")))?;
    let limit = state.max_value_bytes.saturating_mul(2).saturating_add(64 * 1024);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::PayloadTooLarge(limit))?;
    let request = crate::host::parse_invocation(&bytes).map_err(AppError::BadRequest)?;
    match spec.trigger {
        Trigger::Timer => health_check::invoke(&state, &request)
            .await
            .map(IntoResponse::into_response),
        Trigger::Http { .. } => http_envelope(api, &request).await,
    }
}

/// Runs an enveloped HTTP request through the `/api` router and wraps the answer in `Outputs.res`.
async fn http_envelope(api: Router, request: &InvocationRequest) -> Result<Response, AppError> {
    let http: HttpRequestData = binding(&request.data, Some("req"))
        .ok_or_else(|| AppError::BadRequest("the invocation has no HTTP request (Data.req)".into()))?;
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|_| AppError::BadRequest("Data.req.Method is not an HTTP method".into()))?;
    let mut builder = axum::http::Request::builder().method(method).uri(http.path_and_query());
    for (name, value) in http.header_pairs() {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            // The body length is recomputed from Body below.
            if n != axum::http::header::CONTENT_LENGTH {
                builder = builder.header(n, v);
            }
        }
    }
    let inner = builder
        .body(Body::from(http.body_bytes()))
        .map_err(|_| AppError::BadRequest("Data.req.Url is not a valid URL".into()))?;
    let response = api.oneshot(inner).await.unwrap_or_else(|never| match never {});
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let res = HttpResponseData {
        status_code: status,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    };
    let mut outputs = serde_json::Map::new();
    outputs.insert("res".into(), serde_json::to_value(res).unwrap_or_default());
    Ok(Json(InvocationResponse {
        outputs,
        logs: Vec::new(),
        return_value: serde_json::Value::Null,
    })
    .into_response())
}

/// The headers that may carry the host's invocation id, in the order they
/// are read: the host's own, then the one its proxy adds.
const INVOCATION_ID_HEADERS: [&str; 2] = ["x-azure-functions-invocationid", "x-ms-invocation-id"];

/// The invocation id: the first of [`INVOCATION_ID_HEADERS`] with a usable
/// value, at most 64 characters; empty when none has one.
fn invocation_id(headers: &axum::http::HeaderMap) -> &str {
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
async fn log_invocation(request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str);
    if path == "/" {
        return next.run(request).await;
    }
    let function = match functions::by_path(path) {
        Some(f) => f.name,
        None if path == "/{function}" => functions::by_path(request.uri().path()).map_or("unknown", |f| f.name),
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
#[path = "app_tests.rs"]
mod tests;
