//! What the experiment builds put in place of a part of the GET hot path
//! they turn off, to measure its cost (the bench's `--profile` mode; see
//! the features in `Cargo.toml`). In no other build: each breaks the
//! contract.

#[cfg(feature = "experiment-no-router")]
pub(crate) use by_hand::by_hand;

/// `experiment-no-json`: the answers of `cache_item` without JSON, in
/// place of `Answer`'s JSON (which this build leaves out): `GET` answers
/// the stored value as it is (base64 when it is not UTF-8), `PUT` and
/// `DELETE` 204.
#[cfg(feature = "experiment-no-json")]
mod raw {
    use crate::functions::cache_item::{Deleted, Item, Stored};
    use crate::functions::Answer;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    impl IntoResponse for Answer<Item> {
        fn into_response(self) -> Response {
            self.0.value.or(self.0.value_base64).unwrap_or_default().into_response()
        }
    }

    impl IntoResponse for Answer<Stored> {
        fn into_response(self) -> Response {
            StatusCode::NO_CONTENT.into_response()
        }
    }

    impl IntoResponse for Answer<Deleted> {
        fn into_response(self) -> Response {
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// `experiment-no-router`: `GET /api/cache/{key}` without axum's routing
/// and extractors.
#[cfg(feature = "experiment-no-router")]
mod by_hand {
    use crate::functions::{cache_item, AppState};
    use axum::extract::{Path, Request, State};
    use axum::http::Method;
    use axum::response::IntoResponse;
    use axum::Router;
    use tower::ServiceExt;

    /// `routed` behind a matcher by hand: `GET /api/cache/{key}` with a key
    /// that needs no decoding goes straight to `cache_item::get`, the rest
    /// to `routed`. The invocation's log layer goes around the whole, so it
    /// finds no matched route (the line names the function `unknown`).
    pub(crate) fn by_hand(state: AppState, routed: Router) -> Router {
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let key = (request.method() == Method::GET)
                .then(|| request.uri().path().strip_prefix("/api/cache/"))
                .flatten()
                .filter(|key| !key.is_empty() && !key.contains(['/', '%']))
                .map(str::to_owned);
            let (state, routed) = (state.clone(), routed.clone());
            async move {
                match key {
                    Some(key) => Ok(cache_item::get(State(state), Ok(Path(key))).await.into_response()),
                    None => routed.oneshot(request).await,
                }
            }
        }))
    }
}
