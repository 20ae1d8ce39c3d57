//! How long the cache waits between tries and whether it tries again, as
//! pure functions, and the gate that holds connection attempts back after
//! failures.
//!
//! A cache that is down, or that refuses the identity, must see a trickle of
//! attempts from each instance, not one per invocation: invocations that find
//! the gate closed fail fast with the last error instead of connecting.

use super::error::CacheError;
use std::time::Duration;
use tokio::time::Instant;

/// The pause after the first failed try of a command; it doubles after each.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
/// The first wait before connecting again after a failed attempt; it doubles
/// after each failure in a row, up to [`RECONNECT_CAP`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reach a cache that is down.
const RECONNECT_CAP: Duration = Duration::from_secs(2);
/// The longest wait between attempts when the cache refused the
/// credentials: retrying cannot help until someone fixes the access policy.
const RECONNECT_CAP_REFUSED: Duration = Duration::from_secs(10);
/// The first wait before re-sending a refused newer token on a live
/// connection; it doubles after each refusal, up to [`REAUTH_CAP`].
const REAUTH_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between re-AUTHs the cache refused.
const REAUTH_CAP: Duration = Duration::from_secs(30);

/// `first` doubled `n` times (at most 2^10), but no more than `cap`.
fn doubling(first: Duration, n: u32, cap: Duration) -> Duration {
    (first * (1u32 << n.min(10))).min(cap)
}

/// Pause before try `tries + 1` of a command whose connection was lost:
/// 100 ms after the first try, 200 ms after the second (the third is the last).
pub(super) fn retry_pause(tries: u32) -> Duration {
    doubling(RETRY_PAUSE_FIRST, tries.saturating_sub(1), Duration::MAX)
}

/// Wait before the next connection attempt after `failures` failed attempts
/// in a row: 100 ms doubling to 2 s; to 10 s when the cache refused the
/// credentials.
pub(super) fn reconnect_backoff(failures: u32, refused: bool) -> Duration {
    let cap = if refused { RECONNECT_CAP_REFUSED } else { RECONNECT_CAP };
    doubling(RECONNECT_FIRST, failures.saturating_sub(1), cap)
}

/// Wait before re-sending `AUTH` on a live connection after the cache
/// refused a newer token `failures` times in a row: 1 s doubling to 30 s.
/// The connection keeps the identity it has meanwhile.
pub(super) fn reauth_backoff(failures: u32) -> Duration {
    doubling(REAUTH_FIRST, failures.saturating_sub(1), REAUTH_CAP)
}

/// What to do after a try of a command failed with an error worth
/// another try (a lost connection, a cluster failing over).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Pause this long, then try again.
    Retry(Duration),
    /// Answer the error now.
    GiveUp,
}

/// After try number `tries` (of at most `max_tries`) failed at `now`: try
/// again after [`retry_pause`], unless that was the last try, the pause
/// would end at or past the invocation's `deadline`, or connecting is held
/// back past the pause's end (`gated_past`), when another try cannot
/// succeed and failing fast is better.
pub(super) fn after_failure(
    tries: u32,
    max_tries: u32,
    now: Instant,
    deadline: Instant,
    gated_past: impl FnOnce(Instant) -> bool,
) -> AfterFailure {
    let pause = retry_pause(tries);
    let next = now + pause;
    if tries >= max_tries || next >= deadline || gated_past(next) {
        AfterFailure::GiveUp
    } else {
        AfterFailure::Retry(pause)
    }
}

/// Failed connection attempts in a row and when the next may start.
#[derive(Debug, Default)]
pub(super) struct ConnectGate {
    pub(super) failures: u32,
    retry_after: Option<Instant>,
    last_error: Option<CacheError>,
}

impl ConnectGate {
    /// The error to fail with now, if an attempt is not allowed yet.
    pub(super) fn holds(&self, now: Instant) -> Option<&CacheError> {
        match (self.retry_after, &self.last_error) {
            (Some(at), Some(err)) if now < at => Some(err),
            _ => None,
        }
    }

    /// Whether attempts are held back beyond `at`.
    pub(super) fn holds_past(&self, at: Instant) -> bool {
        self.retry_after.is_some_and(|until| at < until)
    }

    /// Records a failed attempt; returns how long the gate stays closed.
    pub(super) fn failed(&mut self, err: &CacheError, now: Instant) -> Duration {
        self.failures += 1;
        let backoff = reconnect_backoff(self.failures, matches!(err, CacheError::Auth(_)));
        self.retry_after = Some(now + backoff);
        self.last_error = Some(err.clone());
        backoff
    }

