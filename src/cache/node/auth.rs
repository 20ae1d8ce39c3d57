//! `AUTH` with a newer token on a live connection: by the refresh task
//! before invocations get the token, and on an invocation's way when the
//! connection missed it.

use super::{Live, Node};
use crate::cache::context::{Call, Credentials};
use crate::cache::error::{classify, connection_broken, CacheError};
use crate::cache::retry::{reauth_backoff, Failure};
use crate::otel;
use crate::secret::redact;
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

impl Node {
    /// On an invocation's path: the connection authenticated with an older
    /// token than the one the invocation holds (the cache refused the newer
    /// token earlier, or the connection missed a refresh).
    ///
    /// When a re-AUTH is already under way (the refresh task's, most often),
    /// the invocation does not wait for it: the connection's own token is
    /// still valid, or the cache would have closed it.
    pub(super) async fn ensure_authenticated(
        &self,
        live: &Arc<Live>,
        creds: &Credentials<'_>,
        call: &Call,
    ) -> Result<(), Failure> {
        if live.authed_generation.load(Ordering::Acquire) >= creds.generation() {
            return Ok(());
        }
        let Ok(_one_at_a_time) = self.reauth.try_lock() else {
            return Ok(());
        };
        self.send_auth(live, creds, true, call).await
    }

    /// In the refresh task, before invocations get the new token: re-AUTHs
    /// the live connection with it, so the connection never outlives its
    /// token. A node without a connection has nothing to do: its next
    /// connection is made with the newest token.
    pub(in crate::cache) async fn reauth_live(&self, creds: &Credentials<'_>) {
        let Some(live) = self.live.load_full() else {
            return;
        };
        let _one_at_a_time = self.reauth.lock().await;
        let call = Call::no_wait(&self.ctx);
        if let Err(f) = self.send_auth(&live, creds, false, &call).await {
            let err = f.into_cache_error();
            tracing::warn!(error = %err, node = %self.addr, connection = live.number, "could not re-authenticate the connection with the new token");
        }
    }

    /// Sends `AUTH` with the newer token on the live connection, once,
    /// within `call` (on an invocation's way, what is left of it).
    ///
    /// If the cache refuses the newer token, the connection keeps the
    /// identity it has (its token is still valid, or the cache would have
    /// closed it) and invocations try the AUTH again only after a backoff
    /// (`respect_backoff`); the refresh task tries each new token once.
    pub(super) async fn send_auth(
        &self,
        live: &Arc<Live>,
        creds: &Credentials<'_>,
        respect_backoff: bool,
        call: &Call,
    ) -> Result<(), Failure> {
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
        let budget = call.budget(self.ctx.target.deadlines.command);
        let mut span = self.client_span(Cow::Borrowed("AUTH"));
        span.set("azure_redis.reauth", true);
        span.set("azure_redis.connection", live.number as i64);
        let sent = tokio::time::timeout(budget, auth.query_async::<()>(&mut conn)).await;
        let outcome = match &sent {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) if connection_broken(e) => "connection_lost",
            Ok(Err(_)) => "refused",
            Err(_) => "timeout",
        };
        otel::count(otel::REAUTHS, || self.metric_attributes([("outcome", outcome.into())]));
        match sent {
            Ok(Ok(())) => {
                live.authed_generation.store(creds.generation(), Ordering::Release);
                *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.stats.reauths.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    node = %self.addr,
                    connection = live.number,
                    "re-authenticated the connection with the new token"
                );
                Ok(())
            }
            Ok(Err(e)) if connection_broken(&e) => {
                span.fail(outcome, &e.to_string());
                self.lost(live, &e.to_string());
                Err(Failure::Lost(CacheError::Unavailable(redact(&e.to_string()))))
            }
            Ok(Err(e)) => {
                span.fail(outcome, &classify(&e).to_string());
                let backoff = reauth_backoff(failures + 1);
                *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now() + backoff, failures + 1));
                tracing::warn!(error = %classify(&e), node = %self.addr, connection = live.number, retry_in_s = backoff.as_secs(),
                    "the cache refused the new token; going on with the current one");
                Ok(())
            }
            // AUTH was written: whether it took is unknown, and the
            // connection's own token is still valid. The next invocation
            // tries again.
            Err(_) => {
                span.fail(outcome, &format!("no answer within {budget:?}"));
                Err(Failure::TimedOut {
                    budget,
                    abandoned: false,
                })
            }
        }
    }
}
