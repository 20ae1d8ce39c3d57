//! The process's Redis connections.
//!
//! [`Cache`] holds one multiplexed connection that every invocation shares,
//! or on a cluster one per master ([`node`], [`cluster`]). Before each
//! command it asks the [`TokenManager`] for a token (the cheap check, or the
//! one refresh); a connection authenticated with an older token sends
//! `AUTH <user> <token>` again, once, before the command. A lost connection is
//! dropped and made again with the current token; the command is tried up to
//! [`MAX_TRIES`] times, as the quickstart does, all inside one deadline.
//! Connecting after a failure backs off, so a cache that is down or refusing
//! the identity sees a bounded trickle of attempts, not one per invocation.
//!
//! Whether the cache is a cluster is decided once, by the first connection
//! (`Redis__clusterMode=auto`: `INFO cluster` says `cluster_enabled:1`), and
//! kept in a once-cell: a standalone cache (and Azure Managed Redis with the
//! Enterprise policy, which is one endpoint) keeps the one-connection path.
//!
//! New tokens reach every connection before invocations use them: the
//! token manager's refresh task calls [`TokenListener::token_ready`], and the
//! cache re-AUTHs every live connection, each master's included, at once.
//! One token fetch serves the whole process.

mod backoff;
mod cluster;
mod connect;
mod error;
mod node;
mod slot;

pub(crate) use connect::open_connection;
pub(crate) use error::{classify, CacheError};

use crate::secret::Secret;
use crate::settings::{ClusterMode, Deadlines, RedisSettings};
use crate::token::{Token, TokenListener, TokenManager};
use backoff::{after_failure, AfterFailure};
use cluster::Cluster;
use node::{Failure, Node};
use redis::FromRedisValue;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use tokio::time::Instant;

/// Tries per command when the connection is lost (as in the quickstart).
pub(crate) const MAX_TRIES: u32 = 3;

/// How the connection authenticates.
#[derive(Debug)]
pub(crate) enum Auth {
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
pub(crate) struct Target {
    /// Host name: the configured endpoint, and the name every node's
    /// certificate is checked against.
    pub host: String,
    pub port: u16,
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

/// Counters and state shown by the Health function.
#[derive(Debug, Default)]
pub(crate) struct CacheStats {
    /// Connections made (the first one included).
    pub connects: AtomicU64,
    /// Connections dropped because they broke.
    pub drops: AtomicU64,
    /// `AUTH` sent on a live connection with a newer token.
    pub reauths: AtomicU64,
}

/// A snapshot for Health.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CacheStatus {
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

/// Whether the cache is one endpoint or a cluster, once known.
#[derive(Debug)]
enum Mode {
    /// One endpoint: the configured one.
    Standalone,
    /// A cluster: one connection per master.
    Cluster(Cluster),
}

/// One master of a cluster, for the functions that visit every master.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ShardInfo {
    /// The master's address as the cluster announces it (`ip:port`).
    pub node: String,
    /// The slot ranges it owns (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// Its connection.
    #[serde(flatten)]
    pub status: CacheStatus,
    /// A hash tag (`{n}`) whose keys land on this master.
    #[serde(skip)]
    pub tag: String,
}

/// The shared connection(s), made on first use.
pub struct Cache {
    target: Target,
    auth: Auth,
    setting: ClusterMode,
    /// The configured endpoint: the one connection of a standalone cache;
    /// on a cluster, where the topology is first read.
    seed: Arc<Node>,
    mode: tokio::sync::OnceCell<Mode>,
    /// This cache, for background topology reads.
    me: Weak<Cache>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("mode", &self.mode.get())
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

/// Redirects one command may follow (`MOVED`, `ASK`) before giving up.
const MAX_REDIRECTS: u32 = 5;

impl Cache {
    /// A cache handle; nothing is connected until the first call. With Entra
    /// ID, the handle hears of every new token from the token manager and
    /// re-AUTHs its live connections with it (see [`TokenListener`]).
    pub(crate) fn with_mode(target: Target, auth: Auth, setting: ClusterMode) -> Arc<Self> {
        let mode = match setting {
            ClusterMode::Standalone => tokio::sync::OnceCell::new_with(Some(Mode::Standalone)),
            ClusterMode::Auto | ClusterMode::Cluster => tokio::sync::OnceCell::new(),
        };
        let cache = Arc::new_cyclic(|me| Self {
            seed: Arc::new(Node::new(&target.host, target.port)),
            target,
            auth,
            setting,
            mode,
            me: me.clone(),
        });
        if let Auth::Entra(tokens) = &cache.auth {
            let listener: Arc<dyn TokenListener> = cache.clone();
            tokens.subscribe(Arc::downgrade(&listener));
        }
        cache
    }

