//! Access tokens and their lazy, single-flight refresh.
//!
//! Each invocation asks [`TokenManager::current`] for a token. The common case
//! is one atomic load and one clock read: the token is not yet due. When it is
//! due (it expires within the refresh offset, less a per-token jitter) but
//! still valid, that invocation starts the one fetch in a task of its own and
//! goes on at once with the current token (stale-while-revalidate): no
//! invocation waits for the identity endpoint while a valid token exists.
//! When the new token arrives, the listeners (the cache) re-AUTH their live
//! connections with it, and only then is it handed to invocations. Only when
//! no valid token exists do invocations wait, all for that one fetch, within
//! its deadline. A failed fetch while the current token is still valid is
//! logged and retried after a backoff that tightens before expiry. There is
//! no timer: an idle process does not refresh.

use crate::secret::{redact, Secret};
use arc_swap::ArcSwapOption;
use base64::Engine;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;

/// A token as a credential hands it over.
#[derive(Debug, Clone)]
pub(crate) struct FetchedToken {
    /// The access token.
    pub secret: Secret,
    /// When it expires.
    pub expires_on: OffsetDateTime,
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The credential failed (message already redacted).
    #[error("the identity could not get a token: {0}")]
    Credential(String),
    /// The credential did not answer within the deadline.
    #[error("the identity did not answer within {0:?}")]
    Timeout(Duration),
    /// The token is not usable (no `oid`, already expired, …).
    #[error("the token is unusable: {0}")]
    Invalid(String),
    /// An earlier fetch failed and the next try is not due yet.
    #[error("no valid token: the last fetch failed ({0}); retrying shortly")]
    BackingOff(String),
}

impl TokenError {
    /// Its class, as telemetry's `error.type` names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TokenError::Credential(_) => "credential",
            TokenError::Timeout(_) => "timeout",
            TokenError::Invalid(_) => "invalid_token",
            TokenError::BackingOff(_) => "backing_off",
        }
    }
}

/// A future that yields a token.
pub(crate) type TokenFuture = Pin<Box<dyn Future<Output = Result<FetchedToken, TokenError>> + Send>>;

/// Something that fetches tokens: an `azure_identity` credential in
/// production, a scripted fake in unit tests.
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// Fetches a token (no deadline of its own: the manager adds one).
    fn fetch(&self) -> TokenFuture;
}

/// A token in use, with the instants derived from it.
#[derive(Debug)]
pub(crate) struct Token {
    /// The access token, sent as the AUTH password.
    pub secret: Secret,
    /// The Redis user name: `Redis__principalId` or the token's `oid`.
    pub user: String,
    /// When the token expires.
    pub expires_at: Instant,
    /// When the next refresh is due (expiry less offset less jitter).
    pub refresh_at: Instant,
    /// Counts up with every token taken into use, so a connection can tell
    /// whether it has authenticated with the latest one.
    pub generation: u64,
}

impl Token {
    /// Time left before expiry (zero once expired).
    pub(crate) fn expires_in(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }

    /// Whether the token is still valid now.
    pub(crate) fn is_valid(&self) -> bool {
        Instant::now() < self.expires_at
    }
}

/// When to refresh a token that lives `lifetime` from now.
///
/// Refreshes `offset` before expiry, less a jitter of up to a fifth of the
/// offset (at most 60 s) so that many instances do not all re-AUTH at once
/// (Microsoft's advice). Jitter moves the refresh later, never earlier, so
/// with the default 300 s offset it falls when `azure_identity`'s own cache
/// (stale at 300 s) hands out a new token. When the offset is not shorter
/// than the lifetime, refreshing "offset before expiry" would mean refreshing
/// on every call: half the lifetime is used instead, and `clamped` says so.
pub(crate) fn refresh_delay(lifetime: Duration, offset: Duration, jitter_unit: f64) -> (Duration, bool) {
    let clamped = offset >= lifetime;
    let offset = if clamped { lifetime / 2 } else { offset };
    let max_jitter = (offset / 5).min(Duration::from_secs(60));
    let jitter = max_jitter.mul_f64(jitter_unit.clamp(0.0, 1.0));
    (lifetime - offset + jitter, clamped)
}

/// Backoff after `failures` failed fetches in a row: 1 s, 2 s, 4 s, 8 s,
/// then 10 s; while a token is still valid, never more than a quarter of
/// its remaining lifetime, so retries come closer together as expiry nears
/// instead of letting it pass inside one backoff.
pub(crate) fn failure_backoff(failures: u32, valid_for: Option<Duration>) -> Duration {
    let backoff = Duration::from_secs(1u64 << failures.saturating_sub(1).min(4)).min(Duration::from_secs(10));
    match valid_for {
        Some(left) => backoff.min(left / 4).max(Duration::from_millis(100)),
        None => backoff,
    }
}

