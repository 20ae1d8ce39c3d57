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
//!
//! Connecting and re-authenticating are in `connect.rs`; errors in `error.rs`.

mod backoff;
mod connect;
mod error;

pub(crate) use connect::open_connection;
use error::connection_broken;
pub use error::{classify, CacheError};

use crate::secret::{redact, Secret};
use crate::settings::{Deadlines, RedisSettings};
use crate::token::{Token, TokenListener, TokenManager};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::FromRedisValue;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
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
    /// Extra PEM roots (`SSL_CERT_FILE`), trusted with the system bundle
    /// instead of the platform's roots (see [`crate::tls`]).
    pub extra_roots: Option<Vec<u8>>,
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
            extra_roots: crate::tls::extra_roots(redis.extra_ca_file.as_deref())?,
            deadlines,
        })
    }
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

/// The shared connection, made on first use.
pub struct Cache {
    target: Target,
    auth: Auth,
    live: ArcSwapOption<Live>,
    connect: tokio::sync::Mutex<backoff::ConnectGate>,
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
///
/// Borrowed or shared, never copied: every invocation asks for these, and
/// cloning a token (about a kilobyte) per call would put an allocation on
/// the hot path only to be thrown away when no AUTH is needed.
enum Credentials<'a> {
    /// The current Entra ID token.
    Token(Arc<Token>),
    /// The access key and its optional user.
    Key {
        user: Option<&'a str>,
        password: &'a Secret,
    },
}

impl Credentials<'_> {
    fn user(&self) -> Option<&str> {
        match self {
            Self::Token(token) => Some(&token.user),
            Self::Key { user, .. } => *user,
        }
    }

    fn password(&self) -> &str {
        match self {
            Self::Token(token) => token.secret.expose(),
            Self::Key { password, .. } => password.expose(),
        }
    }

    fn generation(&self) -> u64 {
        match self {
            Self::Token(token) => token.generation,
            Self::Key { .. } => 0,
        }
    }
}

impl Cache {
    /// A cache handle; nothing is connected until the first call. With Entra
    /// ID, the handle hears of every new token from the token manager and
    /// re-AUTHs its live connection with it (see [`TokenListener`]).
    pub fn new(target: Target, auth: Auth) -> Arc<Self> {
        let cache = Arc::new(Self {
            target,
            auth,
            live: ArcSwapOption::empty(),
            connect: tokio::sync::Mutex::new(backoff::ConnectGate::default()),
            reauth: tokio::sync::Mutex::new(()),
            stats: CacheStats::default(),
        });
        if let Auth::Entra(tokens) = &cache.auth {
            let listener: Arc<dyn TokenListener> = cache.clone();
            tokens.subscribe(Arc::downgrade(&listener));
        }
        cache
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
            let pause = backoff::retry_pause(tries);
            if tries >= MAX_TRIES || Instant::now() + pause >= deadline || self.gated_past(Instant::now() + pause) {
                return Err(err);
            }
            tracing::debug!(tries, error = %err, "retrying after a lost connection");
            tokio::time::sleep(pause).await;
        }
    }

    /// Whether connecting is held back by a backoff beyond `at`: then a
    /// retry inside this invocation cannot succeed, and failing fast is better.
    fn gated_past(&self, at: Instant) -> bool {
        self.live.load().is_none() && self.connect.try_lock().is_ok_and(|gate| gate.holds_past(at))
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
        let outcome = tokio::time::timeout(budget, cmd.query_async::<T>(&mut conn)).await;
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
            return Err(CacheError::Timeout(budget));
        }
        match outcome {
            Ok(Ok(v)) => {
                live.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) if connection_broken(&e) => {
                self.discard(&live, &e.to_string());
                Err(CacheError::Unavailable(redact(&e.to_string())))
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(CacheError::Timeout(budget)),
        }
    }

    async fn credentials(&self) -> Result<Credentials<'_>, CacheError> {
        match &self.auth {
            Auth::Entra(tokens) => Ok(Credentials::Token(tokens.current().await?)),
            Auth::AccessKey { user, password } => Ok(Credentials::Key {
                user: user.as_deref(),
                password,
            }),
        }
    }
}