    /// The token manager, for Entra ID auth.
    pub(crate) fn tokens(&self) -> Option<&Arc<TokenManager>> {
        match &self.auth {
            Auth::Entra(t) => Some(t),
            Auth::AccessKey { .. } => None,
        }
    }

    /// `standalone` or `cluster`, once the first connection has told;
    /// `unknown` before.
    pub(crate) fn mode_name(&self) -> &'static str {
        match self.mode.get() {
            Some(Mode::Standalone) => "standalone",
            Some(Mode::Cluster(_)) => "cluster",
            None => "unknown",
        }
    }

    /// Connection state for Health: the one connection, or on a cluster
    /// the masters' connections together (connected when all are).
    pub(crate) fn status(&self) -> CacheStatus {
        match self.mode.get() {
            Some(Mode::Cluster(cluster)) => {
                let topology = cluster.topology.load();
                let all: Vec<CacheStatus> = topology.shards.iter().map(|s| s.node.status()).collect();
                CacheStatus {
                    connected: !all.is_empty() && all.iter().all(|s| s.connected),
                    connection_number: None,
                    connects: all.iter().map(|s| s.connects).sum(),
                    drops: all.iter().map(|s| s.drops).sum(),
                    reauths: all.iter().map(|s| s.reauths).sum(),
                }
            }
            _ => self.seed.status(),
        }
    }

    /// The masters of a cluster (`None` for a standalone cache), finding out
    /// which it is first if no call has yet.
    pub(crate) async fn shards(&self) -> Result<Option<Vec<ShardInfo>>, CacheError> {
        let deadline = self.deadline();
        let Mode::Cluster(cluster) = self.mode(deadline).await? else {
            return Ok(None);
        };
        let topology = cluster.topology.load();
        Ok(Some(
            topology
                .shards
                .iter()
                .filter(|s| !s.slots.is_empty())
                .map(|s| ShardInfo {
                    node: s.node.addr.clone(),
                    slots: s.slots.clone(),
                    status: s.node.status(),
                    tag: slot::tag_in(&s.slots).unwrap_or_default(),
                })
                .collect(),
        ))
    }

    /// Gets a token and connects, so the first invocation finds both ready,
    /// and finds out whether the cache is a cluster (logged).
    pub(crate) async fn warm_up(&self) -> Result<(), CacheError> {
        self.query::<String>(&redis::cmd("PING")).await?;
        if let Some(shards) = self.shards().await? {
            for shard in shards {
                self.query_node::<String>(&shard.node, &redis::cmd("PING")).await?;
            }
        }
        Ok(())
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.target.deadlines.connect + self.target.deadlines.command
    }

    /// Runs one command, refreshing the token, re-authenticating and
    /// reconnecting as needed, within the deadline. On a cluster it goes to
    /// the master that owns its key (any master for a keyless command),
    /// following `MOVED` and `ASK`.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let deadline = self.deadline();
        // Known after the first call: read without awaiting the cell.
        let mode = match self.mode.get() {
            Some(mode) => mode,
            None => self.mode(deadline).await?,
        };
        match mode {
            Mode::Standalone => self.query_standalone(cmd, deadline).await,
            Mode::Cluster(cluster) => self.query_cluster(cluster, cmd, None, deadline).await,
        }
    }

