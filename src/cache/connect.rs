//! Making the connection, re-authenticating it, and dropping a broken one.

use super::backoff::reauth_backoff;
use super::error::{classify, connection_broken, CacheError};
use super::{Cache, Credentials, Live, Target};
use crate::secret::redact;
use crate::token::{Token, TokenListener};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Cache {
    pub(super) async fn live_connection(
        &self,
        creds: &Credentials<'_>,
        deadline: Instant,
    ) -> Result<Arc<Live>, CacheError> {
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        let mut state = self.connect.lock().await;
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        let now = Instant::now();
        if let Some(err) = state.holds(now) {
            return Err(err.clone());
        }
        let budget = self
            .target
            .deadlines
            .connect
            .min(deadline.saturating_duration_since(now));
        let result = match tokio::time::timeout(budget, self.open(creds, budget)).await {
            Ok(r) => r,
            Err(_) => Err(CacheError::Unavailable(format!(
                "connecting took longer than {budget:?}"
            ))),
        };
        match result {
            Ok(conn) => {
                let number = self.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
                state.succeeded();
                let live = Arc::new(Live {
                    conn,
                    number,
                    authed_generation: AtomicU64::new(creds.generation()),
                    timeouts_in_a_row: AtomicU32::new(0),
                    reauth_after: std::sync::Mutex::new(None),
                });
                self.live.store(Some(live.clone()));
                tracing::info!(connection = number, host = %self.target.host, port = self.target.port, "connected to the cache");
                Ok(live)
            }
            Err(err) => {
                let backoff = state.failed(&err, Instant::now());
                tracing::warn!(error = %err, failures = state.failures, retry_in_ms = backoff.as_millis() as u64, "could not connect to the cache");
                Err(err)
            }
        }
    }

    async fn open(&self, creds: &Credentials<'_>, budget: Duration) -> Result<MultiplexedConnection, CacheError> {
        open_connection(&self.target, creds.user(), creds.password(), budget).await
    }

    /// On an invocation's path: the connection authenticated with an older
    /// token than the one the invocation holds (it was made while a refresh
    /// was re-AUTHing, or the cache refused the newer token earlier).
    ///
    /// When a re-AUTH is already under way (the refresh task's, most often),
    /// the invocation does not wait for it: the connection's own token is
    /// still valid, or the cache would have closed it.
    pub(super) async fn ensure_authenticated(
        &self,
        live: &Arc<Live>,
        creds: &Credentials<'_>,
    ) -> Result<(), CacheError> {
        if live.authed_generation.load(Ordering::Acquire) >= creds.generation() {
            return Ok(());
        }
        let Ok(_one_at_a_time) = self.reauth.try_lock() else {
            return Ok(());
        };
        self.send_auth(live, creds, true).await
    }

    /// In the refresh task, before invocations get `token`: re-AUTHs the live
    /// connection with it, so the connection never outlives its token.
    async fn reauth_live(&self, token: Arc<Token>) {
        let Some(live) = self.live.load_full() else {
            return;
        };
        let _one_at_a_time = self.reauth.lock().await;
        let creds = Credentials::Token(token);
        if let Err(err) = self.send_auth(&live, &creds, false).await {
            tracing::warn!(error = %err, connection = live.number, "could not re-authenticate the connection with the new token");
        }
    }

    /// Sends `AUTH` with the newer token on the live connection, once.
    ///
    /// If the cache refuses the newer token, the connection keeps the
    /// identity it has (its token is still valid, or the cache would have
    /// closed it) and invocations try the AUTH again only after a backoff
    /// (`respect_backoff`); the refresh task tries each new token once.
    async fn send_auth(
        &self,
        live: &Arc<Live>,
        creds: &Credentials<'_>,
        respect_backoff: bool,
    ) -> Result<(), CacheError> {
        if live.authed_generation.load(Ordering::Acquire) >= creds.generation() {
            return Ok(());
        }
        let failures = match *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, _)) if respect_backoff && Instant::now() < at => return Ok(()),
            Some((_, n)) => n,
            None => 0,
        };
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = creds.user() {
            auth.arg(user);
        }
        auth.arg(creds.password());
        let mut conn = live.conn.clone();
        match tokio::time::timeout(self.target.deadlines.command, auth.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                live.authed_generation.store(creds.generation(), Ordering::Release);
                *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.stats.reauths.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    connection = live.number,
                    "re-authenticated the connection with the new token"
                );
                Ok(())
            }
            Ok(Err(e)) if connection_broken(&e) => {
                self.discard(live, &e.to_string());
                Err(CacheError::Unavailable(redact(&e.to_string())))
            }
            Ok(Err(e)) => {
                let backoff = reauth_backoff(failures + 1);
                *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now() + backoff, failures + 1));
                tracing::warn!(error = %classify(&e), connection = live.number, retry_in_s = backoff.as_secs(),
                    "the cache refused the new token; going on with the current one");
                Ok(())
            }
            Err(_) => Err(CacheError::Timeout(self.target.deadlines.command)),
        }
    }

    /// Drops `live` if it is still the current connection.
    pub(super) fn discard(&self, live: &Arc<Live>, why: &str) {
        let prev = self.live.compare_and_swap(&Some(live.clone()), None);
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, live)) {
            self.stats.drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(connection = live.number, reason = %redact(why), "dropped the cache connection; the next call makes a new one");
        }
    }
}

impl TokenListener for Cache {
    fn token_ready(&self, token: Arc<Token>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.reauth_live(token))
    }
}

/// Opens one multiplexed connection to `target`: TCP, TLS (verified against
/// the target's host name, with `SSL_CERT_FILE`'s extra roots), and `AUTH`
/// with `user`/`password` in the handshake, within `budget`.
pub(crate) async fn open_connection(
    target: &Target,
    user: Option<&str>,
    password: &str,
    budget: Duration,
) -> Result<MultiplexedConnection, CacheError> {
    let addr = if target.tls {
        ConnectionAddr::TcpTls {
            host: target.host.clone(),
            port: target.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(target.host.clone(), target.port)
    };
    let mut redis_info = RedisConnectionInfo::default().set_password(password);
    if let Some(user) = user {
        redis_info = redis_info.set_username(user);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| classify(&e))?
        .set_redis_settings(redis_info);
    let client = match &target.extra_roots {
        Some(pem) if target.tls => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(crate::tls::with_system_roots(pem)),
            },
        ),
        _ => Client::open(info),
    }
    .map_err(|e| classify(&e))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(budget))
        .set_response_timeout(Some(target.deadlines.command));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| match classify(&e) {
            CacheError::Command(msg) => CacheError::Unavailable(msg),
            other => other,
        })
}
