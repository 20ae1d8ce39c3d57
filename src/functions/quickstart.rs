//! `Quickstart`: the seed scenario of Microsoft's Python quickstart in one
//! call: PING, SET `Message`, GET `Message`, CLIENT LIST.

use super::{elapsed_ms, Endpoint, Function, HttpMethod, Trigger};
use crate::error::AppError;
use crate::functions::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::time::Instant;

/// `Quickstart`: `POST /api/quickstart`.
pub(crate) const FUNCTION: Function = Function {
    name: "Quickstart",
    trigger: Trigger::Http {
        route: "quickstart",
        endpoints: &[Endpoint {
            method: HttpMethod::Post,
            handler: |on| axum::routing::on(on, quickstart),
        }],
        also: &[],
    },
};

/// The value the quickstart stores under `Message`.
pub(crate) const MESSAGE: &str = "Hello, The cache is working with Rust!";

/// Runs the four steps in order; the first failure ends the call.
pub(crate) async fn quickstart(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let start = Instant::now();
    let pong: String = state.cache().query(&redis::cmd("PING")).await?;
    let ping_ms = elapsed_ms(start);

    let start = Instant::now();
    let set: String = state
        .cache()
        .query(redis::cmd("SET").arg("Message").arg(MESSAGE))
        .await?;
    let set_ms = elapsed_ms(start);

    let start = Instant::now();
    let got: Option<String> = state.cache().query(redis::cmd("GET").arg("Message")).await?;
    let get_ms = elapsed_ms(start);

    let start = Instant::now();
    let clients = super::clients::list(&state).await?;
    let list_ms = elapsed_ms(start);

    Ok(Json(json!({
        "ping": { "command": "PING", "result": pong == "PONG", "latency_ms": ping_ms },
        "set": { "command": "SET Message", "result": set == "OK", "value": MESSAGE, "latency_ms": set_ms },
        "get": { "command": "GET Message", "result": got, "latency_ms": get_ms },
        "client_list": { "command": "CLIENT LIST", "count": clients.len(), "clients": clients, "latency_ms": list_ms },
    })))
}
