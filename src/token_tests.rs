use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

/// A scripted token source: each fetch mints a JWT-shaped token that lives
/// `lifetime` from the moment of the fetch, unless told to fail or stall.
struct FakeSource {
    lifetime: Mutex<Duration>,
    fail: Mutex<bool>,
    stall: Mutex<Option<Duration>>,
    calls: AtomicUsize,
    /// Tokens all expire at this (paused-clock) instant: a credential cache.
    fixed_expiry: Mutex<Option<Instant>>,
}

impl FakeSource {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            lifetime: Mutex::new(lifetime),
            fail: Mutex::new(false),
            stall: Mutex::new(None),
            calls: AtomicUsize::new(0),
            fixed_expiry: Mutex::new(None),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn jwt(oid: Option<&str>) -> String {
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = match oid {
        Some(o) => serde_json::json!({"oid": o, "aud": "https://redis.azure.com"}),
        None => serde_json::json!({"aud": "https://redis.azure.com"}),
    };
    format!("{}.{}.sig", b64(&serde_json::json!({"alg": "HS256"})), b64(&claims))
}

impl TokenSource for FakeSource {
    fn fetch(&self) -> TokenFuture {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = *self.fail.lock().unwrap();
        let stall = *self.stall.lock().unwrap();
        // Paused tokio time does not move the wall clock, so a fixed expiry is
        // given as a paused-clock instant and turned into "wall clock now +
        // what is left", which is what the manager computes back.
        let lifetime = match *self.fixed_expiry.lock().unwrap() {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => *self.lifetime.lock().unwrap(),
        };
        let expires_on = OffsetDateTime::now_utc() + lifetime;
        Box::pin(async move {
            if let Some(d) = stall {
                tokio::time::sleep(d).await;
            }
            if fail {
                return Err(TokenError::Credential(format!("scripted failure {n}")));
            }
            Ok(FetchedToken {
                secret: Secret::new(jwt(Some("oid-123"))),
                expires_on,
            })
        })
    }
}

fn manager(source: &Arc<FakeSource>, offset: u64) -> Arc<TokenManager> {
    Arc::new(TokenManager::new(
        source.clone(),
        None,
        Duration::from_secs(offset),
        Duration::from_secs(5),
    ))
}

/// Refresh falls between offset and offset less the jitter before expiry.
#[test]
fn refresh_delay_arithmetic() {
    let hour = Duration::from_secs(3600);
    let five = Duration::from_secs(300);
    assert_eq!(refresh_delay(hour, five, 0.0), (Duration::from_secs(3300), false));
    assert_eq!(refresh_delay(hour, five, 1.0), (Duration::from_secs(3360), false));
    // A managed-identity token of 24 h: jitter is capped at 60 s.
    let day = Duration::from_secs(86_400);
    let big = Duration::from_secs(3600);
    assert_eq!(refresh_delay(day, big, 1.0).0, Duration::from_secs(86_400 - 3600 + 60));
    // An offset as long as the token: refresh at half the lifetime.
    let (d, clamped) = refresh_delay(Duration::from_secs(20), Duration::from_secs(30), 0.0);
    assert!(clamped);
    assert_eq!(d, Duration::from_secs(10));
    // Jitter outside 0..1 is clamped.
    assert_eq!(refresh_delay(hour, five, 7.0).0, Duration::from_secs(3360));
}

/// Backoff doubles from 1 s and stops at 10 s; near expiry it shrinks to a
/// quarter of the time left (at least 100 ms).
#[test]
fn backoff_grows_caps_and_shrinks_near_expiry() {
    let secs: Vec<u64> = (1..=7).map(|n| failure_backoff(n, None).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 10, 10, 10]);
    assert_eq!(
        failure_backoff(5, Some(Duration::from_secs(3600))),
        Duration::from_secs(10)
    );
    assert_eq!(failure_backoff(5, Some(Duration::from_secs(8))), Duration::from_secs(2));
    assert_eq!(
        failure_backoff(1, Some(Duration::from_millis(200))),
        Duration::from_millis(100)
    );
}