    /// Runs one command on the master at `node` (as [`ShardInfo::node`]
    /// names it), with the same tries and deadline as [`Cache::query`] but
    /// no redirects: for commands about that master (PING, CLIENT LIST).
    pub(crate) async fn query_node<T: FromRedisValue>(&self, node: &str, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let deadline = self.deadline();
        match self.mode(deadline).await? {
            Mode::Standalone => self.query_standalone(cmd, deadline).await,
            Mode::Cluster(cluster) => self.query_cluster(cluster, cmd, Some(node), deadline).await,
        }
    }

    /// Whether the cache is a cluster, asked once.
    async fn mode(&self, deadline: Instant) -> Result<&Mode, CacheError> {
        self.mode.get_or_try_init(|| self.detect(deadline)).await
    }

    /// Asks the configured endpoint whether it is a cluster (unless the
    /// setting says), and if so reads the topology.
    async fn detect(&self, deadline: Instant) -> Result<Mode, CacheError> {
        let cluster = match self.setting {
            ClusterMode::Standalone => false,
            ClusterMode::Cluster => true,
            ClusterMode::Auto => match self
                .query_standalone::<String>(redis::cmd("INFO").arg("cluster"), deadline)
                .await
            {
                Ok(info) => info.lines().any(|l| l.trim() == "cluster_enabled:1"),
                // INFO may be outside the identity's access policy; a
                // cluster always answers CLUSTER SLOTS, anything else refuses it.
                Err(CacheError::Command(_) | CacheError::Auth(_)) => self
                    .query_standalone::<redis::Value>(redis::cmd("CLUSTER").arg("SLOTS"), deadline)
                    .await
                    .is_ok(),
                Err(e) => return Err(e),
            },
        };
        if !cluster {
            tracing::info!(mode = "standalone", "the cache is one endpoint: standalone mode");
            return Ok(Mode::Standalone);
        }
        let creds = self.credentials().await?;
        let cluster = Cluster::discover(&self.target, &creds, &self.seed, deadline).await?;
        tracing::info!(
            mode = "cluster",
            masters = cluster.topology.load().shards.len(),
            "the cache is a cluster: cluster mode, one connection per master"
        );
        Ok(Mode::Cluster(cluster))
    }

