//! Logging set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT=json`
//! switches to JSON lines.
//!
//! Warnings and errors go to stderr, the rest to stdout: the Functions host
//! logs stdout at Information and stderr as Error (Warning when the line says
//! "warn"), so levels survive the trip.
//!
//! Stdout is written in batches. Each invocation logs one line; written
//! straight to the host's pipe, that is a system call and a wake-up of the
//! reader per invocation, which cost about a sixth of the throughput at tens
//! of thousands of invocations a second. Lines are formatted where they
//! happen, as before, and a logging thread writes whatever has gathered in
//! one go, at most about once a millisecond. Nothing is dropped: when the host
//! stops reading and [`MAX_PENDING`] bytes wait, loggers wait, as they would
//! on a full pipe. The [`LogGuard`] writes what is left when `main` returns.
//! Warnings and errors are rare and stay unbuffered.

use crate::settings::LogFormat;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Bytes of stdout lines that may wait for the logging thread before loggers wait too.
pub const MAX_PENDING: usize = 1 << 20;

/// How long the logging thread lets lines gather after the first one.
const GATHER: Duration = Duration::from_millis(1);

/// Writes what is left when dropped; keep it alive for the whole of `main`.
#[derive(Debug)]
pub struct LogGuard {
    stdout: Option<BatchedStdout>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(out) = &self.stdout {
            out.lock().closed = true;
            out.0.ready.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout = BatchedStdout::default();
    let writer = std::io::stderr.with_max_level(Level::WARN).or_else(stdout.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        return LogGuard {
            stdout: None,
            thread: None,
        };
    }
    let out = stdout.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || out.write_batches(&mut std::io::stdout()))
        .ok();
    LogGuard {
        stdout: Some(stdout),
        thread,
    }
}

/// Stdout lines waiting for the logging thread.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Lines arrived while there were none, or the guard closed.
    ready: Condvar,
    /// The logging thread took the pending lines.
    taken: Condvar,
}

/// The stdout side of the subscriber: appends each formatted line to the batch.
#[derive(Debug, Clone, Default)]
struct BatchedStdout(Arc<Shared>);

impl BatchedStdout {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The logging thread: waits for lines, lets more gather, writes them in one go.
    fn write_batches(&self, out: &mut impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.lines.is_empty() && !pending.closed {
                pending = self.0.ready.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            if !pending.closed {
                drop(pending);
                std::thread::sleep(GATHER);
                pending = self.lock();
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            let closed = pending.closed;
            drop(pending);
            self.0.taken.notify_all();
            // A host that went away is no reason to stop serving.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if batch.capacity() > 64 * 1024 {
                batch = Vec::new();
            }
            if closed && self.lock().lines.is_empty() {
                return;
            }
        }
    }
}

impl Write for BatchedStdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.lock();
        while pending.lines.len() >= MAX_PENDING && !pending.closed {
            pending = self.0.taken.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        drop(pending);
        // The logging thread only sleeps on `ready` when nothing is pending.
        if was_empty {
            self.0.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = BatchedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line written reaches the output, in order, by the time the writer is closed.
    #[test]
    fn batches_keep_every_line_in_order() {
        let stdout = BatchedStdout::default();
        let out = stdout.clone();
        let sink = Arc::new(Mutex::new(Vec::new()));
        let target = sink.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            out.write_batches(&mut buf);
            *target.lock().unwrap() = buf;
        });
        let mut w = stdout.clone();
        for i in 0..10_000 {
            writeln!(w, "line {i}").unwrap();
        }
        stdout.lock().closed = true;
        stdout.0.ready.notify_one();
        thread.join().unwrap();
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
    }
}