/// An identity that stays down while the token runs out: retries come
/// closer together, so the first retry after it recovers falls before expiry.
#[tokio::test(start_paused = true)]
async fn retries_tighten_before_expiry() {
    let src = FakeSource::new(Duration::from_secs(12));
    let m = manager(&src, 8);
    m.current().await.unwrap();
    *src.fail.lock().unwrap() = true;
    // Call every 100 ms from the refresh point to 11.5 s.
    tokio::time::advance(Duration::from_millis(4000)).await;
    let mut last_fetch_count = src.calls();
    let mut gaps = Vec::new();
    let mut since = Instant::now();
    while Instant::now().duration_since(since) < Duration::from_secs(30)
        && m.peek().unwrap().expires_in() > Duration::from_millis(500)
    {
        m.current().await.unwrap();
        m.settled().await;
        if src.calls() != last_fetch_count {
            gaps.push(since.elapsed());
            since = Instant::now();
            last_fetch_count = src.calls();
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert!(gaps.len() >= 4, "kept retrying: {gaps:?}");
    let last = *gaps.last().unwrap();
    assert!(
        last <= Duration::from_secs(1),
        "retries are dense near expiry: {gaps:?}"
    );
}

/// The oid claim is read from a real base64url JWT payload.
#[test]
fn oid_decode() {
    assert_eq!(oid_from_jwt(&jwt(Some("abc-oid"))).unwrap(), "abc-oid");
    let missing = oid_from_jwt(&jwt(None)).unwrap_err();
    assert!(missing.to_string().contains("no oid claim"), "{missing}");
    assert!(matches!(oid_from_jwt("opaque-token"), Err(TokenError::Invalid(_))));
    assert!(matches!(oid_from_jwt("a.!!!.c"), Err(TokenError::Invalid(_))));
}

/// The hot path fetches once, then serves the cached token until it is due;
/// the invocation that finds it due goes on with it and the new one is used
/// once its fetch is done.
#[tokio::test(start_paused = true)]
async fn fetches_once_until_due() {
    let src = FakeSource::new(Duration::from_secs(3600));
    let m = manager(&src, 300);
    let t1 = m.current().await.unwrap();
    assert_eq!(t1.user, "oid-123");
    assert_eq!(t1.generation, 1);
    tokio::time::advance(Duration::from_secs(3000)).await;
    let t2 = m.current().await.unwrap();
    m.settled().await;
    assert_eq!(src.calls(), 1);
    assert_eq!(t2.generation, 1);
    // Past expiry less offset less the largest jitter: due.
    tokio::time::advance(Duration::from_secs(361)).await;
    assert_eq!(m.current().await.unwrap().generation, 1, "goes on with the valid token");
    m.settled().await;
    assert_eq!(src.calls(), 2);
    assert_eq!(m.current().await.unwrap().generation, 2);
    assert_eq!(m.stats.refreshes.load(Ordering::Relaxed), 1);
}

/// Hundreds of concurrent callers inside the window cause one fetch, and
/// none of them waits for it: all go on at once with the valid token.
#[tokio::test(start_paused = true)]
async fn due_token_single_flight_without_waiting() {
    let src = FakeSource::new(Duration::from_secs(20));
    let m = manager(&src, 8);
    m.current().await.unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    *src.stall.lock().unwrap() = Some(Duration::from_secs(2));
    let started = Instant::now();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.current().await.map(|t| (t.generation, Instant::now())) })
        })
        .collect();
    for t in tasks {
        let (generation, at) = t.await.unwrap().unwrap();
        assert_eq!(generation, 1);
        assert_eq!(at, started, "no caller waited for the fetch");
    }
    m.settled().await;
    assert_eq!(started.elapsed(), Duration::from_secs(2), "the fetch ran beside them");
    assert_eq!(src.calls(), 2, "one initial fetch and one refresh");
    assert_eq!(m.current().await.unwrap().generation, 2);
}

