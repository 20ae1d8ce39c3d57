//! Logging set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
//! switches to JSON lines.
//!
//! Warnings and errors go to stderr, the rest to stdout: the Functions host
//! logs stdout at Information and stderr as Error (Warning when the line says
//! "warn"), so levels survive the trip.

use crate::settings::LogFormat;
use tracing::Level;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = std::io::stderr.with_max_level(Level::WARN).or_else(std::io::stdout);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
