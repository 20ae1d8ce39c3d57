//! The envelope adapter: the host's `POST /<FunctionName>` for a timer, or
//! for an HTTP function that has other bindings, turned into a call of the
//! function (a timer's body, or the same `/api/...` route the proxy
//! reaches) and its answer wrapped for the host (`Outputs.res`).

use crate::error::AppError;
use crate::functions::AppState;
use crate::functions::{self, Trigger};
use crate::host::{binding, HttpRequestData, HttpResponseData, InvocationRequest, InvocationResponse};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower::ServiceExt;

/// `POST /<FunctionName>`: the host's envelope for a timer or an HTTP function.
pub(crate) async fn envelope(
    State((state, api)): State<(AppState, Router)>,
    Path(function): Path<String>,
    body: Body,
) -> Result<Response, AppError> {
    let spec = functions::by_name(state.functions(), &function)
        .ok_or_else(|| AppError::NotFound(format!("no function named {function:?}")))?;
    let limit = state.max_value_bytes().saturating_mul(2).saturating_add(64 * 1024);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::PayloadTooLarge(limit))?;
    let request = crate::host::parse_invocation(&bytes).map_err(AppError::BadRequest)?;
    match spec.trigger {
        Trigger::Timer { run, .. } => run(&state, &request).await,
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