/// With no valid token (expired while idle), concurrent callers wait, all
/// for one fetch, and all get its token.
#[tokio::test(start_paused = true)]
async fn expired_token_waiters_share_one_fetch() {
    let src = FakeSource::new(Duration::from_secs(20));
    let m = manager(&src, 8);
    m.current().await.unwrap();
    tokio::time::advance(Duration::from_secs(21)).await;
    *src.stall.lock().unwrap() = Some(Duration::from_millis(200));
    let started = Instant::now();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.current().await.map(|t| t.generation) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 2);
    }
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(src.calls(), 2);
}

/// An identity endpoint that hangs while the token is valid costs the
/// invocations nothing: they return at once for the whole fetch deadline,
/// and the hung fetch counts as a failure once its deadline passes.
#[tokio::test(start_paused = true)]
async fn hanging_fetch_never_holds_a_valid_token() {
    let src = FakeSource::new(Duration::from_secs(60));
    let m = manager(&src, 30);
    m.current().await.unwrap();
    tokio::time::advance(Duration::from_secs(37)).await;
    *src.stall.lock().unwrap() = Some(Duration::from_secs(3600));
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4900) {
        let before = Instant::now();
        assert_eq!(m.current().await.unwrap().generation, 1);
        assert_eq!(Instant::now(), before, "returned at once");
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(src.calls(), 2, "one fetch under way, not one per call");
    assert_eq!(m.stats.failures.load(Ordering::Relaxed), 0);
    m.settled().await;
    // The deadline runs from the refresh task's first poll, one step in.
    assert_eq!(started.elapsed(), Duration::from_millis(5100), "the fetch deadline");
    assert_eq!(m.stats.failures.load(Ordering::Relaxed), 1);
    assert_eq!(m.current().await.unwrap().generation, 1);
}

/// A listener (the cache) hears of a new token before invocations get it:
/// while it re-AUTHs, invocations go on with the old, valid token.
#[tokio::test(start_paused = true)]
async fn listeners_take_the_token_before_invocations() {
    struct SlowListener {
        seen: Mutex<Vec<(u64, u64)>>,
        manager: Mutex<Option<Arc<TokenManager>>>,
    }
    impl TokenListener for SlowListener {
        fn token_ready(&self, token: Arc<Token>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            Box::pin(async move {
                let m = self.manager.lock().unwrap().clone().unwrap();
                let in_use = m.peek().map_or(0, |t| t.generation);
                self.seen.lock().unwrap().push((token.generation, in_use));
                tokio::time::sleep(Duration::from_secs(1)).await;
            })
        }
    }
    let src = FakeSource::new(Duration::from_secs(20));
    let m = manager(&src, 8);
    let listener = Arc::new(SlowListener {
        seen: Mutex::new(Vec::new()),
        manager: Mutex::new(Some(m.clone())),
    });
    let as_dyn: Arc<dyn TokenListener> = listener.clone();
    m.subscribe(Arc::downgrade(&as_dyn));
    assert_eq!(m.current().await.unwrap().generation, 1);
    assert_eq!(*listener.seen.lock().unwrap(), [(1, 0)]);
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(m.current().await.unwrap().generation, 1);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(*listener.seen.lock().unwrap(), [(1, 0), (2, 1)], "told first");
    assert_eq!(m.current().await.unwrap().generation, 1, "old token meanwhile");
    m.settled().await;
    assert_eq!(m.current().await.unwrap().generation, 2);
    *listener.manager.lock().unwrap() = None;
}

