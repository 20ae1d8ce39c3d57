//! The writer of the handler's stdout lines: lossless, in batches, by a
//! logging thread.
//!
//! Each invocation logs one line. Written straight to the host's pipe, that
//! is a system call and a wake-up of the reader per invocation, which cost
//! about a sixth of the throughput at tens of thousands of invocations a
//! second. So a logger only appends its line to a shared buffer, and the
//! logging thread writes whatever has gathered in one go, then lets lines
//! gather for [`GATHER`] before it looks again: a busy handler makes about
//! a thousand writes a second, and a lone line is written at once.
//!
//! This was `tracing-appender`'s non-blocking writer (with the same pause
//! after each write). That one hands each line to its thread as a `Vec` of
//! its own, allocated on the runtime's worker and freed on the logging
//! thread: one allocation per line that every worker's allocator cache
//! misses, and frees that contend with the workers for the allocator's
//! lock (`futex` calls per GET: 0.68 against the floor's 0.08,
//! `cargo run --release -p bench -- --profile`). Here the two buffers are
//! kept and swapped, so a line costs one copy and no allocation.
//!
//! Nothing is dropped: when the host stops reading and [`MAX_PENDING`]
//! bytes wait, loggers wait, as they would on a full pipe.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of lines that may wait for the logging thread before loggers wait
/// too (about eight thousand invocation lines).
pub(crate) const MAX_PENDING: usize = 2 << 20;

/// How long the logging thread lets lines gather after a write.
pub(crate) const GATHER: Duration = Duration::from_millis(1);

/// The capacity a batch buffer keeps between batches; a larger one (after a
/// burst, or while the host stopped reading) is given back.
const KEEP_BYTES: usize = 256 * 1024;

/// How long [`Guard`]'s drop waits for the last lines to be written (the
/// host may have stopped reading).
const LAST_WRITE: Duration = Duration::from_secs(1);

/// The lines waiting, and the logging thread's state.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// The logging thread waits on [`Shared::ready`] for lines.
    idle: bool,
    /// No more batches: write what is left and stop.
    closed: bool,
    /// No logging thread takes batches: it wrote the last one and stopped,
    /// or it never started.
    finished: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Lines arrived while the logging thread was idle, or the guard closed.
    ready: Condvar,
    /// The logging thread took the lines waiting, or stopped.
    taken: Condvar,
    /// Where the lines go: the logging thread's, and the loggers' own once
    /// it has stopped (or could not be started).
    out: Mutex<Box<dyn Write + Send>>,
}

/// A handle on the batched writer: `Write` appends a line to the batch, and
/// it is the subscriber's `MakeWriter`. Cloning is cheap.
#[derive(Clone)]
pub(crate) struct Batched(Arc<Shared>);

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

/// Stops the logging thread when dropped, once it has written every line
/// (waiting at most [`LAST_WRITE`]).
pub(crate) struct Guard(Arc<Shared>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// The writer in front of `out`, with its logging thread (`log-writer`)
/// started, and the guard that stops it. If the thread cannot be started,
/// loggers write their lines to `out` themselves: slower, and nothing is
/// lost.
pub(crate) fn start(out: impl Write + Send + 'static) -> (Batched, Guard) {
    let shared = Arc::new(Shared {
        pending: Mutex::default(),
        ready: Condvar::new(),
        taken: Condvar::new(),
        out: Mutex::new(Box::new(out)),
    });
    let thread_side = Batched(shared.clone());
    let started = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || thread_side.write_batches());
    if started.is_err() {
        lock(&shared.pending).finished = true;
    }
    (Batched(shared.clone()), Guard(shared))
}

/// A lock that a panic elsewhere does not poison: the lines are bytes, whole
/// or not there.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batched {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.0.pending)
    }

    /// The logging thread: waits for lines, writes them in one go, lets
    /// more gather; once closed, writes what is left and stops.
    fn write_batches(&self) {
        let mut batch = Vec::new();
        loop {
            let mut pending = self.pending();
            while pending.lines.is_empty() && !pending.closed {
                pending.idle = true;
                pending = self.0.ready.wait(pending).unwrap_or_else(|p| p.into_inner());
            }
            pending.idle = false;
            std::mem::swap(&mut batch, &mut pending.lines);
            let closed = pending.closed;
            let finished = closed && batch.is_empty();
            pending.finished = finished;
            drop(pending);
            self.0.taken.notify_all();
            if finished {
                return;
            }
            {
                let mut out = lock(&self.0.out);
                // A host that went away is no reason to stop serving.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
            }
            batch.clear();
            if batch.capacity() > KEEP_BYTES {
                batch = Vec::new();
            }
            if !closed {
                std::thread::sleep(GATHER);
            }
        }
    }
}

