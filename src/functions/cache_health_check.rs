//! `CacheHealthCheck`: the timer function.
//!
//! The host sends `POST /CacheHealthCheck` with the TimerInfo under any
//! binding name. The check PINGs, writes a probe key with a short TTL and
//! reads it back, counts the clients and reads the token's remaining
//! lifetime. It answers `{"Outputs": {}, "Logs": [...], "ReturnValue":
//! report}`; a failed check answers 500, so Azure counts the invocation as
//! failed, and writes its reasons to stderr, because the host drops `Logs` of
//! a non-2xx answer. The report, with the instance that ran it, is stored in
//! the cache under a key named for the app (see `last_check`), so `Health`
//! on any instance shows it.
//!
//! On a cluster the check runs on every master at once (PING and CLIENT
//! LIST on its connection, a probe key whose hash tag puts it on that
//! master) and reports each under `shards`; any master failing fails it.

use super::{elapsed_ms, last_check, Function, Trigger};
use crate::cache::ShardInfo;
use crate::error::AppError;
use crate::functions::AppState;
use crate::host::{binding, InvocationRequest, InvocationResponse, TimerInfo};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::time::{Instant, SystemTime};

/// `CacheHealthCheck`: the timer, every five minutes.
pub(crate) const FUNCTION: Function = Function {
    name: "CacheHealthCheck",
    trigger: Trigger::Timer {
        schedule: SCHEDULE,
        run: |state, request| Box::pin(async move { invoke(state, request).await.map(IntoResponse::into_response) }),
    },
};

/// When the timer runs (as `function-app/CacheHealthCheck/function.json` says).
const SCHEDULE: &str = "0 */5 * * * *";

/// Seconds the probe key lives.
pub(crate) const PROBE_TTL_S: u64 = 60;

/// What one check found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CheckReport {
    /// Whether every step passed (on every master).
    pub ok: bool,
    /// When the check ran (RFC 3339, UTC).
    pub checked_at: String,
    /// PING round trip, in milliseconds (on a cluster, the slowest master's).
    pub ping_ms: Option<f64>,
    /// SET then GET of the probe key, in milliseconds (the slowest master's).
    pub round_trip_ms: Option<f64>,
    /// The probe key used (on a cluster, the first master's).
    pub probe_key: String,
    /// Clients CLIENT LIST shows (on a cluster, on all masters together).
    pub client_count: Option<usize>,
    /// Seconds left on the access token (Entra ID only).
    pub token_expires_in_s: Option<u64>,
    /// Whether the host said this run is late.
    pub is_past_due: bool,
    /// When the host plans the next run, if it said.
    pub next_run: Option<String>,
    /// Why the check failed, one line per failed step.
    pub failures: Vec<String>,
    /// On a cluster, the same check on each master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<ShardCheck>>,
}

/// The check on one master of a cluster, or on the one endpoint.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShardCheck {
    /// The master (`ip:port`); absent for a standalone cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether every step passed.
    pub ok: bool,
    /// PING round trip, in milliseconds.
    pub ping_ms: Option<f64>,
    /// SET then GET of the probe key, in milliseconds.
    pub round_trip_ms: Option<f64>,
    /// The probe key, which hashes to this master.
    pub probe_key: String,
    /// Clients CLIENT LIST shows on this master.
    pub client_count: Option<usize>,
    /// Why the check failed, one line per failed step.
    pub failures: Vec<String>,
}

/// Runs the check against the shared connection, or every master's.
pub(crate) async fn run_check(state: &AppState, timer: &TimerInfo) -> CheckReport {
    let (checks, shards) = match state.cache().shards().await {
        Ok(Some(shards)) => {
            let checks = futures_util::future::join_all(shards.iter().map(|s| check_one(state, Some(s)))).await;
            (checks, true)
        }
        // Standalone, or the cache could not even be asked: the one check
        // reports why.
        Ok(None) | Err(_) => (vec![check_one(state, None).await], false),
    };
    let slowest =
        |f: fn(&ShardCheck) -> Option<f64>| checks.iter().map(f).try_fold(0.0_f64, |max, v| v.map(|v| max.max(v)));
    let failures: Vec<String> = checks
        .iter()
        .flat_map(|c| {
            c.failures.iter().map(move |f| match &c.node {
                Some(node) => format!("{node}: {f}"),
                None => f.clone(),
            })
        })
        .collect();
    CheckReport {
        ok: failures.is_empty(),
        checked_at: crate::clock::now_rfc3339(),
        ping_ms: slowest(|c| c.ping_ms),
        round_trip_ms: slowest(|c| c.round_trip_ms),
        probe_key: checks.first().map(|c| c.probe_key.clone()).unwrap_or_default(),
        client_count: checks.iter().map(|c| c.client_count).sum(),
        token_expires_in_s: state
            .cache()
            .tokens()
            .and_then(|t| t.peek())
            .map(|t| t.expires_in().as_secs()),
        is_past_due: timer.is_past_due,
        next_run: timer.schedule_status.as_ref().and_then(|s| s.next.clone()),
        failures,
        shards: shards.then_some(checks),
    }
}

