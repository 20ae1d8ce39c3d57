//! The process's one Redis connection.
//!
//! [`Cache`] holds a single multiplexed connection that every invocation
//! shares. Before each command it asks the [`TokenManager`] for a token (the
//! cheap check, or the one refresh) and, when the token is newer than the one
//! the connection authenticated with, sends `AUTH <user> <token>` on the same
//! connection, once, before the command. A lost connection is dropped and made
//! again with the current token; the command is tried up to [`MAX_TRIES`]
//! times, as the quickstart does, all inside one deadline. Connecting after a
//! failure backs off, so a cache that is down or refusing the identity sees
//! a bounded trickle of attempts, not one per invocation.

use crate::secret::{redact, Secret};
use crate::settings::{AuthSettings, Deadlines, RedisSettings};
use crate::token::{TokenError, TokenManager};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates,
};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Tries per command when the connection is lost (as in the quickstart).
pub const MAX_TRIES: u32 = 3;

/// How the connection authenticates.
#[derive(Debug)]
pub enum Auth {
    /// Entra ID tokens from a [`TokenManager`].
    Entra(Arc<TokenManager>),
    /// A fixed access key.
    AccessKey {
        /// Optional ACL user name.
        user: Option<String>,
        /// The key.
        password: Secret,
    },
}

/// Where the cache is and how long calls may take.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS on or off.
    pub tls: bool,
    /// PEM roots to trust instead of the platform's (see [`crate::tls`]).
    pub root_bundle: Option<Vec<u8>>,
    /// Connect and command deadlines.
    pub deadlines: Deadlines,
}

impl Target {
    /// The target the settings describe.
    pub fn from_settings(redis: &RedisSettings, deadlines: Deadlines) -> Result<Self, String> {
        Ok(Self {
            host: redis.host.clone(),
            port: redis.port,
            tls: redis.tls,
            root_bundle: crate::tls::root_bundle(redis.extra_ca_file.as_deref())?,
            deadlines,
        })
    }
}

/// Why a Redis call failed, in words a caller may see (no secrets).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// No token: the identity is the problem.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// The cache refused the credentials (WRONGPASS, NOPERM, NOAUTH).
    #[error("the cache refused authentication: {0}")]
    Auth(String),
    /// The cache could not be reached or the connection broke.
    #[error("the cache is unavailable: {0}")]
    Unavailable(String),
    /// A call ran past its deadline.
    #[error("the cache did not answer within {0:?}")]
    Timeout(Duration),
    /// The cache answered with an error for this command.
    #[error("the cache rejected the command: {0}")]
    Command(String),
}

/// Counters and state shown by the Health function.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Connections made (the first one included).
    pub connects: AtomicU64,
    /// Connections dropped because they broke.
    pub drops: AtomicU64,
    /// `AUTH` sent on a live connection with a newer token.
    pub reauths: AtomicU64,
}

/// A snapshot for Health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStatus {
    /// Whether a connection is up now.
    pub connected: bool,
    /// Which connection of this process (1 = the first).
    pub connection_number: Option<u64>,
    /// Connections made.
    pub connects: u64,
    /// Connections dropped because they broke.
    pub drops: u64,
    /// Re-AUTHs on a live connection.
    pub reauths: u64,
}

struct Live {
    conn: MultiplexedConnection,
    number: u64,
    authed_generation: AtomicU64,
    timeouts_in_a_row: AtomicU32,
    /// After the cache refused a newer token: no new AUTH before this; the
    /// connection goes on with the token it has, while that is valid.
    reauth_after: std::sync::Mutex<Option<(Instant, u32)>>,
}

#[derive(Default)]
struct ConnectState {
    failures: u32,
    retry_after: Option<Instant>,
    last_error: Option<CacheError>,
}

/// The shared connection, made on first use.
pub struct Cache {
    target: Target,
    auth: Auth,
    live: ArcSwapOption<Live>,
    connect: tokio::sync::Mutex<ConnectState>,
    reauth: tokio::sync::Mutex<()>,
    /// Counters for Health and tests.
    pub stats: CacheStats,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .finish_non_exhaustive()
    }
}

