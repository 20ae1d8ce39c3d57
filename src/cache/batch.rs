//! Fewer, larger writes on a busy connection.
//!
//! A connection's I/O task (redis's `MultiplexedConnection` driver) writes
//! whatever commands are queued when it runs. tokio runs a task that was
//! just woken straight after the one that woke it (the worker's LIFO
//! slot), so under load the driver runs after nearly every invocation that
//! queues a command and writes one or two at a time. Each write is a TLS
//! record and a system call here, and a read on the server; on a cluster's
//! master each read also costs a write of the replication stream to its
//! replica, since a master feeds its replicas once per turn of its event
//! loop (`bench/notes.md`, item 8).
//!
//! So while other commands are in flight on the connection, its writer
//! waits one turn of the runtime before writing: the invocations that are
//! ready run in that turn and queue theirs, and one write carries them all.
//! That is Nagle's rule for a pipeline (hold back while something is
//! unanswered), held back for one turn of the scheduler rather than a
//! round trip. A lone command, with nothing else in flight, is written at
//! once: a turn would find nothing to add, and waking the task again costs
//! a wake-up of the other worker.
//!
//! [`InFlight`] counts the commands (the invocations count theirs, see
//! `node::run_once`); [`Turn`] is the writer's side, kept by the
//! connection's stream (`connect.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;

/// The commands sent on one connection and not yet answered, as the
/// invocations running them count them.
#[derive(Debug, Clone, Default)]
pub(super) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one command as in flight until the guard drops (answered,
    /// failed or given up on).
    pub(super) fn enter(&self) -> Flying<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Flying(&self.0)
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One command in flight; see [`InFlight::enter`].
#[must_use = "the command counts as in flight only while this lives"]
pub(super) struct Flying<'a>(&'a AtomicUsize);

impl Drop for Flying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The writer's side: whether the write it is about to make waits a turn.
#[derive(Debug, Default)]
pub(super) struct Turn {
    in_flight: InFlight,
    /// This flush has had its turn: the write goes now.
    taken: bool,
}

impl Turn {
    pub(super) fn new(in_flight: InFlight) -> Self {
        Self {
            in_flight,
            ..Self::default()
        }
    }

    /// Whether to hold the write back for one turn: at the first write of
    /// a flush, while more than one command is in flight. When it says so
    /// it has already asked for the task to be polled again, after the
    /// tasks that are ready now.
    pub(super) fn wait(&mut self, cx: &mut Context<'_>) -> bool {
        if cfg!(feature = "experiment-no-write-batching") || self.taken || self.in_flight.count() < 2 {
            return false;
        }
        self.taken = true;
        // A task that wakes itself while it runs goes to the back of its
        // worker's queue (tokio's yield), behind the invocations that are
        // ready.
        cx.waker().wake_by_ref();
        true
    }

    /// The flush is done: the next one may wait its turn.
    pub(super) fn flushed(&mut self) {
        self.taken = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wakes {
        fn waker() -> (Arc<Self>, Waker) {
            let wakes = Arc::new(Self::default());
            (wakes.clone(), Waker::from(wakes))
        }
    }

    impl Turn {
        /// A writer's turn and the count it reads.
        fn counted() -> (InFlight, Self) {
            let in_flight = InFlight::default();
            (in_flight.clone(), Turn::new(in_flight))
        }
    }

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_lone_command_is_written_at_once() {
        let (wakes, waker) = Wakes::waker();
        let mut cx = Context::from_waker(&waker);
        let (in_flight, mut turn) = Turn::counted();
        assert!(!turn.wait(&mut cx), "nothing in flight");
        let _one = in_flight.enter();
        assert!(!turn.wait(&mut cx), "only the command being written");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn with_others_in_flight_a_write_waits_one_turn_per_flush() {
        let (wakes, waker) = Wakes::waker();
        let mut cx = Context::from_waker(&waker);
        let (in_flight, mut turn) = Turn::counted();
        let (_a, _b) = (in_flight.enter(), in_flight.enter());
        assert!(turn.wait(&mut cx), "two in flight: wait");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "and be polled again");
        assert!(!turn.wait(&mut cx), "the turn is had: write");
        assert!(!turn.wait(&mut cx), "the rest of the flush goes too");
        turn.flushed();
        assert!(turn.wait(&mut cx), "the next flush waits again");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn answered_commands_leave_the_count() {
        let in_flight = InFlight::default();
        {
            let _a = in_flight.enter();
            let _b = in_flight.enter();
            assert_eq!(in_flight.count(), 2);
        }
        assert_eq!(in_flight.count(), 0);
    }
}
