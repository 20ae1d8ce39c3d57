//! The `handler` binary: read settings, set up logging, bind, serve.
//! `handler doctor` checks the connection it would make instead (see
//! [`azure_redis_handler::doctor`]).

use azure_redis_handler::state::{process_state, StartupError};
use azure_redis_handler::{doctor, malloc, router, server, settings::Settings, telemetry, tls};
use std::process::ExitCode;

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
        Err(e) => return fail(&e.into()),
    };
    // Held to the end: dropping it writes the log lines still waiting.
    let _log = telemetry::init(settings.log_format);
    tls::install_crypto_provider();
    let state = match process_state(&settings) {
        Ok(state) => state,
        Err(e) => return fail(&e),
    };
    let listener = match server::bind(settings.listen_port).await {
        Ok(l) => l,
        Err(source) => {
            return fail(&StartupError::Listen {
                port: settings.listen_port,
                source,
            })
        }
    };
    tracing::info!(port = settings.listen_port, cache = %format!("{}:{}", settings.redis.host, settings.redis.port), "handler listening on 127.0.0.1");
    state.warm_up();
    match server::serve(listener, router::router(state), settings.drain).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handler: server error: {e}");
            ExitCode::from(1)
        }
    }
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