/// The user and password for one AUTH, and which token they came from.
struct Credentials {
    user: Option<String>,
    password: Secret,
    generation: u64,
}

impl Cache {
    /// A cache handle; nothing is connected until the first call.
    pub fn new(target: Target, auth: Auth) -> Self {
        Self {
            target,
            auth,
            live: ArcSwapOption::empty(),
            connect: tokio::sync::Mutex::new(ConnectState::default()),
            reauth: tokio::sync::Mutex::new(()),
            stats: CacheStats::default(),
        }
    }

    /// Builds the auth the settings describe.
    pub fn auth_from_settings(settings: &AuthSettings, tokens: Option<Arc<TokenManager>>) -> Auth {
        match (settings, tokens) {
            (AuthSettings::AccessKey { user, password }, _) => Auth::AccessKey {
                user: user.clone(),
                password: password.clone(),
            },
            (AuthSettings::Entra(_), Some(tokens)) => Auth::Entra(tokens),
            (AuthSettings::Entra(_), None) => unreachable!("Entra ID settings always come with a token manager"),
        }
    }

    /// The token manager, for Entra ID auth.
    pub fn tokens(&self) -> Option<&Arc<TokenManager>> {
        match &self.auth {
            Auth::Entra(t) => Some(t),
            Auth::AccessKey { .. } => None,
        }
    }

    /// Connection state for Health.
    pub fn status(&self) -> CacheStatus {
        let live = self.live.load();
        CacheStatus {
            connected: live.is_some(),
            connection_number: live.as_ref().map(|l| l.number),
            connects: self.stats.connects.load(Ordering::Relaxed),
            drops: self.stats.drops.load(Ordering::Relaxed),
            reauths: self.stats.reauths.load(Ordering::Relaxed),
        }
    }

    /// Gets a token and connects, so the first invocation finds both ready.
    pub async fn warm_up(&self) -> Result<(), CacheError> {
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// Runs one command on the shared connection, refreshing the token,
    /// re-authenticating and reconnecting as needed, within the deadline.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let deadline = Instant::now() + self.target.deadlines.connect + self.target.deadlines.command;
        let mut tries = 0;
        loop {
            tries += 1;
            let err = match self.try_once(cmd, deadline).await {
                Ok(v) => return Ok(v),
                Err(e @ CacheError::Unavailable(_)) => e,
                Err(e) => return Err(e),
            };
            let pause = Duration::from_millis(50 << tries);
            if tries >= MAX_TRIES || Instant::now() + pause >= deadline {
                return Err(err);
            }
            tracing::debug!(tries, error = %err, "retrying after a lost connection");
            tokio::time::sleep(pause).await;
        }
    }

    async fn try_once<T: FromRedisValue>(&self, cmd: &redis::Cmd, deadline: Instant) -> Result<T, CacheError> {
        let creds = self.credentials().await?;
        let live = self.live_connection(&creds, deadline).await?;
        self.ensure_authenticated(&live, &creds).await?;
        let mut conn = live.conn.clone();
        let budget = self
            .target
            .deadlines
            .command
            .min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(budget, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                live.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) if connection_broken(&e) => {
                self.discard(&live, &e.to_string());
                Err(CacheError::Unavailable(redact(&e.to_string())))
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => {
                // One slow command is not a dead connection; three in a row is
                // what a half-open socket looks like.
                if live.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= 3 {
                    self.discard(&live, "three commands in a row timed out");
                }
                Err(CacheError::Timeout(budget))
            }
        }
    }

    async fn credentials(&self) -> Result<Credentials, CacheError> {
        match &self.auth {
            Auth::Entra(tokens) => {
                let token = tokens.current().await?;
                Ok(Credentials {
                    user: Some(token.user.clone()),
                    password: token.secret.clone(),
                    generation: token.generation,
                })
            }
            Auth::AccessKey { user, password } => Ok(Credentials {
                user: user.clone(),
                password: password.clone(),
                generation: 0,
            }),
        }
    }

