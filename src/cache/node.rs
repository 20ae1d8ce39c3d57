//! One endpoint's connection: made on first use, shared by every invocation
//! that goes to that endpoint, re-authenticated with each newer token, and
//! dropped when it breaks.
//!
//! A standalone cache is one [`Node`] (the configured endpoint); a cluster is
//! one per master. Connecting after a failure backs off per node, so a node
//! that is down sees a trickle of attempts, not one per invocation.

use super::backoff::{reauth_backoff, ConnectGate};
use super::connect::{open_node_connection, Connection};
use super::error::{classify, connection_broken, CacheError};
use super::{CacheStats, CacheStatus, Credentials, Target};
use crate::secret::redact;
use redis::aio::MultiplexedConnection;
use redis::FromRedisValue;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// How one command on a node went wrong.
#[derive(Debug)]
pub(super) enum Failure {
    /// What the caller is told (a lost connection is `Unavailable`).
    Cache(CacheError),
    /// `MOVED slot addr`: the slot lives on another master now.
    Moved {
        /// The slot.
        slot: u16,
        /// The master that owns it, `host:port`.
        addr: String,
    },
    /// `ASK slot addr`: the slot is migrating; ask that node, once, with `ASKING`.
    Ask {
        /// The node importing the slot, `host:port`.
        addr: String,
    },
    /// The cluster is changing under us (`CLUSTERDOWN`, `TRYAGAIN`,
    /// `READONLY`, `LOADING`, `MASTERDOWN`): read the topology again and retry.
    Reshaping(String),
}

impl From<CacheError> for Failure {
    fn from(e: CacheError) -> Self {
        Self::Cache(e)
    }
}

impl Failure {
    /// What a caller that follows no redirects is told.
    pub(super) fn into_cache_error(self) -> CacheError {
        match self {
            Self::Cache(e) => e,
            Self::Moved { slot, addr } => CacheError::Command(format!("MOVED {slot} {addr}")),
            Self::Ask { addr } => CacheError::Command(format!("ASK {addr}")),
            Self::Reshaping(msg) => CacheError::Command(msg),
        }
    }
}

/// The error codes that mean the cluster is failing over, resharding or
/// loading: worth a fresh topology and another try.
const RESHAPING: &[&str] = &["CLUSTERDOWN", "TRYAGAIN", "READONLY", "LOADING", "MASTERDOWN"];

fn failure_of(e: &redis::RedisError) -> Failure {
    if let Some((addr, slot)) = e.redirect_node() {
        let addr = addr.to_owned();
        return match e.kind() {
            redis::ErrorKind::Server(redis::ServerErrorKind::Ask) => Failure::Ask { addr },
            _ => Failure::Moved { slot, addr },
        };
    }
    if e.code().is_some_and(|c| RESHAPING.contains(&c)) {
        return Failure::Reshaping(redact(&e.to_string()));
    }
    Failure::Cache(classify(e))
}

pub(super) struct Live {
    conn: MultiplexedConnection,
    /// Which connection of this node (1 = the first).
    pub(super) number: u64,
    authed_generation: AtomicU64,
    timeouts_in_a_row: AtomicU32,
    /// After the cache refused a newer token: no new AUTH before this; the
    /// connection goes on with the token it has, while that is valid.
    reauth_after: std::sync::Mutex<Option<(Instant, u32)>>,
    /// Ends the connection's I/O task with the connection.
    _driver: Option<AbortOnDrop>,
}