impl Write for &Batched {
    /// Appends `line` whole (a formatter writes each line in one call), or
    /// waits while [`MAX_PENDING`] bytes wait.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.pending();
        while pending.lines.len() >= MAX_PENDING && !pending.finished {
            pending = self.0.taken.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
        if pending.finished {
            // No logging thread (the guard is gone, or it never started):
            // nobody takes a batch.
            drop(pending);
            return lock(&self.0.out).write(line);
        }
        pending.lines.extend_from_slice(line);
        // The thread is woken only when it waits for lines: while it writes
        // or lets lines gather, it comes back for them by itself.
        let wake = std::mem::take(&mut pending.idle);
        drop(pending);
        if wake {
            self.0.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = &'a Batched;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Guard {
    /// Closes the writer and waits (at most [`LAST_WRITE`]) for the logging
    /// thread to write what is left.
    fn drop(&mut self) {
        let mut pending = lock(&self.0.pending);
        pending.closed = true;
        let wake = std::mem::take(&mut pending.idle);
        if wake {
            self.0.ready.notify_one();
        }
        let deadline = Instant::now() + LAST_WRITE;
        while !pending.finished {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            pending = self
                .0
                .taken
                .wait_timeout(pending, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A `Write` into shared memory that can be held: while held, a write
    /// waits (a host that stopped reading its pipe).
    #[derive(Clone, Default)]
    struct Sink(Arc<SinkInner>);

    #[derive(Default)]
    struct SinkInner {
        /// What was written, and whether writes wait.
        state: Mutex<(Vec<u8>, bool)>,
        /// Something was written, or the hold changed.
        changed: Condvar,
    }

    impl Sink {
        fn hold(&self, held: bool) {
            lock(&self.0.state).1 = held;
            self.0.changed.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(lock(&self.0.state).0.clone()).unwrap()
        }

        /// Waits until `done` holds of what was written (failing after ten
        /// seconds: it never will).
        fn wait_for(&self, done: impl Fn(&[u8]) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut inner = lock(&self.0.state);
            while !done(&inner.0) {
                let left = deadline.checked_duration_since(Instant::now()).expect("never written");
                inner = self.0.changed.wait_timeout(inner, left).unwrap().0;
            }
        }
    }

    /// Runs `test` on a thread of its own and fails if it is not done in
    /// thirty seconds: a writer that loses track of its thread hangs.
    fn within_30s(test: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        let run = std::thread::spawn(move || {
            test();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => run.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::panic::resume_unwind(run.join().unwrap_err()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still running after 30 s"),
        }
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut inner = lock(&self.0.state);
            while inner.1 {
                inner = self.0.changed.wait(inner).unwrap();
            }
            inner.0.extend_from_slice(buf);
            self.0.changed.notify_all();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every line from every logger reaches the output whole and in each
    /// logger's order, by the time the guard is dropped, even with many
    /// times more lines than may wait.
    #[test]
    fn keeps_every_line_in_order() {
        within_30s(|| {
            let sink = Sink::default();
            let (writer, guard) = start(sink.clone());
            let per_logger = 4 * MAX_PENDING / 20;
            std::thread::scope(|s| {
                for logger in 0..2 {
                    let writer = writer.clone();
                    s.spawn(move || {
                        for i in 0..per_logger {
                            (&writer).write_all(format!("{logger} line {i}\n").as_bytes()).unwrap();
                        }
                    });
                }
            });
            drop(guard);
            let text = sink.text();
            for logger in 0..2 {
                let prefix = format!("{logger} line ");
                let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
                assert_eq!(lines.len(), per_logger);
                assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("{prefix}{i}")));
            }
            assert_eq!(text.lines().count(), 2 * per_logger);
        });
    }

    /// A lone line is written without another line or the guard's drop to
    /// push it out: the waiting logging thread is woken for it.
    #[test]
    fn writes_a_lone_line() {
        within_30s(|| {
            let sink = Sink::default();
            let (writer, _guard) = start(sink.clone());
            while !lock(&writer.0.pending).idle {
                std::thread::yield_now();
            }
            (&writer).write_all(b"alone\n").unwrap();
            sink.wait_for(|written| written == b"alone\n");
        });
    }

    /// When the host stops reading, loggers wait once `MAX_PENDING` bytes
    /// wait, and go on, losing nothing, when it reads again.
    #[test]
    fn loggers_wait_for_a_host_that_stopped_reading() {
        within_30s(|| {
            let sink = Sink::default();
            sink.hold(true);
            let (writer, guard) = start(sink.clone());
            let line = [b'x'; 99].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
            let total = 3 * MAX_PENDING / line.len();
            let logged = Arc::new(AtomicUsize::new(0));
            let logger = {
                let (writer, logged) = (writer.clone(), logged.clone());
                std::thread::spawn(move || {
                    for _ in 0..total {
                        (&writer).write_all(&line).unwrap();
                        logged.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            // The logging thread holds one batch in the held write; then the
            // lines waiting reach the limit, and the logger waits.
            let full = || lock(&writer.0.pending).lines.len() >= MAX_PENDING;
            while !full() {
                std::thread::yield_now();
            }
            // Waiting is not seen but in its absence: a logger that did not
            // wait would be done well within this.
            let looked = Instant::now();
            while looked.elapsed() < Duration::from_millis(300) {
                let so_far = logged.load(Ordering::Relaxed);
                assert!(
                    !logger.is_finished(),
                    "the logger went on past the limit: {so_far} of {total} lines"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(lock(&writer.0.pending).lines.len() < MAX_PENDING + 100);
            sink.hold(false);
            logger.join().unwrap();
            drop(guard);
            assert_eq!(sink.text().len(), total * 100);
        });
    }

    /// The guard's drop does not wait for ever on a host that stopped
    /// reading: the process can still exit.
    #[test]
    fn the_guard_gives_up_on_a_host_that_stopped_reading() {
        within_30s(|| {
            let sink = Sink::default();
            sink.hold(true);
            let (writer, guard) = start(sink.clone());
            (&writer).write_all(b"never read\n").unwrap();
            drop(guard);
            assert!(sink.text().is_empty());
            sink.hold(false);
        });
    }
}
