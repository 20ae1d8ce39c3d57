//! Logging set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
//! switches to JSON lines.
//!
//! Warnings and errors go to stderr, the rest to stdout: the Functions host
//! logs stdout at Information and stderr as Error (Warning when the line says
//! "warn"), so levels survive the trip.
//!
//! Stdout is written in batches, by a logging thread ([`log_writer`]):
//! lossless, at most about one write a millisecond. The [`LogGuard`] writes
//! what is left when `main` returns. Warnings and errors are rare and stay
//! unbuffered.

use crate::settings::LogFormat;
use crate::{log_line, log_writer};
use tracing::Level;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Writes what is left when dropped; keep it alive for the whole of `main`.
#[derive(Debug)]
pub(crate) struct LogGuard {
    _writer: Option<log_writer::Guard>,
}

/// Installs the global subscriber (once; later calls do nothing).
pub(crate) fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (stdout, guard) = log_writer::start(std::io::stdout());
    let info_out = stdout.clone();
    let writer = std::io::stderr.with_max_level(Level::WARN).or_else(stdout);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    // An invocation's lines are written by `log_line::Line`, the rest by
    // the formatter it wraps.
    let installed = match format {
        LogFormat::Text => builder.event_format(log_line::Line::text()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(log_line::Line::json())
            .try_init(),
    };
    if installed.is_ok() {
        log_line::installed(matches!(format, LogFormat::Json), info_out);
    }
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}
