//! What the experiment builds put in place of a part of the GET hot path
//! they turn off, to measure its cost (the bench's `--profile` mode; see
//! the features in `Cargo.toml`). In no other build: each breaks the
//! contract.

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

    impl IntoResponse for Answer<Item<'_>> {
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
