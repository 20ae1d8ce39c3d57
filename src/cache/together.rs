//! Two steps of a connection run side by side, the credentials' step
//! taking precedence: [`credentials_first`].

use std::future::Future;

/// Runs `credentials` and `other` together and returns both results.
///
/// `credentials` is polled first, so one that fails at once (a token fetch
/// backing off) never starts `other`. When both fail, its error is the one
/// returned, whichever came first: without credentials, the other step's
/// failure says nothing about the cache (and a token problem is what the
/// caller must hear of). When only `other` fails, its error is returned
/// once `credentials` has succeeded.
pub(super) async fn credentials_first<A, B, E>(
    credentials: impl Future<Output = Result<A, E>>,
    other: impl Future<Output = Result<B, E>>,
) -> Result<(A, B), E> {
    tokio::pin!(credentials, other);
    tokio::select! {
        biased;
        a = &mut credentials => {
            let a = a?;
            Ok((a, other.await?))
        }
        b = &mut other => {
            let a = credentials.await?;
            Ok((a, b?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tokio::time::sleep;

    async fn after<T>(ms: u64, v: T) -> T {
        sleep(Duration::from_millis(ms)).await;
        v
    }

    /// Both run at once: the whole takes as long as the longer of the two.
    #[tokio::test(start_paused = true)]
    async fn both_run_together() {
        let t = tokio::time::Instant::now();
        let got = credentials_first(after(30, Ok::<_, &str>(1)), after(20, Ok(2))).await;
        assert_eq!(got, Ok((1, 2)));
        assert_eq!(t.elapsed(), Duration::from_millis(30));
    }

    /// The credentials' failure wins, even when the other step failed
    /// first; the other step's failure is returned when the credentials
    /// came.
    #[tokio::test(start_paused = true)]
    async fn the_credentials_error_wins() {
        let both = credentials_first(after(30, Err::<(), _>("no token")), after(1, Err::<(), _>("refused"))).await;
        assert_eq!(both, Err("no token"));
        let other = credentials_first(after(30, Ok::<_, &str>(())), after(1, Err::<(), _>("refused"))).await;
        assert_eq!(other, Err("refused"));
        let t = tokio::time::Instant::now();
        let first = credentials_first(after(1, Err::<(), _>("no token")), after(30, Ok::<_, &str>(()))).await;
        assert_eq!(first, Err("no token"));
        assert_eq!(t.elapsed(), Duration::from_millis(1), "did not wait for the other step");
    }

    /// Credentials refused at once never start the other step.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_at_once_starts_nothing() {
        let started = AtomicBool::new(false);
        let other = async {
            started.store(true, Ordering::SeqCst);
            Ok::<(), &str>(())
        };
        assert_eq!(
            credentials_first(async { Err::<(), _>("backing off") }, other).await,
            Err("backing off")
        );
        assert!(!started.load(Ordering::SeqCst));
    }
}
