//! The `handler` binary: read settings, set up logging, bind, serve.
//! `handler doctor` checks the connection it would make instead (see
//! [`azure_redis_handler::doctor`]).

use azure_redis_handler::{app, cache::Cache, doctor, malloc, server, settings::Settings, telemetry, tls};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

/// The process-wide Redis connection, shared by every invocation.
static CACHE: OnceLock<Arc<Cache>> = OnceLock::new();

fn main() -> ExitCode {
    malloc::use_one_arena();
    let check = std::env::args().nth(1).is_some_and(|a| a == "doctor");
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) if check => runtime.block_on(check_only()),
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("handler: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("handler: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end: dropping it writes the log lines still waiting.
    let _log = telemetry::init(settings.log_format);
    tls::install_crypto_provider();
    let cache = match app::build_cache(&settings) {
        Ok(c) => CACHE.get_or_init(|| c).clone(),
        Err(e) => {
            eprintln!("handler: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match server::bind(settings.listen_port).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("handler: cannot listen on 127.0.0.1:{}: {e}", settings.listen_port);
            return ExitCode::from(1);
        }
    };
    tracing::info!(port = settings.listen_port, cache = %format!("{}:{}", settings.redis.host, settings.redis.port), "handler listening on 127.0.0.1");
    // Warm up in the background: the first invocation then finds a token and
    // a connection ready, and start-up never waits for either.
    let warm = cache.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.warm_up().await {
            tracing::warn!(error = %e, "warm-up failed; the first invocation will try again");
        }
    });
    let state = app::AppState::new(cache, &settings);
    match server::serve(listener, app::app(state), settings.drain).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handler: server error: {e}");
            ExitCode::from(1)
        }
    }
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
