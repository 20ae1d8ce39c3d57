//! What every node of one cache shares ([`Context`]: where the cache is,
//! how to authenticate, the ride-through window, maintenance state), and
//! the time one command may take ([`Call`]).

use super::error::CacheError;
use super::maintenance::{command_deadline, Maintenance};
use crate::secret::Secret;
use crate::settings::{Deadlines, RedisSettings};
use crate::token::{Token, TokenManager};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the connections authenticate.
#[derive(Debug)]
pub(crate) enum Auth {
    /// Entra ID tokens from a [`TokenManager`].
    Entra(Arc<TokenManager>),
    /// A fixed access key, with an optional ACL user.
    AccessKey {
        /// `user=` of the connection string.
        user: Option<String>,
        /// `password=` of the connection string.
        password: Secret,
    },
}

/// Where the cache is and how long calls may take.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The configured endpoint, and the name every node's certificate is
    /// checked against.
    pub host: String,
    /// The configured endpoint's port.
    pub port: u16,
    /// Whether connections use TLS (`Redis__ssl`).
    pub tls: bool,
    /// Extra PEM roots (`SSL_CERT_FILE`), trusted with the system bundle
    /// instead of the platform's roots (see [`crate::tls`]).
    pub extra_roots: Option<Vec<u8>>,
    /// Connect and command deadlines.
    pub deadlines: Deadlines,
}

impl Target {
    /// The target the settings describe.
    pub(crate) fn from_settings(redis: &RedisSettings, deadlines: Deadlines) -> Result<Self, String> {
        Ok(Self {
            host: redis.host.clone(),
            port: redis.port,
            tls: redis.tls,
            extra_roots: crate::tls::extra_roots(redis.extra_ca_file.as_deref())?,
            deadlines,
        })
    }
}

/// What every node of one cache shares.
#[derive(Debug)]
pub(super) struct Context {
    /// Where the cache is, and the deadlines: connect, command, and how
    /// long an invocation waits for a lost connection, or a cache that says
    /// "not now", to come back (`Redis__rideThroughSeconds`).
    pub(super) target: Target,
    pub(super) auth: Auth,
    /// Maintenance notifications: which are on, and what the cache said.
    pub(super) maintenance: Maintenance,
    /// Someone wants the cluster's topology read again (a failed connect,
    /// `MOVED`, a failover notification); the cluster's refresher waits on
    /// it. Nobody waits on a standalone cache.
    pub(super) refresh_wanted: Notify,
    /// Whether the cache turned out to be a cluster.
    pub(super) cluster: AtomicBool,
    /// The instant maintenance deadlines are counted from.
    pub(super) epoch: Instant,
}

/// The user and password for one AUTH, and which token they came from.
///
/// Borrowed or shared, never copied: every invocation asks for these, and
/// cloning a token (about a kilobyte) per call would put an allocation on
/// the hot path only to be thrown away when no AUTH is needed.
pub(super) enum Credentials<'a> {
    /// An Entra ID token.
    Token(Arc<Token>),
    /// The access key and its optional user.
    Key {
        user: Option<&'a str>,
        password: &'a Secret,
    },
}

impl Credentials<'_> {
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Self::Token(token) => Some(&token.user),
            Self::Key { user, .. } => *user,
        }
    }

    pub(super) fn password(&self) -> &str {
        match self {
            Self::Token(token) => token.secret.expose(),
            Self::Key { password, .. } => password.expose(),
        }
    }

    /// Which token (0 for a key): a connection authenticated with an older
    /// one sends `AUTH` again.
    pub(super) fn generation(&self) -> u64 {
        match self {
            Self::Token(token) => token.generation,
            Self::Key { .. } => 0,
        }
    }
}

impl Context {
    pub(super) fn new(target: Target, auth: Auth, maintenance: Maintenance) -> Self {
        Self {
            target,
            auth,
            maintenance,
            refresh_wanted: Notify::new(),
            cluster: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// The token manager, for Entra ID auth.
    pub(super) fn tokens(&self) -> Option<&Arc<TokenManager>> {
        match &self.auth {
            Auth::Entra(t) => Some(t),
            Auth::AccessKey { .. } => None,
        }
    }

    /// The credentials an invocation uses now: the current token (the
    /// cheap check, or starting the one refresh beside the invocation), or
    /// a wait for a token when none is valid, within the call's deadline.
    pub(super) async fn credentials(&self, call: &Call) -> Result<Credentials<'_>, CacheError> {
        match &self.auth {
            Auth::Entra(tokens) => {
                if let Some(token) = tokens.fresh() {
                    return Ok(Credentials::Token(token));
                }
                match tokio::time::timeout_at(call.deadline, tokens.current()).await {
                    Ok(token) => Ok(Credentials::Token(token?)),
                    Err(_) => Err(CacheError::Token(crate::token::TokenError::Timeout(
                        call.deadline.saturating_duration_since(call.started),
                    ))),
                }
            }
            Auth::AccessKey { user, password } => Ok(Credentials::Key {
                user: user.as_deref(),
                password,
            }),
        }
    }

    /// The credentials for a new connection: the newest token, even one a
    /// refresh is still handing to the live connections, so a connection
    /// made during that refresh is not left on the old token.
    pub(super) async fn connect_credentials(&self) -> Result<Credentials<'_>, CacheError> {
        match &self.auth {
            Auth::Entra(tokens) => {
                let current = tokens.current().await?;
                Ok(Credentials::Token(
                    tokens
                        .newest()
                        .filter(|n| n.generation > current.generation && n.is_valid())
                        .unwrap_or(current),
                ))
            }
            Auth::AccessKey { user, password } => Ok(Credentials::Key {
                user: user.as_deref(),
                password,
            }),
        }
    }