    async fn query_standalone<T: FromRedisValue>(&self, cmd: &redis::Cmd, deadline: Instant) -> Result<T, CacheError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let creds = self.credentials().await?;
            let err = match self.seed.run(&self.target, &creds, cmd, deadline, false).await {
                Ok(v) => return Ok(v),
                Err(Failure::Cache(e @ CacheError::Unavailable(_))) => e,
                Err(other) => return Err(other.into_cache_error()),
            };
            match after_failure(tries, MAX_TRIES, Instant::now(), deadline, |at| {
                self.seed.gated_past(at)
            }) {
                AfterFailure::GiveUp => return Err(err),
                AfterFailure::Retry(pause) => {
                    tracing::debug!(tries, error = %err, "retrying after a lost connection");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One command on a cluster: to the owner of its key's slot, to `on`
    /// when given, else to any master. `MOVED` and `ASK` are followed at
    /// once (at most [`MAX_REDIRECTS`]); a lost node or a cluster in the
    /// middle of a failover reads the topology again and counts as a try.
    async fn query_cluster<T: FromRedisValue>(
        &self,
        cluster: &Cluster,
        cmd: &redis::Cmd,
        on: Option<&str>,
        deadline: Instant,
    ) -> Result<T, CacheError> {
        let slot = if on.is_some() { None } else { slot::command_slot(cmd) };
        let mut tries = 0;
        let mut redirects = 0;
        let mut ask: Option<Arc<Node>> = None;
        loop {
            let asking = ask.is_some();
            let node = match ask.take() {
                Some(node) => Some(node),
                None => {
                    let topology = cluster.topology.load();
                    match (on, slot) {
                        (Some(addr), _) => topology
                            .shards
                            .iter()
                            .map(|s| &s.node)
                            .find(|n| n.addr == addr)
                            .cloned(),
                        (None, Some(slot)) => topology.master_for(slot).cloned(),
                        (None, None) => topology.any().cloned(),
                    }
                }
            };
            let creds = self.credentials().await?;
            let (err, node) = match node {
                None => {
                    let what = match (on, slot) {
                        (Some(addr), _) => format!("{addr} is not a master of the cluster"),
                        (None, Some(slot)) => format!("no master serves slot {slot}"),
                        (None, None) => "the cluster has no master".to_owned(),
                    };
                    (CacheError::Unavailable(what), None)
                }
                Some(node) => match node.run(&self.target, &creds, cmd, deadline, asking).await {
                    Ok(v) => return Ok(v),
                    Err(Failure::Moved { slot, addr }) if on.is_none() => {
                        redirects += 1;
                        if redirects > MAX_REDIRECTS {
                            return Err(CacheError::Unavailable(format!(
                                "slot {slot} keeps moving (last to {addr})"
                            )));
                        }
                        tracing::debug!(slot, to = %addr, "MOVED");
                        cluster.moved(slot, &addr);
                        self.refresh_topology_soon();
                        continue;
                    }
                    Err(Failure::Ask { addr }) if on.is_none() => {
                        redirects += 1;
                        if redirects > MAX_REDIRECTS {
                            return Err(CacheError::Unavailable(format!(
                                "a slot keeps moving (last ASK to {addr})"
                            )));
                        }
                        ask = Some(cluster.node_for_ask(&addr));
                        continue;
                    }
                    Err(Failure::Reshaping(msg)) => (CacheError::Unavailable(msg), Some(node)),
                    Err(Failure::Cache(e @ CacheError::Unavailable(_))) => (e, Some(node)),
                    Err(other) => return Err(other.into_cache_error()),
                },
            };
            tries += 1;
            self.refresh_topology_soon();
            let gated = |at| node.as_ref().is_some_and(|n| n.gated_past(at));
            match after_failure(tries, MAX_TRIES, Instant::now(), deadline, gated) {
                AfterFailure::GiveUp => return Err(err),
                AfterFailure::Retry(pause) => {
                    tracing::debug!(tries, error = %err, "retrying on the cluster");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Reads the cluster's topology again in the background, unless a read
    /// is under way or has just been made.
    fn refresh_topology_soon(&self) {
        let Some(Mode::Cluster(cluster)) = self.mode.get() else {
            return;
        };
        if cluster.refresh_is_fresh() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let asked_at = Instant::now();
        tokio::spawn(async move {
            let Some(Mode::Cluster(cluster)) = me.mode.get() else {
                return;
            };
            let result = match me.credentials().await {
                Ok(creds) => {
                    cluster
                        .refresh(&me.target, &creds, &me.seed, me.deadline(), asked_at)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not read the cluster's topology; the next failure tries again");
            }
        });
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

    /// In the refresh task, before invocations get `token`: re-AUTHs every
    /// live connection with it at once (the one connection, or each
    /// master's, busy or idle), so none outlives its token.
    async fn reauth_all(&self, token: Arc<Token>) {
        let creds = Credentials::Token(token);
        let mut nodes = vec![self.seed.clone()];
        if let Some(Mode::Cluster(cluster)) = self.mode.get() {
            let topology = cluster.topology.load();
            nodes.extend(
                topology
                    .shards
                    .iter()
                    .map(|s| s.node.clone())
                    .filter(|n| !Arc::ptr_eq(n, &self.seed)),
            );
        }
        futures_util::future::join_all(nodes.iter().map(|n| n.reauth_live(&self.target, &creds))).await;
    }
}

impl TokenListener for Cache {
    fn token_ready(&self, token: Arc<Token>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.reauth_all(token))
    }
}