/// PING, SET/GET of a probe key with a short TTL, CLIENT LIST: on the one
/// endpoint, or on the master `shard` (the probe key hashes to it). After a
/// failed PING nothing else is tried.
async fn check_one(state: &AppState, shard: Option<&ShardInfo>) -> ShardCheck {
    let mut failures = Vec::new();
    let probe_key = match shard {
        Some(s) => format!("healthcheck:{}:{}", s.tag, state.worker_id()),
        None => format!("healthcheck:{}", state.worker_id()),
    };
    let on_node = |cmd: redis::Cmd| async move {
        match shard {
            Some(s) => state.cache().query_node::<String>(&s.node, &cmd).await,
            None => state.cache().query::<String>(&cmd).await,
        }
    };

    let start = Instant::now();
    let ping = noted(&mut failures, "PING", on_node(redis::cmd("PING")).await);
    let ping_ms = ping.map(|_| elapsed_ms(start));
    let (round_trip_ms, client_count) = if ping_ms.is_some() {
        let round_trip_ms = round_trip(state, &probe_key, &mut failures).await;
        let clients = on_node(redis::cmd("CLIENT").arg("LIST").to_owned()).await;
        let client_count =
            noted(&mut failures, "CLIENT LIST", clients).map(|t| super::clients::parse_client_list(&t).len());
        (round_trip_ms, client_count)
    } else {
        (None, None)
    };

    ShardCheck {
        node: shard.map(|s| s.node.clone()),
        ok: failures.is_empty(),
        ping_ms,
        round_trip_ms,
        probe_key,
        client_count,
        failures,
    }
}

/// SET of a random value to the probe key, then GET of it: the time both
/// took, when the value read back is the one written.
async fn round_trip(state: &AppState, probe_key: &str, failures: &mut Vec<String>) -> Option<f64> {
    let value = fastrand::u64(..).to_string();
    let start = Instant::now();
    let set = redis::cmd("SET")
        .arg(probe_key)
        .arg(&value)
        .arg("EX")
        .arg(PROBE_TTL_S)
        .clone();
    noted(
        failures,
        "SET of the probe key",
        state.cache().query::<String>(&set).await,
    )?;
    let get = state
        .cache()
        .query::<Option<String>>(redis::cmd("GET").arg(probe_key))
        .await;
    let read = noted(failures, "GET of the probe key", get)?;
    if read.as_deref() != Some(value.as_str()) {
        failures.push(format!(
            "GET of the probe key returned {:?} instead of what was written",
            read.map(|_| "another value")
        ));
        return None;
    }
    Some(elapsed_ms(start))
}

/// The value of a step that worked; for one that failed, `"<what> failed:
/// <why>"` goes to `failures` and the answer is `None`.
fn noted<T>(failures: &mut Vec<String>, what: &str, result: Result<T, impl std::fmt::Display>) -> Option<T> {
    result.map_err(|e| failures.push(format!("{what} failed: {e}"))).ok()
}

/// Handles the host's timer envelope.
pub(crate) async fn invoke(
    state: &AppState,
    request: &InvocationRequest,
) -> Result<(StatusCode, Json<InvocationResponse>), AppError> {
    let timer: TimerInfo = binding(&request.data, None)
        .ok_or_else(|| AppError::BadRequest("the invocation has no timer trigger value (TimerInfo) in Data".into()))?;
    let report = run_check(state, &timer).await;
    // Kept in the cache, not in this process: on Flex Consumption the
    // timer's instances are not the ones serving Health.
    let period = last_check::period(timer.schedule_status.as_ref(), SCHEDULE, SystemTime::now());
    let record = last_check::record(state, &report, period);
    let stored = match last_check::store(state, &record, period).await {
        Ok((key, ttl)) => format!("result stored under {key} for {ttl} s"),
        Err(e) => {
            tracing::warn!(error = %e, "CacheHealthCheck could not store its result; Health on other instances will not see it");
            format!("result not stored: {e}")
        }
    };
    let summary = format!(
        "CacheHealthCheck {}: ping {} ms, round trip {} ms, {} clients, token expires in {} s{}",
        if report.ok { "passed" } else { "FAILED" },
        fmt_opt(report.ping_ms),
        fmt_opt(report.round_trip_ms),
        fmt_opt(report.client_count),
        fmt_opt(report.token_expires_in_s),
        if report.is_past_due { " (past due)" } else { "" },
    );
    let status = if report.ok {
        tracing::info!(ok = true, "{summary}");
        StatusCode::OK
    } else {
        // The host drops Logs of a failed invocation but logs stderr as Error.
        for reason in &report.failures {
            eprintln!("CacheHealthCheck failed: {reason}");
        }
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut logs = vec![summary, stored];
    logs.extend(report.failures.iter().cloned());
    let body = InvocationResponse {
        outputs: Default::default(),
        logs,
        return_value: record,
    };
    Ok((status, Json(body)))
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}