    /// Asks the cluster's refresher to read the topology again (soon,
    /// rate-limited); nothing happens on a standalone cache.
    pub(super) fn want_topology(&self) {
        if self.cluster.load(Ordering::Relaxed) {
            self.refresh_wanted.notify_one();
        }
    }

    /// The longest one call may take with `command` as its command
    /// deadline: one connect plus one command, or the ride-through window
    /// if that is longer.
    pub(super) fn longest_call(&self, command: Duration) -> Duration {
        let d = self.target.deadlines;
        (d.connect + command).max(d.ride_through)
    }

    /// Milliseconds since [`Context::epoch`], for instants kept in atomics.
    pub(super) fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }
}

/// The time one command (with its retries) may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    /// When it started.
    pub(super) started: Instant,
    /// Nothing of it runs past this.
    pub(super) deadline: Instant,
    /// It waits for the cache to come back (a lost connection, "not now")
    /// only until this.
    pub(super) wait_until: Instant,
}

impl Call {
    /// A command starting now: it may take one connect plus one command
    /// (the command's deadline relaxed when the cache announced
    /// maintenance), or the ride-through window if that is longer, and
    /// waits for the cache only within the window.
    pub(super) fn new(ctx: &Context) -> Self {
        let started = Instant::now();
        let deadlines = ctx.target.deadlines;
        let relaxed = ctx.maintenance.any_relaxed(ctx.millis(started));
        let command = command_deadline(deadlines.command, relaxed);
        Self {
            started,
            deadline: started + ctx.longest_call(command),
            wait_until: started + deadlines.ride_through,
        }
    }

    /// A command for the cache's own upkeep (reading the topology): one
    /// connect plus one command, without waiting for a node that is down.
    pub(super) fn no_wait(ctx: &Context) -> Self {
        let started = Instant::now();
        let deadlines = ctx.target.deadlines;
        Self {
            started,
            deadline: started + deadlines.connect + deadlines.command,
            wait_until: started,
        }
    }

    /// Time left before the deadline.
    pub(super) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long one step of the call (a command, a re-AUTH on its way) may
    /// take: its own deadline, but never past the call's.
    pub(super) fn budget(&self, step: Duration) -> Duration {
        step.min(self.left())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call may take connect + command, or its window if longer; it
    /// waits only within the window; a step late in the call (a re-AUTH
    /// after a wait) gets what is left of the call, not a whole command
    /// deadline; relaxed maintenance deadlines lengthen new calls.
    #[tokio::test(start_paused = true)]
    async fn calls_and_their_steps() {
        let mut ctx = Context::new(
            Target {
                host: "h".into(),
                port: 1,
                tls: false,
                extra_roots: None,
                deadlines: Deadlines {
                    token_fetch: Duration::from_secs(5),
                    connect: Duration::from_secs(2),
                    command: Duration::from_secs(3),
                    ride_through: Duration::from_secs(5),
                },
            },
            Auth::AccessKey {
                user: None,
                password: Secret::new("k"),
            },
            Maintenance::default(),
        );
        let call = Call::new(&ctx);
        assert_eq!(call.deadline - call.started, Duration::from_secs(5));
        assert_eq!(call.wait_until - call.started, Duration::from_secs(5));
        assert_eq!(call.budget(Duration::from_secs(3)), Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            call.budget(Duration::from_secs(3)),
            Duration::from_secs(1),
            "what is left"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(call.budget(Duration::from_secs(3)), Duration::ZERO);
        // A window longer than connect + command is the deadline; a shorter
        // one only limits the waiting.
        ctx.target.deadlines.ride_through = Duration::from_secs(1);
        let call = Call::new(&ctx);
        assert_eq!(call.deadline - call.started, Duration::from_secs(5));
        assert_eq!(call.wait_until - call.started, Duration::from_secs(1));
        let minute = ctx.millis(Instant::now() + Duration::from_secs(60));
        ctx.maintenance.relaxed_changed("h:1", minute);
        let relaxed = Call::new(&ctx);
        assert_eq!(relaxed.deadline - relaxed.started, Duration::from_secs(12));
        tokio::time::advance(Duration::from_secs(60)).await;
        let after = Call::new(&ctx);
        assert_eq!(
            after.deadline - after.started,
            Duration::from_secs(5),
            "the relaxed time is over"
        );
        let upkeep = Call::no_wait(&ctx);
        assert_eq!(upkeep.wait_until, upkeep.started);
    }
}
