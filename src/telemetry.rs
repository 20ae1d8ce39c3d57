//! Logging set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
//! switches to JSON lines.
//!
//! Warnings and errors go to stderr, the rest to stdout: the Functions host
//! logs stdout at Information and stderr as Error (Warning when the line says
//! "warn"), so levels survive the trip.
//!
//! Stdout is written in batches, by `tracing-appender`'s non-blocking writer
//! in lossless mode. Each invocation logs one line; written straight to the
//! host's pipe, that is a system call and a wake-up of the reader per
//! invocation, which cost about a sixth of the throughput at tens of
//! thousands of invocations a second. Lines are formatted where they happen
//! and handed to a logging thread, which writes whatever has gathered in one
//! go, at most about once a millisecond (without that pause the writer keeps
//! up line by line, and the cost is back: BENCHMARKS.md, "Logging writer").
//! Nothing is dropped: when the host stops reading and `MAX_PENDING_LINES`
//! lines wait, loggers wait, as they would on a full pipe. The [`LogGuard`]
//! writes what is left when `main` returns. Warnings and errors are rare and
//! stay unbuffered.

use crate::log_line;
use crate::settings::LogFormat;
use std::io::{BufWriter, Write};
use std::time::Duration;
use tracing::Level;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Stdout lines that may wait for the logging thread before loggers wait too
/// (about 2 MiB of invocation lines).
const MAX_PENDING_LINES: usize = 8 * 1024;

/// Bytes the logging thread gathers before it writes, even if more lines wait.
const BATCH_BYTES: usize = 64 * 1024;

/// How long the logging thread lets lines gather after a write.
const GATHER: Duration = Duration::from_millis(1);

/// Writes what is left when dropped; keep it alive for the whole of `main`.
#[derive(Debug)]
pub(crate) struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Installs the global subscriber (once; later calls do nothing).
pub(crate) fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (stdout, guard) = non_blocking(std::io::stdout());
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
        _worker: installed.ok().map(|()| guard),
    }
}

/// The lossless non-blocking writer in front of `out`. The logging thread
/// writes every line it finds waiting into a buffer, then flushes it: one
/// system call per batch.
fn non_blocking(out: impl Write + Send + 'static) -> (tracing_appender::non_blocking::NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(MAX_PENDING_LINES)
        .thread_name("log-writer")
        .finish(Gathering(BufWriter::with_capacity(BATCH_BYTES, out)))
}

/// The logging thread's output. The thread flushes whenever it has taken
/// every waiting line; after each flush it lets lines gather for
/// [`GATHER`], so a busy handler makes about a thousand writes a second and
/// loggers seldom have to wake the thread, while a lone line is written at
/// once.
struct Gathering<W: Write>(BufWriter<W>);

impl<W: Write> Write for Gathering<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.write(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.0.flush();
        std::thread::sleep(GATHER);
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` into shared memory.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every line written reaches the output, in order, by the time the guard
    /// is dropped, even with more lines than the channel holds.
    #[test]
    fn keeps_every_line_in_order() {
        let sink = Sink::default();
        let (writer, guard) = non_blocking(sink.clone());
        let mut w = writer.clone();
        let n = 4 * MAX_PENDING_LINES;
        for i in 0..n {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), n);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
    }
}
