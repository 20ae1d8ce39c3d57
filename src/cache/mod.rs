//! The process's Redis connections.
//!
//! [`Cache`] holds one multiplexed connection that every invocation shares,
//! or on a cluster one per master. Every command is one [`context::Call`]:
//! it gets a token (the cheap check, or the one refresh beside it), finds
//! its node's connection, and rides through a lost connection, a silent
//! one, or a cache that answers "not now" (`LOADING`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`) until its ride-through window
//! ends, sending again only what is safe to send twice ([`replay`]).
//!
//! # Layout
//!
//! - `context`: what every node shares (target, credentials, window) and a
//!   call's deadlines.
//! - `node`: one endpoint and its connection: waiting for it, re-AUTH,
//!   abandoning it when it breaks or goes silent, handoffs.
//! - `gate`: one connection attempt at a time, the backoff between them,
//!   who waits and who fails fast.
//! - `connect`: TCP with keepalive, TLS, the handshake, the I/O task.
//! - `retry`: what to do after a failed try, as a pure function.
//! - [`replay`]: which commands are safe to send twice.
//! - `standalone`: the one-endpoint path.
//! - `cluster`: routing by slot, redirects, reading the topology.
//! - `maintenance`: `AzureRedisEvents` and Redis's handoff notifications.
//! - `reauth`: the new token onto every live connection.
//! - `status`, `error`, `slot`: Health's view, errors, hash slots.
//!
//! Whether the cache is a cluster is decided once, from an answer of the
//! configured endpoint (`Redis__clusterMode=auto`: `INFO cluster` says
//! `cluster_enabled:1`), and kept: a standalone cache (and Azure Managed
//! Redis with the Enterprise policy, which is one endpoint) keeps the
//! one-connection path. A failure to connect or authenticate decides
//! nothing: the next call asks again.
//!
//! New tokens reach every connection before invocations use them: the
//! token manager's refresh task calls [`TokenListener::token_ready`], and the
//! cache re-AUTHs every live connection, each master's included, at once.
//! One token fetch serves the whole process.

mod batch;
mod cluster;
mod connect;
mod context;
mod error;
mod gate;
mod maintenance;
mod node;
mod reauth;
pub(crate) mod replay;
mod retry;
mod slot;
mod standalone;
mod status;
mod together;

pub(crate) use context::{Auth, Target};
pub(crate) use error::classify;
pub use error::CacheError;
pub(crate) use maintenance::{Kinds, Notice};
pub use replay::Replay;
#[cfg(test)]
pub(crate) use slot::key_slot;
pub(crate) use slot::same_slot_prefix;
pub(crate) use status::{CacheStatus, ShardInfo};

use crate::settings::{ClusterMode, NotificationSetting};
use crate::token::{TokenListener, TokenManager};
use cluster::Cluster;
use context::{Call, Context};
use maintenance::Maintenance;
use node::Node;
use redis::FromRedisValue;
use std::sync::Arc;
use std::time::Duration;

/// How a cache behaves, beside where it is and how it authenticates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheOptions {
    /// `Redis__clusterMode`.
    pub cluster_mode: ClusterMode,
    /// `Redis__maintenanceNotifications`.
    pub notifications: NotificationSetting,
}

/// Whether the cache is one endpoint or a cluster, once known.
#[derive(Debug)]
enum Mode {
    /// One endpoint: the configured one.
    Standalone,
    /// A cluster: one connection per master.
    Cluster(Cluster),
}

/// The connection(s) every invocation shares, made on first use: one
/// Entra ID–authenticated, TLS connection to the cache, or on a cluster one
/// per master; re-AUTHed with each new token, ridden through when lost.
/// Build one with [`Cache::from_settings`]; share it (an `Arc`).
pub struct Cache {
    ctx: Arc<Context>,
    cluster_mode: ClusterMode,
    /// The configured endpoint: the one connection of a standalone cache;
    /// on a cluster, where the topology is first read.
    seed: Arc<Node>,
    mode: tokio::sync::OnceCell<Mode>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("host", &self.ctx.target.host)
            .field("port", &self.ctx.target.port)
            .field("mode", &self.mode.get())
            .finish_non_exhaustive()
    }
}

