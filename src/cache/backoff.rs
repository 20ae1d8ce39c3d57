//! How long the cache waits between tries, as pure functions, and the gate
//! that holds connection attempts back after failures.
//!
//! A cache that is down, or that refuses the identity, must see a trickle of
//! attempts from each instance, not one per invocation: invocations that find
//! the gate closed fail fast with the last error instead of connecting.

use super::error::CacheError;
use std::time::Duration;
use tokio::time::Instant;

/// Pause before try `tries + 1` of a command whose connection was lost:
/// 100 ms after the first try, 200 ms after the second (the third is the last).
pub(super) fn retry_pause(tries: u32) -> Duration {
    Duration::from_millis(50 << tries.min(8))
}

/// Wait before the next connection attempt after `failures` failed attempts
/// in a row: 100 ms doubling to 2 s; to 10 s when the cache refused the
/// credentials, since retrying cannot help until someone fixes the access
/// policy.
pub(super) fn reconnect_backoff(failures: u32, refused: bool) -> Duration {
    let cap = if refused {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    };
    (Duration::from_millis(100) * (1u32 << failures.saturating_sub(1).min(10))).min(cap)
}

/// Wait before re-sending `AUTH` on a live connection after the cache
/// refused a newer token `failures` times in a row: 1 s doubling to 30 s.
/// The connection keeps the identity it has meanwhile.
pub(super) fn reauth_backoff(failures: u32) -> Duration {
    (Duration::from_secs(1) * (1u32 << failures.saturating_sub(1).min(5))).min(Duration::from_secs(30))
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
