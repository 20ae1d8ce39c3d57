//! The handler as a program: read the settings, set up logging, bind,
//! serve until SIGTERM. [`crate::run`] is the whole `main` of the `handler`
//! binary, and of a function app of one's own that adds its functions to
//! the built-in ones; `handler doctor` runs the first-run check instead.

use crate::functions::AppState;
use crate::functions::Function;
use crate::router::Fast;
use crate::settings::Settings;
use crate::state::{process_state, StartupError};
use crate::{doctor, malloc, otel, router, server, telemetry, tls};
use std::process::ExitCode;

/// Runs the function app: the built-in functions and `extra` ones, served
/// as the Functions host expects of a custom handler (`127.0.0.1` on the
/// port the host gives, ready at once, one Entra ID–authenticated
/// connection per process, a drain on SIGTERM), until the host stops it.
/// With the argument `doctor`, checks the connection it would make instead
/// and exits. Exit codes: 0 after a clean stop, 1 on a runtime failure, 2
/// for a bad setting.
///
/// ```no_run
/// use azure_redis_handler::axum::extract::{Path, State};
/// use azure_redis_handler::axum::{routing, Json};
/// use azure_redis_handler::{redis, AppError, AppState, Endpoint, Function, HttpMethod, Trigger};
///
/// /// `POST /api/visits/{page}`: counts a page's visits.
/// const VISITS: Function = Function {
///     name: "Visits",
///     trigger: Trigger::Http {
///         route: "visits/{page}",
///         endpoints: &[Endpoint { method: HttpMethod::Post, handler: |on| routing::on(on, visit) }],
///         also: &[],
///     },
/// };
///
/// async fn visit(State(state): State<AppState>, Path(page): Path<String>) -> Result<Json<i64>, AppError> {
///     Ok(Json(state.cache().query(redis::cmd("INCR").arg(format!("visits:{page}"))).await?))
/// }
///
/// fn main() -> std::process::ExitCode {
///     azure_redis_handler::run(&[VISITS])
/// }
/// ```
pub fn run(extra: &[Function]) -> ExitCode {
    let workers = runtime_workers();
    malloc::use_an_arena_per_worker(workers);
    let check = std::env::args().nth(1).is_some_and(|a| a == "doctor");
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) if check => runtime.block_on(check_only()),
        Ok(runtime) => runtime.block_on(serve(extra)),
        Err(e) => {
            eprintln!("handler: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// The runtime's worker threads, as tokio would choose them: the number in
/// `TOKIO_WORKER_THREADS` if it holds one, else one for each core this
/// process may use (a CPU quota counts).
fn runtime_workers() -> usize {
    workers_of(
        std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
        std::thread::available_parallelism().ok().map(usize::from),
    )
}

/// [`runtime_workers`] from the variable's value and the cores.
fn workers_of(variable: Option<&str>, cores: Option<usize>) -> usize {
    variable
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or(cores)
        .unwrap_or(1)
}

async fn serve(extra: &[Function]) -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => return fail(&e.into()),
    };
    // Held to the end: dropping it writes the log lines still waiting.
    let _log = telemetry::init(settings.log_format);
    // Building the cache installs the TLS crypto provider.
    let state = match process_state(&settings) {
        Ok(state) => state.with_functions(extra),
        Err(e) => return fail(&e),
    };
    let telemetry = start_telemetry(&settings, &state);
    let listener = match server::bind(settings.listen_port).await {
        Ok(l) => l,
        Err(source) => {
            return fail(&StartupError::Listen {
                port: settings.listen_port,
                source,
            })
        }
    };
    tracing::info!(port = settings.listen_port, cache = %crate::settings::endpoint(&settings.redis.host, settings.redis.port), "handler listening on 127.0.0.1");
    state.warm_up();
    let app = Fast::new(router(state.clone()), state);
    server::serve(listener, app, settings.drain).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown(TELEMETRY_FLUSH).await;
    }
    ExitCode::SUCCESS
}

/// How long the last telemetry export may take when the handler stops.
const TELEMETRY_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// OTLP export, when the `OTEL_*` variables ask for it, with the token's
/// remaining lifetime as a gauge.
fn start_telemetry(settings: &Settings, state: &AppState) -> Option<otel::Running> {
    let running = otel::start(
        &settings.app_name,
        &settings.instance_id,
        settings.redis.extra_ca_file.as_deref(),
    )?;
    if let (Some(metrics), Some(tokens)) = (otel::recorder(), state.cache().tokens()) {
        let tokens = tokens.clone();
        metrics.observe(
            otel::TOKEN_LIFETIME,
            Box::new(move || tokens.peek().map(|t| t.expires_in().as_secs_f64())),
        );
    }
    Some(running)
}

/// Prints why the handler cannot start, on one line, and gives its exit code.
fn fail(e: &StartupError) -> ExitCode {
    eprintln!("handler: {e}");
    ExitCode::from(e.exit_code())
}

/// `handler doctor`: each step of the connection, printed; exit 0 when all
/// pass, 1 when one fails, 2 for bad settings (as the handler itself).
async fn check_only() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            println!("  FAILED  settings        {e}");
            return ExitCode::from(2);
        }
    };
    tls::install_crypto_provider();
    println!("handler doctor: the connection the handler would make with these settings");
    if doctor::run(&settings, &mut std::io::stdout()).await {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TOKIO_WORKER_THREADS` sets the workers when it holds a number
    /// above zero; otherwise the cores do, and one without either.
    #[test]
    fn workers_as_tokio_counts_them() {
        assert_eq!(workers_of(Some("3"), Some(2)), 3);
        assert_eq!(workers_of(Some(" 5 "), None), 5);
        assert_eq!(workers_of(Some("0"), Some(2)), 2);
        assert_eq!(workers_of(Some("many"), Some(4)), 4);
        assert_eq!(workers_of(None, Some(2)), 2);
        assert_eq!(workers_of(None, None), 1);
    }
}