/// An open connection of the doctor's, with the task doing its I/O.
pub(crate) struct DoctorConnection {
    conn: redis::aio::MultiplexedConnection,
    _driver: connect::AbortOnDrop,
}

impl DoctorConnection {
    /// The connection, to send commands on.
    pub(crate) fn conn(&mut self) -> &mut redis::aio::MultiplexedConnection {
        &mut self.conn
    }
}

/// Opens one connection to the configured endpoint as the handler does
/// (TCP, TLS, AUTH), within `budget`: the doctor's authentication step.
pub(crate) async fn open_connection(
    target: &Target,
    user: Option<&str>,
    password: &str,
    budget: Duration,
) -> Result<DoctorConnection, CacheError> {
    let handshake = connect::Handshake {
        user,
        password,
        pushes: None::<fn(redis::PushInfo) -> Result<(), ()>>,
    };
    match tokio::time::timeout(budget, connect::open(target, &target.host, target.port, handshake)).await {
        Ok(opened) => opened.map(|o| DoctorConnection {
            conn: o.conn,
            _driver: o.driver,
        }),
        Err(_) => Err(CacheError::Unavailable(format!(
            "connecting to {}:{} took longer than {budget:?}",
            target.host, target.port
        ))),
    }
}

impl Cache {
    /// A cache handle; nothing is connected until the first call. With Entra
    /// ID, the handle hears of every new token from the token manager and
    /// re-AUTHs its live connections with it (see [`TokenListener`]).
    pub(crate) fn new(target: Target, auth: Auth, options: CacheOptions) -> Arc<Self> {
        let kinds = Kinds::for_host(options.notifications, &target.host);
        let ctx = Arc::new(Context::new(target, auth, Maintenance::new(kinds)));
        let mode = match options.cluster_mode {
            ClusterMode::Standalone => tokio::sync::OnceCell::new_with(Some(Mode::Standalone)),
            ClusterMode::Auto | ClusterMode::Cluster => tokio::sync::OnceCell::new(),
        };
        let cache = Arc::new(Self {
            seed: Node::new(ctx.clone(), &ctx.target.host, ctx.target.port),
            ctx,
            cluster_mode: options.cluster_mode,
            mode,
        });
        if let Some(tokens) = cache.ctx.tokens() {
            let listener: Arc<dyn TokenListener> = cache.clone();
            tokens.subscribe(Arc::downgrade(&listener));
        }
        cache
    }

