//! One endpoint of the cache and its one shared connection: made on first
//! use, waited for while it is down (within the invocation's ride-through
//! window, see [`super::gate`]), re-authenticated with each new token, and
//! abandoned when it breaks or goes silent.
//!
//! - here: the node, its connection ([`Live`]), running one command, and
//!   the connection's life (installed, served, lost, retired);
//! - `link`: waiting for a connection and the attempts to make one;
//! - `auth`: `AUTH` with a newer token on a live connection;
//! - `notices`: what the node does about the maintenance the cache
//!   announces (relaxed deadlines, a failover check, a handoff).

mod auth;
mod link;
mod notices;

use super::batch::InFlight;
use super::connect::{AbortOnDrop, LastRead};
use super::context::{Call, Context};
use super::error::{classify, connection_broken, CacheError};
use super::gate::Gate;
use super::maintenance::command_deadline;
use super::retry::Failure;
use super::status::CacheStatus;
use crate::otel;
use crate::secret::redact;
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::FromRedisValue;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The error codes that mean the cache did not run the command and will
/// later: failing over, resharding, loading, or a replica now.
const NOT_NOW: &[&str] = &["CLUSTERDOWN", "TRYAGAIN", "READONLY", "LOADING", "MASTERDOWN"];

/// How one command's error answer is taken.
fn failure_of(e: &redis::RedisError) -> Failure {
    if let Some((addr, slot)) = e.redirect_node() {
        let addr = addr.to_owned();
        return match e.kind() {
            redis::ErrorKind::Server(redis::ServerErrorKind::Ask) => Failure::Ask { addr },
            _ => Failure::Moved { slot, addr },
        };
    }
    if let Some(code) = e.code().filter(|c| NOT_NOW.contains(c)) {
        // "LOADING Redis is loading...", as the server said it.
        return Failure::NotNow(redact(&format!("{code} {}", e.detail().unwrap_or_default())));
    }
    Failure::Reply(classify(e))
}

/// The command's name, upper-case, as telemetry names it: borrowed for
/// the commands the handler and most apps send, so a span and a metric
/// point cost no allocation for it.
pub(super) fn operation_name(cmd: &redis::Cmd) -> Cow<'static, str> {
    const KNOWN: &[&str] = &[
        "GET",
        "SET",
        "DEL",
        "PING",
        "INCR",
        "INCRBY",
        "DECR",
        "EXPIRE",
        "PEXPIRE",
        "TTL",
        "PTTL",
        "EXISTS",
        "EVALSHA",
        "EVAL",
        "AUTH",
        "INFO",
        "CLUSTER",
        "CLIENT",
        "HELLO",
        "SUBSCRIBE",
        "MGET",
        "MSET",
        "GETEX",
        "GETDEL",
        "SETEX",
        "HGET",
        "HSET",
        "HDEL",
        "HGETALL",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "SREM",
        "SMEMBERS",
        "ZADD",
        "ZRANGE",
        "PUBLISH",
        "SCAN",
        "TYPE",
        "UNLINK",
        "APPEND",
        "STRLEN",
        "ECHO",
    ];
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => match KNOWN.iter().find(|k| k.as_bytes().eq_ignore_ascii_case(name)) {
            Some(known) => Cow::Borrowed(known),
            None => {
                let name = &name[..name.len().min(32)];
                Cow::Owned(String::from_utf8_lossy(name).to_ascii_uppercase())
            }
        },
        _ => Cow::Borrowed("UNKNOWN"),
    }
}

/// Counters shown by Health.
#[derive(Debug, Default)]
pub(super) struct NodeStats {
    /// Connections made (the first one included).
    pub(super) connects: AtomicU64,
    /// Connections dropped because they broke or went silent.
    pub(super) drops: AtomicU64,
    /// `AUTH` sent on a live connection with a newer token.
    pub(super) reauths: AtomicU64,
}

/// What changed on a node, for the invocations waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Nothing yet.
    None,
    /// A connection is in place.
    Connected,
    /// An attempt failed; the gate says what next.
    Failed,
    /// An attempt could not even start: no token.
    NoToken(CacheError),
    /// The node left the topology.
    Retired,
}

/// One connection, shared by every invocation on its node.
pub(super) struct Live {
    conn: MultiplexedConnection,
    /// Which connection of this node (1 = the first).
    pub(super) number: u64,
    authed_generation: AtomicU64,
    /// After the cache refused a newer token: no new AUTH before this; the
    /// connection goes on with the token it has, while that is valid.
    reauth_after: Mutex<Option<(Instant, u32)>>,
    /// Whether it has answered a command: a connection that breaks before
    /// that counts as a failed attempt.
    served: AtomicBool,
    last_read: LastRead,
    /// Its commands in flight: its writes wait a turn for more while
    /// there are others (see [`super::batch`]).
    in_flight: InFlight,
    /// Which node it serves (a connection can move to another: the
    /// configured endpoint's becomes a master's), for its pushes.
    owner: Arc<Mutex<Weak<Node>>>,
    driver: AbortOnDrop,
}

