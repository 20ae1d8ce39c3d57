//! Logging set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
//! switches to JSON lines.
//!
//! `RUST_LOG` takes comma-separated `level` and `target=level` directives
//! (`debug`, `azure_redis_handler=trace,info`), read by
//! `tracing_subscriber`'s `Targets`, not `EnvFilter`: `EnvFilter`'s span and
//! field filters need the regex crates, 0.36 MiB of the binary, and with
//! it of the resident memory (BENCHMARKS.md, "Binary size"), for a syntax no
//! setting here asks for.
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
use tracing::level_filters::LevelFilter;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Writes what is left when dropped; keep it alive for the whole of `main`.
#[derive(Debug)]
pub(crate) struct LogGuard {
    _writer: Option<log_writer::Guard>,
}

/// Installs the global subscriber (once; later calls do nothing).
pub(crate) fn init(format: LogFormat) -> LogGuard {
    let (filter, unread) = filter(std::env::var("RUST_LOG").ok().as_deref());
    let (stdout, guard) = log_writer::start(std::io::stdout());
    let info_out = stdout.clone();
    let writer = std::io::stderr.with_max_level(Level::WARN).or_else(stdout);
    // The builder's own level filter (`info` unless told) would stop what
    // `filter` lets through: it is set to the most `filter` lets through,
    // which is also the level below which `tracing` and `log` calls
    // return at once, and `filter` decides the rest.
    let most = most_verbose(&filter);
    let builder = tracing_subscriber::fmt()
        .with_max_level(most)
        .with_writer(writer)
        .with_ansi(false);
    // An invocation's lines are written by `log_line::Line`, the rest by
    // the formatter it wraps.
    let installed = match format {
        LogFormat::Text => builder
            .event_format(log_line::Line::text())
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(log_line::Line::json())
            .finish()
            .with(filter)
            .try_init(),
    };
    if installed.is_ok() {
        log_line::installed(matches!(format, LogFormat::Json), info_out);
        if let Some(why) = unread {
            tracing::warn!("RUST_LOG ignored, logging at info: {why}");
        }
    }
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}

/// The filter `RUST_LOG` (`var`) asks for: `info` when it is unset or
/// blank, or when it cannot be read, and then also why, to be logged once
/// logging is up.
fn filter(var: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(Level::INFO);
    match var.map(str::trim).filter(|v| !v.is_empty()) {
        None => (info(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (
                info(),
                Some(format!("{e} (`level` and `target=level` directives, comma-separated)")),
            ),
        },
    }
}

/// The most verbose level `filter` lets through for any target.
fn most_verbose(filter: &Targets) -> LevelFilter {
    <Targets as Layer<Registry>>::max_level_hint(filter).unwrap_or(LevelFilter::TRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_blank_rust_log_logs_at_info() {
        for var in [None, Some(""), Some("  ")] {
            let (f, why) = filter(var);
            assert!(why.is_none(), "{var:?}");
            assert!(f.would_enable("azure_redis_handler::run", &Level::INFO), "{var:?}");
            assert!(f.would_enable("hyper", &Level::WARN), "{var:?}");
            assert!(!f.would_enable("azure_redis_handler::run", &Level::DEBUG), "{var:?}");
        }
    }

    #[test]
    fn levels_and_targets_are_read() {
        let (f, why) = filter(Some("debug"));
        assert!(why.is_none());
        assert!(f.would_enable("redis", &Level::DEBUG));
        assert!(!f.would_enable("redis", &Level::TRACE));

        let (f, why) = filter(Some("azure_redis_handler=trace,warn"));
        assert!(why.is_none());
        assert!(f.would_enable("azure_redis_handler::cache::node", &Level::TRACE));
        assert!(!f.would_enable("hyper::proto", &Level::INFO));
        assert!(f.would_enable("hyper::proto", &Level::WARN));
    }

    /// The subscriber's own level filter lets through what `RUST_LOG`
    /// asks for anywhere, and no more (debug lines were lost when it
    /// stayed at the builder's `info`).
    #[test]
    fn the_subscriber_lets_through_the_most_verbose_level_asked_for() {
        for (var, most) in [
            (None, LevelFilter::INFO),
            (Some("warn"), LevelFilter::WARN),
            (Some("debug"), LevelFilter::DEBUG),
            (Some("azure_redis_handler=trace,warn"), LevelFilter::TRACE),
            (Some("hyper=off,error"), LevelFilter::ERROR),
        ] {
            assert_eq!(most_verbose(&filter(var).0), most, "{var:?}");
        }
    }

    #[test]
    fn an_unreadable_rust_log_is_info_and_says_why() {
        let (f, why) = filter(Some("azure_redis_handler=loud"));
        let why = why.expect("a reason");
        assert!(why.contains("target=level"), "{why}");
        assert!(f.would_enable("azure_redis_handler", &Level::INFO));
        assert!(!f.would_enable("azure_redis_handler", &Level::DEBUG));
    }
}