    /// The token manager, for Entra ID auth.
    pub(crate) fn tokens(&self) -> Option<&Arc<TokenManager>> {
        self.ctx.tokens()
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
                let all: Vec<CacheStatus> = cluster.topology().shards.iter().map(|s| s.node.status()).collect();
                CacheStatus::sum(&all)
            }
            _ => self.seed.status(),
        }
    }

    /// The maintenance the cache announced last, while it lasts.
    pub(crate) fn maintenance(&self) -> Option<Notice> {
        self.ctx.maintenance.current()
    }

    /// The longest one call may take: one connect plus one command, or the
    /// ride-through window if that is longer.
    pub(crate) fn longest_call(&self) -> Duration {
        self.ctx.longest_call(self.ctx.target.deadlines.command)
    }

    /// Topology reads that succeeded (0 for a standalone cache).
    pub(crate) fn topology_reads(&self) -> u64 {
        match self.mode.get() {
            Some(Mode::Cluster(cluster)) => cluster.refreshes(),
            _ => 0,
        }
    }

    /// The masters of a cluster (`None` for a standalone cache), finding out
    /// which it is first if no call has yet.
    pub(crate) async fn shards(&self) -> Result<Option<Vec<ShardInfo>>, CacheError> {
        let call = Call::new(&self.ctx);
        match self.mode(&call).await? {
            Mode::Cluster(cluster) => Ok(Some(cluster.shards())),
            Mode::Standalone => Ok(None),
        }
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

    /// Runs one command, refreshing the token, re-authenticating and
    /// riding through a lost connection as needed, within the call's
    /// deadline. On a cluster it goes to the master that owns its key (any
    /// master for a keyless command), following `MOVED` and `ASK`. A
    /// command that may have reached Redis before its connection broke is
    /// sent again only if it is safe to send twice (by its name, see
    /// [`Replay`]; [`Cache::query_with`] says otherwise).
    ///
    /// ```no_run
    /// # async fn demo(cache: &azure_redis_handler::Cache) -> Result<(), azure_redis_handler::CacheError> {
    /// use azure_redis_handler::redis;
    ///
    /// let () = cache.query(redis::cmd("SET").arg("greeting").arg("hello").arg("EX").arg(60)).await?;
    /// let greeting: Option<String> = cache.query(redis::cmd("GET").arg("greeting")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        self.query_with(cmd, Replay::ByCommand).await
    }

    /// [`Cache::query`], saying whether `cmd` is safe to send twice after
    /// its connection broke (a script of yours that records what it did,
    /// say: [`Replay::Safe`]).
    pub async fn query_with<T: FromRedisValue>(&self, cmd: &redis::Cmd, replay: Replay) -> Result<T, CacheError> {
        let call = Call::new(&self.ctx);
        // Known after the first call: read without awaiting the cell.
        let mode = match self.mode.get() {
            Some(mode) => mode,
            None => self.mode(&call).await?,
        };
        match mode {
            Mode::Standalone => standalone::query(&self.seed, &call, cmd, replay).await,
            Mode::Cluster(cluster) => cluster.query(&call, cmd, None, replay).await,
        }
    }

    /// Runs `script` on `keys` (all in one hash slot) with `args`, as
    /// `EVALSHA`, or in full (`EVAL`) on a node that does not have it yet.
    /// The script must be safe to run twice (it is sent again after a lost
    /// connection, as [`Replay::Safe`] says).
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, CacheError> {
        let with = |first: &str, body: &str| {
            let mut cmd = redis::cmd(first);
            cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match self.query_with(&with("EVALSHA", script.hash()), Replay::Safe).await {
            Err(CacheError::NoScript(_)) => self.query_with(&with("EVAL", script.source), Replay::Safe).await,
            other => other,
        }
    }

    /// Runs one command on the master at `node` (as [`ShardInfo::node`]
    /// names it), with the same ride-through and deadline as
    /// [`Cache::query`] but no redirects: for commands about that master
    /// (PING, CLIENT LIST).
    pub(crate) async fn query_node<T: FromRedisValue>(&self, node: &str, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let call = Call::new(&self.ctx);
        match self.mode(&call).await? {
            Mode::Standalone => standalone::query(&self.seed, &call, cmd, Replay::ByCommand).await,
            Mode::Cluster(cluster) => cluster.query(&call, cmd, Some(node), Replay::ByCommand).await,
        }
    }

    /// Whether the cache is a cluster, asked until an answer decides it.
    ///
    /// Finding out is boxed: it is a future of about 1.3 KiB (a cluster's
    /// topology read) that runs until one answer decides, and unboxed every
    /// command's future held room for it (a `GET`'s took 1.4 KiB, 1.0 with
    /// the box).
    async fn mode(&self, call: &Call) -> Result<&Mode, CacheError> {
        if let Some(mode) = self.mode.get() {
            return Ok(mode);
        }
        Box::pin(self.mode.get_or_try_init(|| self.detect(call))).await
    }

    /// Asks the configured endpoint whether it is a cluster (unless the
    /// setting says), and if so reads the topology. Only an answer decides:
    /// a connection that fails or is refused leaves it open for the next
    /// call (the identity is often given its access policy after the app
    /// is deployed).
    async fn detect(&self, call: &Call) -> Result<Mode, CacheError> {
        let cluster = match self.cluster_mode {
            ClusterMode::Standalone => false,
            ClusterMode::Cluster => true,
            ClusterMode::Auto => self.ask_whether_cluster(call).await?,
        };
        if !cluster {
            tracing::info!(mode = "standalone", "the cache is one endpoint: standalone mode");
            return Ok(Mode::Standalone);
        }
        let cluster = Cluster::discover(self.ctx.clone(), self.seed.clone(), call).await?;
        tracing::info!(
            mode = "cluster",
            masters = cluster.topology().shards.len(),
            "the cache is a cluster: cluster mode, one connection per master"
        );
        Ok(Mode::Cluster(cluster))
    }

    /// `INFO cluster` on the configured endpoint, once a PING there has
    /// shown the connection works (so a refusal below is the access
    /// policy refusing the command, not the identity). INFO may be outside
    /// the policy: then a cluster answers `CLUSTER SLOTS`, and anything
    /// else refuses it.
    async fn ask_whether_cluster(&self, call: &Call) -> Result<bool, CacheError> {
        let seed = &self.seed;
        standalone::query::<String>(seed, call, &redis::cmd("PING"), Replay::ByCommand).await?;
        let info = redis::cmd("INFO").arg("cluster").to_owned();
        let slots = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
        match standalone::query::<String>(seed, call, &info, Replay::ByCommand).await {
            Ok(info) => Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1")),
            Err(CacheError::Auth(_) | CacheError::Command(_)) => {
                match standalone::query::<redis::Value>(seed, call, &slots, Replay::ByCommand).await {
                    Ok(_) => Ok(true),
                    // "ERR This instance has cluster support disabled".
                    Err(CacheError::Command(_)) => Ok(false),
                    Err(CacheError::Auth(e)) => {
                        tracing::warn!(error = %e, "neither INFO nor CLUSTER SLOTS is allowed to this identity: taken as \
                        standalone; set Redis__clusterMode=cluster if the cache is clustered");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// A Lua script the cache runs by its SHA1 ([`Cache::eval`]).
#[derive(Debug)]
pub(crate) struct Script {
    source: &'static str,
    hash: std::sync::OnceLock<String>,
}

impl Script {
    /// The script `source` (Lua).
    pub(crate) const fn new(source: &'static str) -> Self {
        Self {
            source,
            hash: std::sync::OnceLock::new(),
        }
    }

    /// Its SHA1, as `EVALSHA` names it.
    fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| redis::Script::new(self.source).get_hash().to_owned())
    }
}

/// A context for unit tests: a closed port, an access key, no window.
#[cfg(test)]
fn test_context() -> Arc<Context> {
    let target = Target {
        host: "127.0.0.1".into(),
        port: 1,
        tls: false,
        extra_roots: None,
        deadlines: crate::settings::Deadlines {
            ride_through: Duration::ZERO,
            ..crate::settings::Deadlines::default()
        },
    };
    let auth = Auth::AccessKey {
        user: None,
        password: crate::secret::Secret::new("k"),
    };
    Arc::new(Context::new(target, auth, Maintenance::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding out whether the cache is a cluster is boxed: a command's
    /// future holds a pointer to it, not room for it, and so is smaller
    /// than it. (Checked broken: unboxed, a `GET`'s future is the larger.)
    #[test]
    fn a_commands_future_holds_no_room_for_finding_out_the_mode() {
        let ctx = test_context();
        let cache = Cache::new(
            ctx.target.clone(),
            Auth::AccessKey {
                user: None,
                password: crate::secret::Secret::new("k"),
            },
            CacheOptions {
                cluster_mode: ClusterMode::Auto,
                notifications: NotificationSetting::Off,
            },
        );
        let call = Call::new(&cache.ctx);
        let finding_out = std::mem::size_of_val(&cache.detect(&call));
        let get = redis::cmd("GET").arg("k").to_owned();
        let command = std::mem::size_of_val(&cache.query::<Option<Vec<u8>>>(&get));
        assert!(
            command < finding_out,
            "a command's future: {command} bytes; finding out the mode: {finding_out}"
        );
    }
}