/// Aborts a spawned task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One endpoint and its shared connection.
pub(super) struct Node {
    /// Where to connect (an IP address for a cluster node, as announced).
    pub(super) host: String,
    pub(super) port: u16,
    /// `host:port`, as the cluster names the node.
    pub(super) addr: String,
    live: arc_swap::ArcSwapOption<Live>,
    connect: tokio::sync::Mutex<ConnectGate>,
    reauth: tokio::sync::Mutex<()>,
    /// Counters for Health and tests.
    pub(super) stats: CacheStats,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Node {
    pub(super) fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
            addr: format!("{host}:{port}"),
            live: arc_swap::ArcSwapOption::empty(),
            connect: tokio::sync::Mutex::new(ConnectGate::default()),
            reauth: tokio::sync::Mutex::new(()),
            stats: CacheStats::default(),
        }
    }

    /// Connection state for Health.
    pub(super) fn status(&self) -> CacheStatus {
        let live = self.live.load();
        CacheStatus {
            connected: live.is_some(),
            connection_number: live.as_ref().map(|l| l.number),
            connects: self.stats.connects.load(Ordering::Relaxed),
            drops: self.stats.drops.load(Ordering::Relaxed),
            reauths: self.stats.reauths.load(Ordering::Relaxed),
        }
    }

    /// Whether a connection is up now.
    pub(super) fn is_connected(&self) -> bool {
        self.live.load().is_some()
    }

    /// Whether connecting is held back by a backoff beyond `at`: then a
    /// retry inside this invocation cannot succeed, and failing fast is better.
    pub(super) fn gated_past(&self, at: Instant) -> bool {
        self.live.load().is_none() && self.connect.try_lock().is_ok_and(|gate| gate.holds_past(at))
    }

    /// Runs `cmd` once on this node's connection (made if needed), preceded
    /// by `ASKING` in the same write when `asking`, within `deadline`.
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        target: &Target,
        creds: &Credentials<'_>,
        cmd: &redis::Cmd,
        deadline: Instant,
        asking: bool,
    ) -> Result<T, Failure> {
        let live = self.live_connection(target, creds, deadline).await?;
        self.ensure_authenticated(target, &live, creds).await?;
        let mut conn = live.conn.clone();
        let budget = target
            .deadlines
            .command
            .min(deadline.saturating_duration_since(Instant::now()));
        let outcome = if asking {
            // One write: on a shared connection, another invocation's
            // command must not come between ASKING and this one.
            let pipe = redis::pipe().cmd("ASKING").ignore().add_command(cmd.clone()).to_owned();
            tokio::time::timeout(budget, async {
                pipe.query_async::<(T,)>(&mut conn).await.map(|(v,)| v)
            })
            .await
        } else {
            tokio::time::timeout(budget, cmd.query_async::<T>(&mut conn)).await
        };
        // Ours or the client's own response timeout: the command ran past
        // its deadline. That is a 504, not a broken connection to retry on.
        let timed_out = match &outcome {
            Err(_) => true,
            Ok(Err(e)) => e.is_timeout(),
            Ok(Ok(_)) => false,
        };
        if timed_out {
            // One slow command is not a dead connection; three in a row is
            // what a half-open socket looks like.
            if live.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= 3 {
                self.discard(&live, "three commands in a row timed out");
            }
            return Err(CacheError::Timeout(budget).into());
        }
        match outcome {
            Ok(Ok(v)) => {
                live.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) if connection_broken(&e) => {
                self.discard(&live, &e.to_string());
                Err(CacheError::Unavailable(redact(&e.to_string())).into())
            }
            Ok(Err(e)) => Err(failure_of(&e)),
            Err(_) => Err(CacheError::Timeout(budget).into()),
        }
    }

    async fn live_connection(
        &self,
        target: &Target,
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
        let budget = target.deadlines.connect.min(deadline.saturating_duration_since(now));
        let opened = open_node_connection(target, &self.host, self.port, creds.user(), creds.password(), budget);
        let result = match tokio::time::timeout(budget, opened).await {
            Ok(r) => r,
            Err(_) => Err(CacheError::Unavailable(format!(
                "connecting to {} took longer than {budget:?}",
                self.addr
            ))),
        };
        match result {
            Ok(Connection { conn, driver }) => {
                let number = self.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
                state.succeeded();
                let live = Arc::new(Live {
                    conn,
                    number,
                    authed_generation: AtomicU64::new(creds.generation()),
                    timeouts_in_a_row: AtomicU32::new(0),
                    reauth_after: std::sync::Mutex::new(None),
                    _driver: driver,
                });
                self.live.store(Some(live.clone()));
                tracing::info!(connection = number, node = %self.addr, "connected to the cache");
                Ok(live)
            }
            Err(err) => {
                let backoff = state.failed(&err, Instant::now());
                tracing::warn!(error = %err, node = %self.addr, failures = state.failures, retry_in_ms = backoff.as_millis() as u64, "could not connect to the cache");
                Err(err)
            }
        }
    }

    /// On an invocation's path: the connection authenticated with an older
    /// token than the one the invocation holds (it was made while a refresh
    /// was re-AUTHing, or the cache refused the newer token earlier).
    ///
    /// When a re-AUTH is already under way (the refresh task's, most often),
    /// the invocation does not wait for it: the connection's own token is
    /// still valid, or the cache would have closed it.
    async fn ensure_authenticated(
        &self,
        target: &Target,
        live: &Arc<Live>,
        creds: &Credentials<'_>,
    ) -> Result<(), CacheError> {
        if live.authed_generation.load(Ordering::Acquire) >= creds.generation() {
            return Ok(());
        }
        let Ok(_one_at_a_time) = self.reauth.try_lock() else {
            return Ok(());
        };
        self.send_auth(target, live, creds, true).await
    }

    /// In the refresh task, before invocations get the new token: re-AUTHs
    /// the live connection with it, so the connection never outlives its
    /// token. A node without a connection has nothing to do: its next
    /// connection is made with the current token.
    pub(super) async fn reauth_live(&self, target: &Target, creds: &Credentials<'_>) {
        let Some(live) = self.live.load_full() else {
            return;
        };
        let _one_at_a_time = self.reauth.lock().await;
        if let Err(err) = self.send_auth(target, &live, creds, false).await {
            tracing::warn!(error = %err, node = %self.addr, connection = live.number, "could not re-authenticate the connection with the new token");
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
        target: &Target,
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
        match tokio::time::timeout(target.deadlines.command, auth.query_async::<()>(&mut conn)).await {
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
                self.discard(live, &e.to_string());
                Err(CacheError::Unavailable(redact(&e.to_string())))
            }
            Ok(Err(e)) => {
                let backoff = reauth_backoff(failures + 1);
                *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now() + backoff, failures + 1));
                tracing::warn!(error = %classify(&e), node = %self.addr, connection = live.number, retry_in_s = backoff.as_secs(),
                    "the cache refused the new token; going on with the current one");
                Ok(())
            }
            Err(_) => Err(CacheError::Timeout(target.deadlines.command)),
        }
    }

    /// Drops `live` if it is still the current connection.
    fn discard(&self, live: &Arc<Live>, why: &str) {
        let prev = self.live.compare_and_swap(&Some(live.clone()), None);
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, live)) {
            self.stats.drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %self.addr, connection = live.number, reason = %redact(why), "dropped the cache connection; the next call makes a new one");
        }
    }

    /// Takes this node's connection away (the configured endpoint's, found
    /// to be a master's), leaving it unconnected.
    pub(super) fn take_live(&self) -> Option<Arc<Live>> {
        self.live.swap(None)
    }

    /// Uses `live`, made through another [`Node`] to this same address, as
    /// this node's connection, if it has none.
    pub(super) fn adopt(&self, live: Arc<Live>) -> bool {
        let prev = self.live.compare_and_swap(&None::<Arc<Live>>, Some(live));
        let adopted = prev.is_none();
        if adopted {
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
        }
        adopted
    }

    /// Closes the connection, if any, when the node leaves the topology (a
    /// master demoted or gone): in-flight commands finish on their clone.
    pub(super) fn close(&self, why: &str) {
        if let Some(live) = self.live.swap(None) {
            tracing::info!(node = %self.addr, connection = live.number, reason = why, "closed the node's connection");
        }
    }
}
