//! The gate in front of a node's connection attempts: one attempt at a
//! time, a backoff between failed ones, and who waits for what meanwhile.
//!
//! A node with no connection makes one attempt, in a task of its own, and
//! every invocation that needs the node waits for it. After a failed attempt
//! the gate stays closed for a backoff (100 ms doubling to 2 s; to 10 s when
//! the cache refused the credentials), so a cache that is down sees a few
//! attempts a second from a process, never one per waiting invocation.
//! Invocations wait through the backoff while their ride-through window
//! lasts and are released the moment a connection is back.
//!
//! Once the node has been down for longer than the window, invocations that
//! arrive after that fail at once, so a long outage does not hold the host's
//! concurrency; the one that finds the gate open makes the next attempt and
//! waits for it, so the first attempt after the cache is back succeeds and
//! serves. Refused credentials fail at once: waiting will not fix an access
//! policy (nor a certificate that does not verify). "Down" lasts until a
//! connection serves a command: a connection that breaks before it served
//! one counts as a failed attempt, so a front end that accepts connections
//! and cuts them backs off like one that refuses them.

use super::error::CacheError;
use super::retry::doubling;
use std::time::Duration;
use tokio::time::Instant;

/// The first wait before connecting again after a failed attempt; it doubles
/// after each failure in a row, up to [`RECONNECT_CAP`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reach a cache that is down.
const RECONNECT_CAP: Duration = Duration::from_secs(2);
/// The longest wait between attempts when the cache refused the
/// credentials: retrying cannot help until someone fixes the access policy.
const RECONNECT_CAP_REFUSED: Duration = Duration::from_secs(10);

/// Wait before the next connection attempt after `failures` failed attempts
/// in a row: 100 ms doubling to 2 s; to 10 s when the cache refused the
/// credentials.
pub(super) fn reconnect_backoff(failures: u32, refused: bool) -> Duration {
    let cap = if refused { RECONNECT_CAP_REFUSED } else { RECONNECT_CAP };
    doubling(RECONNECT_FIRST, failures.saturating_sub(1), cap)
}

/// What an invocation that needs the node and finds it unconnected does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Make the attempt (the gate now counts one under way) and wait for it.
    Attempt,
    /// An attempt is under way: wait for it.
    Wait,
    /// The gate opens at this instant: wait until then (or until a
    /// connection comes back some other way).
    WaitUntil(Instant),
    /// Fail now with this error.
    Fail(CacheError),
}

/// Failed attempts in a row, when the next may start, and since when the
/// node has been down.
#[derive(Debug, Default)]
pub(super) struct Gate {
    attempting: bool,
    pub(super) failures: u32,
    retry_after: Option<Instant>,
    last_error: Option<CacheError>,
    down_since: Option<Instant>,
}

impl Gate {
    /// What an invocation that started at `started`, with a ride-through
    /// window of `window`, does at `now` about a node without a connection.
    pub(super) fn admit(&mut self, now: Instant, started: Instant, window: Duration) -> Admit {
        let long_outage = self.down_since.is_some_and(|since| started >= since + window);
        let held = match (self.retry_after, &self.last_error) {
            (Some(at), Some(err)) if now < at => Some((at, err)),
            _ => None,
        };
        if let Some((_, err)) = held.filter(|(_, err)| err.is_refusal()) {
            return Admit::Fail(err.clone());
        }
        if long_outage && (self.attempting || held.is_some()) {
            return Admit::Fail(self.outage_error(now));
        }
        if self.attempting {
            return Admit::Wait;
        }
        if let Some((at, _)) = held {
            return Admit::WaitUntil(at);
        }
        self.attempting = true;
        Admit::Attempt
    }

    /// The error of a long outage: for how long, and the last failure.
    fn outage_error(&self, now: Instant) -> CacheError {
        let since = self
            .down_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        let last = self.last_error.as_ref().map(CacheError::detail).unwrap_or_default();
        CacheError::Unavailable(format!(
            "the cache has not answered for {:.1} s; failing fast until it does (last error: {last})",
            since.as_secs_f64()
        ))
    }