/// One endpoint and its shared connection.
pub(super) struct Node {
    ctx: Arc<Context>,
    /// Where to connect (an IP address for a cluster node, as announced).
    pub(super) host: String,
    pub(super) port: u16,
    /// `host:port`, as the cluster names the node.
    pub(super) addr: String,
    live: ArcSwapOption<Live>,
    gate: Mutex<Gate>,
    changed: watch::Sender<Change>,
    reauth: tokio::sync::Mutex<()>,
    retired: AtomicBool,
    /// Invocations waiting for a connection (the topology refresher keeps
    /// looking while anyone waits on a node that is down).
    waiting: AtomicUsize,
    /// Until when (ms since the context's epoch) commands get the relaxed
    /// deadline: the cache announced maintenance on this node.
    relaxed_until: AtomicU64,
    /// Where a handoff (`MOVING`) sent this node's traffic, and until when
    /// new connections go there instead of `host:port`.
    moved_to: Mutex<Option<(String, u16, Instant)>>,
    pub(super) stats: NodeStats,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Counts an invocation as waiting on a node while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Node {
    pub(super) fn new(ctx: Arc<Context>, host: &str, port: u16) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            host: host.to_owned(),
            port,
            addr: format!("{host}:{port}"),
            live: ArcSwapOption::empty(),
            gate: Mutex::new(Gate::default()),
            changed: watch::Sender::new(Change::None),
            reauth: tokio::sync::Mutex::new(()),
            retired: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            relaxed_until: AtomicU64::new(0),
            moved_to: Mutex::new(None),
            stats: NodeStats::default(),
        })
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

    /// Whether invocations are waiting for this node to come back.
    pub(super) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Runs `cmd` once on this node's connection (waiting for one, within
    /// the call's window, if there is none), preceded by `ASKING` in the
    /// same write when `asking`. With telemetry on, the try is a client
    /// span (named for the command, with this node's address: never a key
    /// or a value) and a point of the command-duration histogram.
    pub(super) async fn run<T: FromRedisValue>(
        self: &Arc<Self>,
        call: &Call,
        cmd: &redis::Cmd,
        asking: bool,
    ) -> Result<T, Failure> {
        if !otel::is_on() {
            return self.run_once(call, cmd, asking).await;
        }
        let operation = operation_name(cmd);
        let mut span = self.client_span(operation.clone());
        let started = std::time::Instant::now();
        let outcome = span.scope(self.run_once(call, cmd, asking)).await;
        let failure = outcome.as_ref().err().map(Failure::telemetry);
        if let Some(metrics) = otel::recorder() {
            let error = failure.as_ref().map(|(kind, _)| *kind);
            metrics.command(
                &operation,
                &self.host,
                self.port,
                error,
                started.elapsed().as_secs_f64(),
            );
        }
        if let Some((kind, message)) = failure {
            span.fail(kind, &message);
        }
        outcome
    }

    /// A client span for a command on this node, by the conventions for
    /// databases (`db.system.name`, `db.operation.name`, `server.*`).
    pub(super) fn client_span(&self, operation: Cow<'static, str>) -> otel::Span {
        let mut span = otel::Span::start(operation.clone(), otel::Kind::Client);
        if span.is_recording() && !span.set_fixed(otel::fixed::command(&operation, &self.host, self.port)) {
            span.set("db.system.name", "redis");
            span.set("db.operation.name", operation);
            span.set("server.address", otel::Value::text(&self.host));
            span.set("server.port", i64::from(self.port));
        }
        span
    }

    /// This node as a metric's attributes (`server.address`, `server.port`),
    /// with `more` after them.
    pub(super) fn metric_attributes(
        &self,
        more: impl IntoIterator<Item = (&'static str, otel::Value)>,
    ) -> Vec<(&'static str, otel::Value)> {
        let mut attrs = vec![
            ("server.address", self.host.clone().into()),
            ("server.port", i64::from(self.port).into()),
        ];
        attrs.extend(more);
        attrs
    }

    async fn run_once<T: FromRedisValue>(
        self: &Arc<Self>,
        call: &Call,
        cmd: &redis::Cmd,
        asking: bool,
    ) -> Result<T, Failure> {
        #[cfg(not(feature = "experiment-no-token-check"))]
        let (creds, live) = if self.is_connected() {
            let creds = self.ctx.credentials(call).await.map_err(Failure::NoConnection)?;
            (creds, self.connection(call).await?)
        } else {
            // No connection yet (a cold start, after a loss): it is made
            // while the token is awaited; a token problem is the one told.
            // Boxed: the two futures side by side would otherwise make
            // every command's future larger, and PUT 5% slower (paired
            // `wrk` runs at 64 connections).
            Box::pin(super::together::credentials_first(
                async { self.ctx.credentials(call).await.map_err(Failure::NoConnection) },
                self.connection(call),
            ))
            .await?
        };
        #[cfg(feature = "experiment-no-token-check")]
        let live = self.connection(call).await?;
        #[cfg(not(feature = "experiment-no-token-check"))]
        self.ensure_authenticated(&live, &creds, call).await?;
        let (budget, deadline) = self.command_window(call);
        let mut conn = live.conn.clone();
        let _flying = live.in_flight.enter();
        let outcome = if asking {
            // One write: on a shared connection, another invocation's
            // command must not come between ASKING and this one.
            let pipe = redis::pipe().cmd("ASKING").ignore().add_command(cmd.clone()).to_owned();
            tokio::time::timeout_at(deadline, async {
                pipe.query_async::<(T,)>(&mut conn).await.map(|(v,)| v)
            })
            .await
        } else if cfg!(feature = "experiment-no-command-timers") {
            Ok(cmd.query_async::<T>(&mut conn).await)
        } else {
            tokio::time::timeout_at(deadline, cmd.query_async::<T>(&mut conn)).await
        };
        match outcome {
            Ok(Ok(v)) => {
                self.served(&live);
                Ok(v)
            }
            Ok(Err(e)) if connection_broken(&e) => {
                self.lost(&live, &e.to_string());
                Err(Failure::Lost(CacheError::Unavailable(redact(&e.to_string()))))
            }
            Ok(Err(e)) => {
                self.served(&live);
                Err(failure_of(&e))
            }
            Err(_) => {
                // Nothing came back for at least half the deadline: the
                // connection is silent (a vanished peer, a partition), not
                // merely slow (other answers would keep coming). Drop it;
                // the commands in flight on it fail at once and ride
                // through onto a new one.
                let silent = live.last_read.quiet_for() >= budget / 2;
                if silent {
                    self.lost(
                        &live,
                        &format!("no answer at all within {budget:?}: the connection is silent"),
                    );
                }
                Err(Failure::TimedOut {
                    budget,
                    abandoned: silent,
                })
            }
        }
    }

    /// The time a command has here (relaxed while the cache announced
    /// maintenance on this node; never past the call's deadline), and the
    /// instant it ends: one clock read for both, where `budget` and tokio's
    /// `timeout` read it once each.
    fn command_window(&self, call: &Call) -> (Duration, Instant) {
        let now = Instant::now();
        let budget = command_deadline(self.ctx.target.deadlines.command, self.is_relaxed())
            .min(call.deadline.saturating_duration_since(now));
        (budget, now + budget)
    }

    fn install(&self, live: Arc<Live>) {
        self.live.store(Some(live));
    }

    /// The first answer on a connection: the node is up again.
    fn served(&self, live: &Live) {
        if !live.served.load(Ordering::Relaxed) && !live.served.swap(true, Ordering::Relaxed) {
            self.lock_gate().served();
        }
    }

    /// Drops `live` (broken, or silent) if it is still the node's
    /// connection, and ends its I/O so every command in flight on it fails
    /// now and rides through onto the next one. A connection that broke
    /// before it served anything counts as a failed attempt (backoff).
    fn lost(&self, live: &Arc<Live>, why: &str) {
        let prev = self.live.compare_and_swap(&Some(live.clone()), None);
        if !prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, live)) {
            return;
        }
        live.driver.abort();
        self.stats.drops.fetch_add(1, Ordering::Relaxed);
        let why = redact(why);
        if !live.served.load(Ordering::Relaxed) {
            self.lock_gate()
                .failed(&CacheError::Unavailable(why.clone()), Instant::now());
        }
        tracing::warn!(node = %self.addr, connection = live.number, reason = %why, "dropped the cache connection; the next call makes a new one");
        self.changed.send_replace(Change::Failed);
    }

    /// Drops the connection so the next call makes a new one (a standalone
    /// endpoint that answered `READONLY` is a replica now: the next
    /// connection reaches the new primary).
    pub(super) fn reconnect(&self, why: &str) {
        if let Some(live) = self.live.load_full() {
            self.lost(&live, why);
        }
    }

    /// Takes this node's connection away (the configured endpoint's, found
    /// to be a master's), leaving it unconnected.
    pub(super) fn take_live(&self) -> Option<Arc<Live>> {
        self.live.swap(None)
    }

    /// Uses `live`, made through another [`Node`] to this same address, as
    /// this node's connection, if it has none.
    pub(super) fn adopt(self: &Arc<Self>, live: Arc<Live>) -> bool {
        let prev = self.live.compare_and_swap(&None::<Arc<Live>>, Some(live.clone()));
        let adopted = prev.is_none();
        if adopted {
            *live.owner.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(self);
            if live.served.load(Ordering::Relaxed) {
                self.lock_gate().served();
            }
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            self.changed.send_replace(Change::Connected);
        }
        adopted
    }

    /// Closes the connection, if any (the configured endpoint once the
    /// masters are known): in-flight commands finish on their clone.
    pub(super) fn close(&self, why: &str) {
        if let Some(live) = self.live.swap(None) {
            tracing::info!(node = %self.addr, connection = live.number, reason = why, "closed the node's connection");
        }
    }

    /// The node left the topology (a master demoted, moved or gone): its
    /// connection is closed, it is never dialled again, and the invocations
    /// waiting for it go and find the slot's new owner.
    pub(super) fn retire(&self, why: &str) {
        self.retired.store(true, Ordering::Release);
        self.close(why);
        self.changed.send_replace(Change::Retired);
    }

    /// Whether the node left the topology.
    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}
