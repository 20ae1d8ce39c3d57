//! A function app of your own on this crate: the built-in functions, and
//! `Visits`, a function of its own that counts a page's visits in the
//! cache over the same Entra ID–authenticated, cluster-aware connection.
//!
//! Build it with `cargo build --release --example visits` and deploy
//! `target/release/examples/visits` as the custom handler
//! (`host.json`'s `defaultExecutablePath`), with
//! `function-app/Visits/function.json` beside the others:
//!
//! ```json
//! {"bindings": [
//!   {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function",
//!    "methods": ["post", "get"], "route": "visits/{page}"},
//!   {"type": "http", "direction": "out", "name": "res"}]}
//! ```
//!
//! `POST /api/visits/home` counts one visit and answers the count; `GET`
//! answers it. A visit is an `INCR`, which is not safe to send twice: when
//! the connection breaks after it was sent, the answer is a 503 that says
//! it may or may not have been counted (`CacheIncr` shows how to count
//! exactly once).

use azure_redis_handler::axum::extract::{Path, State};
use azure_redis_handler::axum::{routing, Json};
use azure_redis_handler::{redis, AppError, AppState, Endpoint, Function, HttpMethod, Trigger};
use serde_json::{json, Value};

/// `Visits`: `POST` counts a visit of `{page}`, `GET` reads the count.
const VISITS: Function = Function {
    name: "Visits",
    trigger: Trigger::Http {
        route: "visits/{page}",
        endpoints: &[
            Endpoint {
                method: HttpMethod::Post,
                handler: |on| routing::on(on, count),
            },
            Endpoint {
                method: HttpMethod::Get,
                handler: |on| routing::on(on, read),
            },
        ],
        also: &[],
    },
};

/// The key a page's count lives under.
fn key(page: &str) -> String {
    format!("visits:{page}")
}

/// Counts one visit; answers the count.
async fn count(State(state): State<AppState>, Path(page): Path<String>) -> Result<Json<Value>, AppError> {
    let visits: i64 = state.cache().query(redis::cmd("INCR").arg(key(&page))).await?;
    Ok(Json(json!({ "page": page, "visits": visits })))
}

/// Answers the count (0 for a page never visited).
async fn read(State(state): State<AppState>, Path(page): Path<String>) -> Result<Json<Value>, AppError> {
    let visits: Option<i64> = state.cache().query(redis::cmd("GET").arg(key(&page))).await?;
    Ok(Json(json!({ "page": page, "visits": visits.unwrap_or(0) })))
}

fn main() -> std::process::ExitCode {
    azure_redis_handler::run(&[VISITS])
}