    async fn live_connection(&self, creds: &Credentials, deadline: Instant) -> Result<Arc<Live>, CacheError> {
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        let mut state = self.connect.lock().await;
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        let now = Instant::now();
        if let (Some(at), Some(err)) = (state.retry_after, &state.last_error) {
            if now < at {
                return Err(err.clone());
            }
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
                *state = ConnectState::default();
                let live = Arc::new(Live {
                    conn,
                    number,
                    authed_generation: AtomicU64::new(creds.generation),
                    timeouts_in_a_row: AtomicU32::new(0),
                    reauth_after: std::sync::Mutex::new(None),
                });
                self.live.store(Some(live.clone()));
                tracing::info!(connection = number, host = %self.target.host, port = self.target.port, "connected to the cache");
                Ok(live)
            }
            Err(err) => {
                state.failures += 1;
                // Refused credentials back off longer: retrying cannot help
                // until someone fixes the access policy.
                let cap = if matches!(err, CacheError::Auth(_)) {
                    10_000
                } else {
                    2_000
                };
                let backoff = Duration::from_millis((100u64 << state.failures.min(10)).min(cap));
                state.retry_after = Some(Instant::now() + backoff);
                state.last_error = Some(err.clone());
                tracing::warn!(error = %err, failures = state.failures, retry_in_ms = backoff.as_millis() as u64, "could not connect to the cache");
                Err(err)
            }
        }
    }

    async fn open(&self, creds: &Credentials, budget: Duration) -> Result<MultiplexedConnection, CacheError> {
        let addr = if self.target.tls {
            ConnectionAddr::TcpTls {
                host: self.target.host.clone(),
                port: self.target.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.target.host.clone(), self.target.port)
        };
        let mut redis_info = RedisConnectionInfo::default().set_password(creds.password.expose());
        if let Some(user) = &creds.user {
            redis_info = redis_info.set_username(user);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| classify(&e))?
            .set_redis_settings(redis_info);
        let client = match &self.target.root_bundle {
            Some(pem) if self.target.tls => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => Client::open(info),
        }
        .map_err(|e| classify(&e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(budget))
            .set_response_timeout(Some(self.target.deadlines.command));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| match classify(&e) {
                CacheError::Command(msg) => CacheError::Unavailable(msg),
                other => other,
            })
    }

    /// Sends `AUTH` with the newer token on the live connection, once.
    ///
    /// If the cache refuses the newer token, the connection keeps the
    /// identity it has (its token is still valid, or the cache would have
    /// closed it) and the AUTH is tried again after a backoff, not on every
    /// invocation.
    async fn ensure_authenticated(&self, live: &Arc<Live>, creds: &Credentials) -> Result<(), CacheError> {
        if live.authed_generation.load(Ordering::Acquire) >= creds.generation {
            return Ok(());
        }
        let _one_at_a_time = self.reauth.lock().await;
        if live.authed_generation.load(Ordering::Acquire) >= creds.generation {
            return Ok(());
        }
        let failures = match *live.reauth_after.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, _)) if Instant::now() < at => return Ok(()),
            Some((_, n)) => n,
            None => 0,
        };
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &creds.user {
            auth.arg(user);
        }
        auth.arg(creds.password.expose());
        let mut conn = live.conn.clone();
        match tokio::time::timeout(self.target.deadlines.command, auth.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                live.authed_generation.store(creds.generation, Ordering::Release);
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
                let backoff = Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30));
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
    fn discard(&self, live: &Arc<Live>, why: &str) {
        let prev = self.live.compare_and_swap(&Some(live.clone()), None);
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, live)) {
            self.stats.drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(connection = live.number, reason = %redact(why), "dropped the cache connection; the next call makes a new one");
        }
    }
}

/// Whether an error means the connection is gone or unusable.
fn connection_broken(e: &redis::RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error() || e.code() == Some("NOAUTH")
}

/// Maps a redis error to what a caller is told (redacted).
pub fn classify(e: &redis::RedisError) -> CacheError {
    let msg = redact(&e.to_string());
    let auth_refused = matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm);
    if auth_refused {
        CacheError::Auth(msg)
    } else if e.is_timeout() {
        CacheError::Timeout(Duration::ZERO)
    } else if e.is_io_error() || e.is_connection_dropped() || e.kind() == redis::ErrorKind::InvalidClientConfig {
        CacheError::Unavailable(msg)
    } else {
        CacheError::Command(msg)
    }
}