    /// Opens the gate after a successful attempt.
    pub(super) fn succeeded(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The schedules the README gives: 100 ms doubling to 2 s (10 s for
    /// refused credentials), 1 s doubling to 30 s for a refused re-AUTH,
    /// 100 then 200 ms between tries of one command.
    #[test]
    fn schedules() {
        let unreachable: Vec<_> = (1..=7).map(|n| reconnect_backoff(n, false)).collect();
        assert_eq!(unreachable, [100, 200, 400, 800, 1600, 2000, 2000].map(ms));
        let refused: Vec<_> = (1..=9).map(|n| reconnect_backoff(n, true)).collect();
        assert_eq!(refused, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map(ms));
        assert_eq!(reconnect_backoff(u32::MAX, true), ms(10_000));
        let reauth: Vec<_> = (1..=7).map(reauth_backoff).collect();
        assert_eq!(reauth, [1, 2, 4, 8, 16, 30, 30].map(Duration::from_secs));
        assert_eq!([1, 2].map(retry_pause), [ms(100), ms(200)]);
    }

    /// Three tries at most, 100 then 200 ms apart; none whose pause would
    /// end at the deadline; none while connecting is held back past the
    /// pause.
    #[tokio::test(start_paused = true)]
    async fn retry_decisions() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let open = |_| false;
        assert_eq!(after_failure(1, 3, now, deadline, open), AfterFailure::Retry(ms(100)));
        assert_eq!(after_failure(2, 3, now, deadline, open), AfterFailure::Retry(ms(200)));
        assert_eq!(after_failure(3, 3, now, deadline, open), AfterFailure::GiveUp);
        assert_eq!(after_failure(1, 1, now, deadline, open), AfterFailure::GiveUp);
        // The deadline: a pause that would end on it or after it is not taken.
        assert_eq!(after_failure(1, 3, now, now + ms(100), open), AfterFailure::GiveUp);
        assert_eq!(
            after_failure(1, 3, now, now + ms(101), open),
            AfterFailure::Retry(ms(100))
        );
        // The gate is asked about the moment the pause ends.
        let mut asked = None;
        let held = after_failure(2, 3, now, deadline, |at| {
            asked = Some(at);
            true
        });
        assert_eq!((held, asked), (AfterFailure::GiveUp, Some(now + ms(200))));
        // Driving a command's tries through time: 0, 100 and 300 ms.
        let mut tries = 0;
        let mut at = Vec::new();
        loop {
            tries += 1;
            at.push(Instant::now().duration_since(now).as_millis());
            match after_failure(tries, 3, Instant::now(), deadline, open) {
                AfterFailure::Retry(pause) => tokio::time::sleep(pause).await,
                AfterFailure::GiveUp => break,
            }
        }
        assert_eq!(at, [0, 100, 300]);
    }

    /// A cache that stays down, asked every 10 ms for 10 s by invocations:
    /// the gate lets through attempts at 0, 0.1, 0.3, 0.7, 1.5, 3.1, 5.1,
    /// 7.1 and 9.1 s (9 in all), and every other call fails fast.
    #[tokio::test(start_paused = true)]
    async fn down_cache_sees_a_trickle() {
        let start = Instant::now();
        let mut gate = ConnectGate::default();
        let down = CacheError::Unavailable("connection refused".into());
        let mut attempts = Vec::new();
        let mut fast_failures = 0;
        while start.elapsed() < Duration::from_secs(10) {
            let now = Instant::now();
            match gate.holds(now) {
                Some(err) => {
                    assert_eq!(err, &down);
                    fast_failures += 1;
                }
                None => {
                    attempts.push(now.duration_since(start).as_millis());
                    gate.failed(&down, now);
                }
            }
            tokio::time::advance(ms(10)).await;
        }
        assert_eq!(attempts, [0, 100, 300, 700, 1500, 3100, 5100, 7100, 9100]);
        assert_eq!(fast_failures + attempts.len(), 1000);
        gate.succeeded();
        assert!(gate.holds(Instant::now()).is_none());
        assert_eq!(gate.failures, 0);
    }

    /// Refused credentials back off further than an unreachable cache: about
    /// 12 attempts in a minute, not 34.
    #[tokio::test(start_paused = true)]
    async fn refused_credentials_back_off_longer() {
        let count = |err: CacheError| async move {
            let start = Instant::now();
            let mut gate = ConnectGate::default();
            let mut attempts = 0;
            while start.elapsed() < Duration::from_secs(60) {
                if gate.holds(Instant::now()).is_none() {
                    attempts += 1;
                    gate.failed(&err, Instant::now());
                }
                tokio::time::advance(ms(50)).await;
            }
            attempts
        };
        let refused = count(CacheError::Auth("WRONGPASS".into())).await;
        let down = count(CacheError::Unavailable("refused".into())).await;
        assert_eq!((refused, down), (12, 34));
    }
}