    /// The last failure, if the gate holds one (for an invocation that runs
    /// out of time while waiting).
    pub(super) fn last_error(&self) -> Option<&CacheError> {
        self.last_error.as_ref()
    }

    /// Records a failed attempt (or a connection that broke before it
    /// served a command) at `now`; returns how long the gate stays closed.
    pub(super) fn failed(&mut self, err: &CacheError, now: Instant) -> Duration {
        self.attempting = false;
        self.failures += 1;
        let backoff = reconnect_backoff(self.failures, err.is_refusal());
        self.retry_after = Some(now + backoff);
        self.last_error = Some(err.clone());
        self.down_since.get_or_insert(now);
        backoff
    }

    /// An attempt that ended without a verdict on the cache (no token): the
    /// gate opens again, and the waiters are told why.
    pub(super) fn abandoned(&mut self) {
        self.attempting = false;
    }

    /// A connection was made: the gate opens. The failure count stays until
    /// the connection serves ([`Gate::served`]), so a connection that is cut
    /// at once keeps backing off.
    pub(super) fn connected(&mut self) {
        self.attempting = false;
        self.retry_after = None;
        self.last_error = None;
    }

    /// A connection served a command: the node is up.
    pub(super) fn served(&mut self) {
        self.failures = 0;
        self.down_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The schedules the README gives: 100 ms doubling to 2 s, to 10 s for
    /// refused credentials.
    #[test]
    fn schedules() {
        let unreachable: Vec<_> = (1..=7).map(|n| reconnect_backoff(n, false)).collect();
        assert_eq!(unreachable, [100, 200, 400, 800, 1600, 2000, 2000].map(ms));
        let refused: Vec<_> = (1..=9).map(|n| reconnect_backoff(n, true)).collect();
        assert_eq!(refused, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map(ms));
        assert_eq!(reconnect_backoff(u32::MAX, true), ms(10_000));
    }

    fn down() -> CacheError {
        CacheError::Unavailable("connection refused".into())
    }

    /// One attempt at a time: the first caller attempts, the others wait
    /// for it; after a failure they wait for the gate to open, and the
    /// first one through makes the next attempt.
    #[tokio::test(start_paused = true)]
    async fn one_attempt_at_a_time() {
        let window = Duration::from_secs(10);
        let mut gate = Gate::default();
        let t0 = Instant::now();
        assert_eq!(gate.admit(t0, t0, window), Admit::Attempt);
        assert_eq!(gate.admit(t0, t0, window), Admit::Wait);
        gate.failed(&down(), t0);
        assert_eq!(gate.admit(t0, t0, window), Admit::WaitUntil(t0 + ms(100)));
        let t1 = t0 + ms(100);
        assert_eq!(gate.admit(t1, t0, window), Admit::Attempt);
        assert_eq!(gate.admit(t1, t0, window), Admit::Wait);
        gate.connected();
        gate.served();
        assert_eq!(gate.failures, 0);
        assert_eq!(gate.admit(t1, t1, window), Admit::Attempt);
    }

    /// A cache that stays down, asked every 10 ms for 60 s by invocations
    /// each riding through a 10 s window: attempts at 0, 0.1, 0.3, 0.7,
    /// 1.5, 3.1 s and every 2 s after, whatever the load; invocations that
    /// start within 10 s of the first failure wait, those that start later
    /// fail at once (but the one that finds the gate open makes the
    /// attempt); the trickle is the same before and after.
    #[tokio::test(start_paused = true)]
    async fn a_long_outage_fails_fast_with_the_same_trickle() {
        let window = Duration::from_secs(10);
        let start = Instant::now();
        let mut gate = Gate::default();
        let mut attempts = Vec::new();
        let (mut waited, mut failed_fast) = (0, 0);
        while start.elapsed() < Duration::from_secs(60) {
            let now = Instant::now();
            match gate.admit(now, now, window) {
                Admit::Attempt => {
                    attempts.push(now.duration_since(start).as_millis());
                    gate.failed(&down(), now);
                }
                Admit::Wait | Admit::WaitUntil(_) => waited += 1,
                Admit::Fail(e) => {
                    assert!(e.to_string().contains("has not answered for"), "{e}");
                    failed_fast += 1;
                }
            }
            tokio::time::advance(ms(10)).await;
        }
        let first_ten: Vec<_> = attempts.iter().copied().filter(|&a| a < 10_000).collect();
        assert_eq!(first_ten, [0, 100, 300, 700, 1500, 3100, 5100, 7100, 9100]);
        assert_eq!(attempts.len(), 9 + 25, "{attempts:?}");
        assert!(attempts.windows(2).skip(5).all(|w| w[1] - w[0] == 2000), "{attempts:?}");
        // Calls before 10 s waited; after it, every call but the attempts failed fast.
        assert_eq!(waited, 1000 - first_ten.len());
        assert_eq!(failed_fast, 6000 - 1000 - (attempts.len() - first_ten.len()));
    }

    /// An invocation that started before the outage grew long still waits
    /// for the next attempt: only those that start later fail fast.
    #[tokio::test(start_paused = true)]
    async fn invocations_already_waiting_keep_riding() {
        let window = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut gate = Gate::default();
        for _ in 0..6 {
            gate.failed(&down(), t0);
        }
        // Down since t0; the gate opens again 2 s after the last failure.
        let last = t0 + ms(1500);
        gate.failed(&down(), last);
        let now = t0 + ms(2500);
        assert_eq!(gate.admit(now, t0 + ms(500), window), Admit::WaitUntil(last + ms(2000)));
        let Admit::Fail(e) = gate.admit(now, now, window) else {
            panic!("a new invocation in a long outage fails fast")
        };
        assert!(e.to_string().contains("2.5 s"), "{e}");
    }

    /// Refused credentials (and a certificate that does not verify) fail at
    /// once while the gate is closed, and back off further than an
    /// unreachable cache: 12 attempts in a minute, not 34.
    #[tokio::test(start_paused = true)]
    async fn refused_credentials_fail_at_once_and_back_off_longer() {
        let count = |err: CacheError| async move {
            let start = Instant::now();
            let mut gate = Gate::default();
            let mut attempts = 0;
            while start.elapsed() < Duration::from_secs(60) {
                let now = Instant::now();
                match gate.admit(now, now, Duration::from_secs(3600)) {
                    Admit::Attempt => {
                        attempts += 1;
                        gate.failed(&err, now);
                    }
                    Admit::Fail(e) => assert_eq!(e, err),
                    Admit::WaitUntil(_) => assert!(!err.is_refusal()),
                    Admit::Wait => unreachable!("attempts end at once here"),
                }
                tokio::time::advance(ms(50)).await;
            }
            attempts
        };
        let refused = count(CacheError::Auth("WRONGPASS".into())).await;
        let certificate = count(CacheError::Certificate("UnknownIssuer".into())).await;
        let down = count(down()).await;
        assert_eq!((refused, certificate, down), (12, 12, 34));
    }

    /// A connection that is cut before it serves a command keeps the
    /// backoff growing: connect, cut, connect, cut... is not a storm.
    #[tokio::test(start_paused = true)]
    async fn connections_cut_at_once_back_off() {
        let window = Duration::from_secs(10);
        let start = Instant::now();
        let mut gate = Gate::default();
        let mut attempts = Vec::new();
        while start.elapsed() < Duration::from_secs(10) {
            let now = Instant::now();
            if gate.admit(now, now, window) == Admit::Attempt {
                attempts.push(now.duration_since(start).as_millis());
                gate.connected();
                gate.failed(&CacheError::Unavailable("cut".into()), now);
            }
            tokio::time::advance(ms(10)).await;
        }
        assert_eq!(attempts, [0, 100, 300, 700, 1500, 3100, 5100, 7100, 9100]);
    }
}
