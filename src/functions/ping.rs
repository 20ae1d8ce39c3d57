//! `Ping`: `GET /api/ping` answers `{"pong": true, "latency_ms": n}`.

use super::{elapsed_ms, Endpoint, Function, HttpMethod, Trigger};
use crate::error::AppError;
use crate::functions::AppState;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::time::Instant;

/// What `GET /api/ping` answers.
#[derive(Debug, Serialize)]
pub(crate) struct Pong {
    /// Whether Redis answered PONG.
    pub pong: bool,
    /// Round trip of the PING, in milliseconds.
    pub latency_ms: f64,
}

/// Sends PING on the shared connection.
/// `Ping`: `GET /api/ping`.
pub(crate) const FUNCTION: Function = Function {
    name: "Ping",
    trigger: Trigger::Http {
        route: "ping",
        endpoints: &[Endpoint {
            method: HttpMethod::Get,
            handler: |on| axum::routing::on(on, ping),
        }],
        also: &[],
    },
};

pub(crate) async fn ping(State(state): State<AppState>) -> Result<Json<Pong>, AppError> {
    let start = Instant::now();
    let reply: String = state.cache().query(&redis::cmd("PING")).await?;
    Ok(Json(Pong {
        pong: reply == "PONG",
        latency_ms: elapsed_ms(start),
    }))
}