/// Reads the `oid` claim from a JWT's payload (no signature check: the
/// token came from Entra ID over TLS, and Redis checks it).
pub(crate) fn oid_from_jwt(token: &str) -> Result<String, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::Invalid("not a JWT; set Redis__principalId".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Invalid("its payload is not base64url; set Redis__principalId".into()))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Invalid("its payload is not JSON; set Redis__principalId".into()))?;
    match claims.get("oid").and_then(|v| v.as_str()) {
        Some(oid) if !oid.is_empty() => Ok(oid.to_owned()),
        _ => Err(TokenError::Invalid(
            "it has no oid claim; set Redis__principalId to the identity's object id".into(),
        )),
    }
}

/// The outcome of a fetch, as its waiters see it.
type Outcome = Option<Result<Arc<Token>, TokenError>>;

/// What the refresh lock guards: the fetch under way, the failure streak
/// and the next try. Held for a few instructions at a time, never across an
/// `.await`.
#[derive(Debug, Default)]
struct RefreshState {
    /// The fetch under way: its outcome is sent here once the new token is
    /// in use (or the fetch has failed).
    in_flight: Option<watch::Receiver<Outcome>>,
    failures: u32,
    retry_after: Option<Instant>,
    last_error: Option<TokenError>,
    warned_clamp: bool,
}

/// What an invocation that found the token due can do next.
enum Refresh {
    /// A newer token is already in use.
    Ready(Arc<Token>),
    /// A fetch is under way (perhaps just started by this caller).
    InFlight(watch::Receiver<Outcome>),
    /// The last fetch failed and the next try is not due yet.
    BackingOff(TokenError),
}

/// Counters shown by the Health function.
#[derive(Debug, Default)]
pub(crate) struct TokenStats {
    /// Token fetches started.
    pub fetches: AtomicU64,
    /// New tokens taken into use after the first.
    pub refreshes: AtomicU64,
    /// Fetches that failed or timed out.
    pub failures: AtomicU64,
}