/// A failed refresh while the token is valid: callers go on with it, and
/// the retry waits for the backoff instead of hammering the endpoint.
#[tokio::test(start_paused = true)]
async fn failed_refresh_keeps_valid_token_and_backs_off() {
    let src = FakeSource::new(Duration::from_secs(60));
    let m = manager(&src, 30);
    let first = m.current().await.unwrap();
    tokio::time::advance(Duration::from_secs(37)).await;
    *src.fail.lock().unwrap() = true;
    for _ in 0..50 {
        assert_eq!(m.current().await.unwrap().generation, first.generation);
        m.settled().await;
    }
    assert_eq!(src.calls(), 2, "one failed try, then backoff");
    tokio::time::advance(Duration::from_millis(1100)).await;
    m.current().await.unwrap();
    m.settled().await;
    assert_eq!(src.calls(), 3, "retried after the 1 s backoff");
    *src.fail.lock().unwrap() = false;
    tokio::time::advance(Duration::from_millis(2100)).await;
    m.current().await.unwrap();
    m.settled().await;
    assert_eq!(m.current().await.unwrap().generation, 2, "recovered");
    assert_eq!(m.stats.failures.load(Ordering::Relaxed), 2);
}

/// With no token at all, a stalled identity endpoint costs at most the
/// fetch deadline; then calls fail fast until the backoff has passed.
#[tokio::test(start_paused = true)]
async fn stalled_fetch_hits_deadline() {
    let src = FakeSource::new(Duration::from_secs(60));
    *src.stall.lock().unwrap() = Some(Duration::from_secs(3600));
    let m = manager(&src, 30);
    let started = Instant::now();
    let err = m.current().await.unwrap_err();
    assert_eq!(err, TokenError::Timeout(Duration::from_secs(5)));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // Within the backoff an expired/missing token fails fast with the reason.
    let err = m.current().await.unwrap_err();
    assert!(
        matches!(err, TokenError::BackingOff(ref why) if why.contains("did not answer")),
        "{err}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

/// A credential that hands back the same token (azure_identity's cache)
/// causes no new generation and no fetch on every call.
#[tokio::test(start_paused = true)]
async fn same_token_again_is_not_a_refresh() {
    let src = FakeSource::new(Duration::from_secs(3600));
    *src.fixed_expiry.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    let m = manager(&src, 600);
    m.current().await.unwrap();
    tokio::time::advance(Duration::from_secs(3100)).await;
    for _ in 0..100 {
        assert_eq!(m.current().await.unwrap().generation, 1);
        m.settled().await;
    }
    assert_eq!(src.calls(), 2);
    assert_eq!(m.stats.refreshes.load(Ordering::Relaxed), 0);
}

/// An offset longer than the token still refreshes only at half-life.
#[tokio::test(start_paused = true)]
async fn offset_longer_than_lifetime_is_clamped() {
    let src = FakeSource::new(Duration::from_secs(20));
    let m = manager(&src, 300);
    m.current().await.unwrap();
    for _ in 0..100 {
        m.current().await.unwrap();
    }
    assert_eq!(src.calls(), 1);
    tokio::time::advance(Duration::from_secs(13)).await;
    m.current().await.unwrap();
    m.settled().await;
    assert_eq!(src.calls(), 2);
}

/// A token without oid and no principal configured is a clear error.
#[tokio::test(start_paused = true)]
async fn missing_oid_is_an_error() {
    struct NoOid;
    impl TokenSource for NoOid {
        fn fetch(&self) -> TokenFuture {
            Box::pin(async {
                Ok(FetchedToken {
                    secret: Secret::new(jwt(None)),
                    expires_on: OffsetDateTime::now_utc() + Duration::from_secs(60),
                })
            })
        }
    }
    let m = Arc::new(TokenManager::new(
        Arc::new(NoOid),
        None,
        Duration::from_secs(10),
        Duration::from_secs(5),
    ));
    assert!(m
        .current()
        .await
        .unwrap_err()
        .to_string()
        .contains("Redis__principalId"));
    let m = Arc::new(TokenManager::new(
        Arc::new(NoOid),
        Some("configured".into()),
        Duration::from_secs(10),
        Duration::from_secs(5),
    ));
    assert_eq!(m.current().await.unwrap().user, "configured");
}