/// Told about every new token before invocations get it, so that it can
/// re-AUTH the connections it keeps (the [`crate::cache::Cache`] does).
pub(crate) trait TokenListener: Send + Sync + 'static {
    /// Takes `token` into use on the listener's live connections. Runs in
    /// the refresh task, never in an invocation; must bound its own time.
    fn token_ready(&self, token: Arc<Token>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Holds the current token and refreshes it, one fetch at a time, in the
/// background of the invocation that finds it due.
pub(crate) struct TokenManager {
    source: Arc<dyn TokenSource>,
    principal_id: Option<String>,
    offset: Duration,
    fetch_timeout: Duration,
    current: ArcSwapOption<Token>,
    /// A new token while the listeners re-AUTH their connections with it,
    /// before invocations get it: connections made meanwhile use it.
    pending: ArcSwapOption<Token>,
    refresh: std::sync::Mutex<RefreshState>,
    generation: AtomicU64,
    /// Weak, so a cache and its token manager do not keep each other alive.
    listeners: std::sync::Mutex<Vec<Weak<dyn TokenListener>>>,
    /// Counters for Health and tests.
    pub stats: TokenStats,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("principal_id", &self.principal_id)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// A manager with no token yet; the first [`current`](Self::current) fetches one.
    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        principal_id: Option<String>,
        offset: Duration,
        fetch_timeout: Duration,
    ) -> Self {
        Self {
            source,
            principal_id,
            offset,
            fetch_timeout,
            current: ArcSwapOption::empty(),
            pending: ArcSwapOption::empty(),
            refresh: std::sync::Mutex::new(RefreshState::default()),
            generation: AtomicU64::new(0),
            listeners: std::sync::Mutex::new(Vec::new()),
            stats: TokenStats::default(),
        }
    }

    /// The token in use, if any, without fetching.
    pub(crate) fn peek(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    /// The current token when it is not yet due for a refresh: one atomic
    /// load and a clock read, no future. `None` means ask [`Self::current`].
    pub(crate) fn fresh(&self) -> Option<Arc<Token>> {
        self.current
            .load_full()
            .filter(|token| Instant::now() < token.refresh_at)
    }

    /// The newest token: one the listeners are being handed, else the
    /// current one.
    pub(crate) fn newest(&self) -> Option<Arc<Token>> {
        self.pending.load_full().or_else(|| self.current.load_full())
    }

    /// Registers `listener` to hear of every new token before it is used.
    pub(crate) fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|l| l.strong_count() > 0);
        listeners.push(listener);
    }

    /// A token good to use now.
    ///
    /// Not due: one atomic load and a clock read. Due but still valid: starts
    /// the one refresh (unless it is under way or backing off) and returns the
    /// current token at once; the refresh runs beside the invocations. No
    /// valid token: waits for that one fetch, within the fetch deadline.
    pub(crate) async fn current(self: &Arc<Self>) -> Result<Arc<Token>, TokenError> {
        if let Some(token) = self.current.load_full() {
            let now = Instant::now();
            if now < token.refresh_at {
                return Ok(token);
            }
            if now < token.expires_at {
                // Whatever the refresh's state, this invocation goes on;
                // the refresh is a trace of its own, not the invocation's.
                let _ = crate::otel::detached(|| self.start_refresh());
                return Ok(token);
            }
        }
        self.wait_for_token().await
    }

    /// Waits for a valid token: the fetch under way, or one started now.
    async fn wait_for_token(self: &Arc<Self>) -> Result<Arc<Token>, TokenError> {
        let mut outcome = match self.start_refresh() {
            Refresh::Ready(token) => return Ok(token),
            Refresh::BackingOff(err) => return Err(err),
            Refresh::InFlight(rx) => rx,
        };
        // The refresh task bounds the fetch by the deadline and the re-AUTH
        // by the command deadline; this bound is only a safety net.
        let safety_net = self.fetch_timeout * 2;
        let waited = tokio::time::timeout(safety_net, outcome.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(done)) => done.clone().unwrap_or(Err(TokenError::Timeout(self.fetch_timeout))),
            // The refresh task ended without an answer (the runtime is
            // shutting down): treat it as a fetch that did not answer.
            Ok(Err(_)) | Err(_) => Err(TokenError::Timeout(self.fetch_timeout)),
        }
    }

    /// Starts the one fetch if none is under way and no backoff holds it.
    fn start_refresh(self: &Arc<Self>) -> Refresh {
        let mut state = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = &state.in_flight {
            return Refresh::InFlight(rx.clone());
        }
        let now = Instant::now();
        let existing = self.current.load_full();
        // A refresh finished between this caller's check and the lock.
        if let Some(token) = existing.as_ref().filter(|t| now < t.refresh_at) {
            return Refresh::Ready(token.clone());
        }
        if state.retry_after.is_some_and(|at| now < at) {
            if let Some(token) = existing.filter(|t| t.is_valid()) {
                return Refresh::Ready(token);
            }
            let why = state.last_error.as_ref().map(ToString::to_string).unwrap_or_default();
            return Refresh::BackingOff(TokenError::BackingOff(why));
        }
        let (tx, rx) = watch::channel(None);
        state.in_flight = Some(rx.clone());
        drop(state);
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let source = self.clone();
        // In the current span: an invocation that waits for this token
        // shows the refresh in its trace.
        crate::otel::spawn(async move {
            let mut span = crate::otel::Span::start("token refresh", crate::otel::Kind::Internal);
            let outcome = span.scope(source.fetch_and_install()).await;
            if let Err(e) = &outcome {
                span.fail(e.kind(), &e.to_string());
            }
            drop(span);
            source.refresh.lock().unwrap_or_else(|p| p.into_inner()).in_flight = None;
            tx.send_replace(Some(outcome));
        });
        Refresh::InFlight(rx)
    }

    /// The refresh task: fetch within the deadline, then take the token into
    /// use (listeners first, invocations after) or record the failure.
    async fn fetch_and_install(&self) -> Result<Arc<Token>, TokenError> {
        let mut span = crate::otel::Span::start("token fetch", crate::otel::Kind::Client);
        let fetched = match tokio::time::timeout(self.fetch_timeout, self.source.fetch()).await {
            Ok(result) => result.and_then(|t| self.accept(t)),
            Err(_) => Err(TokenError::Timeout(self.fetch_timeout)),
        };
        match &fetched {
            Ok(t) => span.set("azure_redis.token.expires_in_s", t.expires_in().as_secs() as i64),
            Err(e) => span.fail(e.kind(), &e.to_string()),
        }
        drop(span);
        let outcome = if fetched.is_ok() { "ok" } else { "failed" };
        crate::otel::count(crate::otel::TOKEN_REFRESHES, || vec![("outcome", outcome.into())]);
        let existing = self.current.load_full();
        let fresh = match fetched {
            Ok(fresh) => fresh,
            Err(err) => return self.fetch_failed(err, existing),
        };
        let fresh = match self.take_or_keep(fresh, existing) {
            Taken::Kept(old) => return Ok(old),
            Taken::New(fresh) => fresh,
        };
        let listeners: Vec<_> = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        // Re-AUTH the live connections before invocations are handed the new
        // token: until then they go on with the old one, which is valid.
        // Connections made meanwhile take the new one (`newest`).
        self.pending.store(Some(fresh.clone()));
        for listener in listeners {
            listener.token_ready(fresh.clone()).await;
        }
        tracing::info!(expires_in_s = fresh.expires_in().as_secs(), user = %fresh.user, "new access token in use");
        self.current.store(Some(fresh.clone()));
        self.pending.store(None);
        Ok(fresh)
    }

    /// Turns a fetched token into a [`Token`] with its refresh instant.
    fn accept(&self, fetched: FetchedToken) -> Result<Token, TokenError> {
        let lifetime = (fetched.expires_on - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        if lifetime.is_zero() {
            return Err(TokenError::Invalid("it has already expired".into()));
        }
        let user = match &self.principal_id {
            Some(id) => id.clone(),
            None => oid_from_jwt(fetched.secret.expose())?,
        };
        let (delay, clamped) = refresh_delay(lifetime, self.offset, fastrand::f64());
        if clamped {
            self.warn_clamp_once(lifetime);
        }
        let now = Instant::now();
        Ok(Token {
            secret: fetched.secret,
            user,
            expires_at: now + lifetime,
            refresh_at: now + delay,
            generation: 0,
        })
    }

    fn warn_clamp_once(&self, lifetime: Duration) {
        let mut state = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        if !std::mem::replace(&mut state.warned_clamp, true) {
            tracing::warn!(
                offset_s = self.offset.as_secs_f64(),
                lifetime_s = lifetime.as_secs_f64(),
                "Redis__tokenRefreshOffsetSeconds is not shorter than the token lifetime; refreshing at half the lifetime instead"
            );
        }
    }

    /// Numbers a fresh token, or keeps the current one when the credential
    /// handed the same token back.
    fn take_or_keep(&self, mut fresh: Token, existing: Option<Arc<Token>>) -> Taken {
        let mut state = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        state.failures = 0;
        state.last_error = None;
        state.retry_after = None;
        if let Some(old) = existing {
            // azure_identity caches tokens: asking early hands back the same
            // one. Keep it, and ask again later rather than on every call.
            if fresh.expires_at <= old.expires_at + Duration::from_secs(1) {
                let wait = (old.expires_in() / 8).clamp(Duration::from_secs(1), Duration::from_secs(30));
                state.retry_after = Some(Instant::now() + wait);
                tracing::debug!(
                    retry_in_s = wait.as_secs_f64(),
                    "credential returned the current token again"
                );
                return Taken::Kept(old);
            }
            self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        }
        fresh.generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        Taken::New(Arc::new(fresh))
    }

    fn fetch_failed(&self, err: TokenError, existing: Option<Arc<Token>>) -> Result<Arc<Token>, TokenError> {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        state.failures += 1;
        let valid = existing.filter(|t| t.is_valid());
        let backoff = failure_backoff(state.failures, valid.as_ref().map(|t| t.expires_in()));
        state.retry_after = Some(Instant::now() + backoff);
        state.last_error = Some(err.clone());
        match valid {
            Some(token) => {
                tracing::warn!(error = %err, failures = state.failures, retry_in_s = backoff.as_secs_f64(),
                    expires_in_s = token.expires_in().as_secs(), "token refresh failed; going on with the current token");
                Ok(token)
            }
            None => {
                tracing::warn!(error = %err, failures = state.failures, retry_in_s = backoff.as_secs_f64(), "token fetch failed");
                Err(err)
            }
        }
    }

    /// Resolves once no fetch is under way (tests wait on this, not on a sleep).
    #[cfg(test)]
    async fn settled(&self) {
        let in_flight = self.refresh.lock().unwrap().in_flight.clone();
        if let Some(mut rx) = in_flight {
            let _ = rx.wait_for(Option::is_some).await;
        }
    }
}

/// What became of a fetched token.
enum Taken {
    /// The credential handed back the token in use.
    Kept(Arc<Token>),
    /// A newer token, numbered, not yet in use.
    New(Arc<Token>),
}

/// Maps an `azure_core` error to a [`TokenError`], redacting its text.
pub(crate) fn credential_error(err: &dyn std::fmt::Display) -> TokenError {
    TokenError::Credential(redact(&err.to_string()))
}

#[cfg(test)]
mod tests {
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
}
