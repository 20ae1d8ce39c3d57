//! One endpoint of the cache and its one shared connection: made on first
//! use, waited for while it is down (within the invocation's ride-through
//! window, see [`super::gate`]), re-authenticated with each new token, and
//! abandoned when it breaks or goes silent.

use super::connect::{self, AbortOnDrop, Handshake, LastRead, Opened};
use super::context::{Call, Context, Credentials, RELAXED_COMMAND};
use super::error::{classify, connection_broken, CacheError};
use super::gate::{Admit, Gate};
use super::retry::{reauth_backoff, Failure};
use super::status::CacheStatus;
use crate::secret::redact;
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::FromRedisValue;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The error codes that mean the cache did not run the command and will
/// later: failing over, resharding, loading, or a replica now.
const NOT_NOW: &[&str] = &["CLUSTERDOWN", "TRYAGAIN", "READONLY", "LOADING", "MASTERDOWN"];

/// How long a node stays relaxed after a handoff (`MOVING`): twice the
/// relaxed command deadline, as the smart-client-handoff clients do.
const AFTER_HANDOFF: Duration = Duration::from_secs(20);

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

    /// What every node of the cache shares.
    pub(super) fn context(&self) -> &Arc<Context> {
        &self.ctx
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
    /// same write when `asking`.
    pub(super) async fn run<T: FromRedisValue>(
        self: &Arc<Self>,
        call: &Call,
        cmd: &redis::Cmd,
        asking: bool,
    ) -> Result<T, Failure> {
        let creds = self.ctx.credentials(call).await.map_err(Failure::NoConnection)?;
        let live = self.connection(call).await?;
        self.ensure_authenticated(&live, &creds, call).await?;
        let budget = self.command_budget(call);
        let mut conn = live.conn.clone();
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

    /// The command deadline here: relaxed while the cache announced
    /// maintenance on this node; never past the call's deadline.
    fn command_budget(&self, call: &Call) -> Duration {
        let command = self.ctx.target.deadlines.command;
        let command = match self.is_relaxed() {
            true => command.max(RELAXED_COMMAND),
            false => command,
        };
        call.budget(command)
    }

    /// The live connection, or one made or waited for within the call's
    /// window (see [`super::gate`]).
    async fn connection(self: &Arc<Self>, call: &Call) -> Result<Arc<Live>, Failure> {
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        self.wait_for_connection(call).await
    }

    async fn wait_for_connection(self: &Arc<Self>, call: &Call) -> Result<Arc<Live>, Failure> {
        let mut changes = self.changed.subscribe();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        loop {
            if let Some(live) = self.live.load_full() {
                return Ok(live);
            }
            if self.retired.load(Ordering::Acquire) {
                return Err(Failure::Retired);
            }
            let now = Instant::now();
            let admit = self.lock_gate().admit(now, call.started, self.ctx.ride_through);
            let until = match admit {
                Admit::Attempt => {
                    self.start_attempt();
                    call.deadline
                }
                Admit::Wait => call.deadline,
                Admit::WaitUntil(at) if at < call.wait_until => at,
                Admit::WaitUntil(_) => return Err(Failure::NoConnection(self.last_error())),
                Admit::Fail(e) => return Err(Failure::NoConnection(e)),
            };
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(Failure::NoConnection(self.last_error()));
                    }
                    if let Change::NoToken(e) = &*changes.borrow_and_update() {
                        return Err(Failure::NoConnection(e.clone()));
                    }
                }
                () = tokio::time::sleep_until(until) => {}
            }
            if Instant::now() >= call.deadline {
                return Err(Failure::NoConnection(self.last_error()));
            }
        }
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What an invocation that gives up waiting is told.
    fn last_error(&self) -> CacheError {
        self.lock_gate()
            .last_error()
            .cloned()
            .unwrap_or_else(|| CacheError::Unavailable(format!("no connection to {} could be made in time", self.addr)))
    }

    /// Makes one connection attempt in a task of its own (not tied to the
    /// invocation that asked, which may give up first), within the connect
    /// deadline.
    fn start_attempt(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move { node.attempt().await });
    }

    async fn attempt(self: Arc<Self>) {
        let budget = self.ctx.target.deadlines.connect;
        let made = match tokio::time::timeout(budget, self.connect_once(None)).await {
            Ok(made) => made,
            Err(_) => Err(CacheError::Unavailable(format!(
                "connecting to {} took longer than {budget:?}",
                self.addr
            ))),
        };
        match made {
            Ok(live) if self.retired.load(Ordering::Acquire) => {
                drop(live);
                self.lock_gate().abandoned();
                self.changed.send_replace(Change::Retired);
            }
            Ok(live) => {
                self.install(live.clone());
                self.lock_gate().connected();
                self.changed.send_replace(Change::Connected);
                tracing::info!(connection = live.number, node = %self.addr, "connected to the cache");
                self.after_connect(&live).await;
            }
            Err(e @ CacheError::Token(_)) => {
                self.lock_gate().abandoned();
                self.changed.send_replace(Change::NoToken(e));
            }
            Err(e) => {
                {
                    let mut gate = self.lock_gate();
                    let backoff = gate.failed(&e, Instant::now());
                    tracing::warn!(error = %e, node = %self.addr, failures = gate.failures,
                        retry_in_ms = backoff.as_millis() as u64, "could not connect to the cache");
                }
                self.changed.send_replace(Change::Failed);
                // A node that cannot be reached may have moved or been
                // replaced: the cluster reads its topology again.
                self.ctx.want_topology();
            }
        }
    }

    /// A new connection with the newest credentials, to `to` or else to
    /// where this node's traffic goes now.
    async fn connect_once(self: &Arc<Self>, to: Option<(&str, u16)>) -> Result<Arc<Live>, CacheError> {
        let creds = self.ctx.connect_credentials().await?;
        let moved = self.moved_to();
        let (host, port) = to
            .or(moved.as_ref().map(|(h, p)| (h.as_str(), *p)))
            .unwrap_or((&self.host, self.port));
        let owner = Arc::new(Mutex::new(Arc::downgrade(self)));
        let pushes = self.ctx.maintenance.wants_pushes().then(|| {
            let owner = owner.clone();
            move |push: redis::PushInfo| {
                let node = owner.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
                if let Some(node) = node {
                    super::maintenance::on_push(&node, push);
                }
                Ok::<(), ()>(())
            }
        });
        let handshake = Handshake {
            user: creds.user(),
            password: creds.password(),
            pushes,
        };
        let Opened {
            conn,
            driver,
            last_read,
        } = connect::open(&self.ctx.target, host, port, handshake).await?;
        let number = self.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(Live {
            conn,
            number,
            authed_generation: AtomicU64::new(creds.generation()),
            reauth_after: Mutex::new(None),
            served: AtomicBool::new(false),
            last_read,
            owner,
            driver,
        }))
    }

    /// Where new connections go while a handoff lasts.
    fn moved_to(&self) -> Option<(String, u16)> {
        let mut moved = self.moved_to.lock().unwrap_or_else(|p| p.into_inner());
        match &*moved {
            Some((host, port, until)) if Instant::now() < *until => Some((host.clone(), *port)),
            Some(_) => {
                *moved = None;
                None
            }
            None => None,
        }
    }

    fn install(&self, live: Arc<Live>) {
        self.live.store(Some(live));
    }

    /// After a connection is in place: catch it up with a token that came
    /// while it was being made (so an idle node is not left on the old
    /// one), and ask for maintenance notifications on it.
    async fn after_connect(&self, live: &Arc<Live>) {
        if let Some(newest) = self.ctx.tokens().and_then(|t| t.newest()) {
            if newest.generation > live.authed_generation.load(Ordering::Acquire) {
                let _one_at_a_time = self.reauth.lock().await;
                let call = Call::no_wait(&self.ctx);
                let _ = self.send_auth(live, &Credentials::Token(newest), false, &call).await;
            }
        }
        super::maintenance::subscribe(&self.ctx, &self.addr, live.conn.clone()).await;
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

    /// On an invocation's path: the connection authenticated with an older
    /// token than the one the invocation holds (the cache refused the newer
    /// token earlier, or the connection missed a refresh).
    ///
    /// When a re-AUTH is already under way (the refresh task's, most often),
    /// the invocation does not wait for it: the connection's own token is
    /// still valid, or the cache would have closed it.
    async fn ensure_authenticated(
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
    pub(super) async fn reauth_live(&self, creds: &Credentials<'_>) {
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
    async fn send_auth(
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
        match tokio::time::timeout(budget, auth.query_async::<()>(&mut conn)).await {
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
                self.lost(live, &e.to_string());
                Err(Failure::Lost(CacheError::Unavailable(redact(&e.to_string()))))
            }
            Ok(Err(e)) => {
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
            Err(_) => Err(Failure::TimedOut {
                budget,
                abandoned: false,
            }),
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

    /// Every connection of this node: a live one, PINGed within the command
    /// deadline; one that does not answer is dropped (after a failover the
    /// cache announced, the connection may be to a demoted node).
    pub(super) async fn check(&self) {
        let Some(live) = self.live.load_full() else {
            return;
        };
        let mut conn = live.conn.clone();
        let budget = self.ctx.target.deadlines.command;
        let ping = tokio::time::timeout(budget, redis::cmd("PING").query_async::<String>(&mut conn)).await;
        if !matches!(ping, Ok(Ok(_))) {
            self.lost(&live, "no answer to a PING after the cache announced a failover");
        }
    }

    /// Whether commands here get the relaxed deadline now.
    pub(super) fn is_relaxed(&self) -> bool {
        let until = self.relaxed_until.load(Ordering::Relaxed);
        until != 0 && self.ctx.millis(Instant::now()) < until
    }

    /// Relaxes the command deadline here for `for_` (maintenance announced),
    /// or restores it (`None`).
    pub(super) fn relax(&self, for_: Option<Duration>) {
        let until = for_.map_or(0, |d| self.ctx.millis(Instant::now() + d).max(1));
        self.relaxed_until.store(until, Ordering::Relaxed);
        self.ctx.maintenance.relaxed_changed(until != 0);
    }

    /// A handoff (`MOVING`): connects to `to` (or, when the cache names no
    /// endpoint, to this node's own address after half of `time`), moves
    /// the traffic there, then lets the old connection close once the
    /// commands on it have finished. Reconnects go to `to` while the
    /// handoff lasts (twice `time`).
    pub(super) async fn hand_off(self: Arc<Self>, to: Option<(String, u16)>, time: Duration) {
        let old = self.live.load_full();
        self.relax(Some(time + AFTER_HANDOFF));
        let (host, port) = match to {
            Some(to) => to,
            None => {
                tokio::time::sleep(time / 2).await;
                (self.host.clone(), self.port)
            }
        };
        *self.moved_to.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((host.clone(), port, Instant::now() + time * 2));
        let budget = self.ctx.target.deadlines.connect;
        let made = match tokio::time::timeout(budget, self.connect_once(Some((&host, port)))).await {
            Ok(made) => made,
            Err(_) => Err(CacheError::Unavailable(format!(
                "connecting to {host}:{port} took too long"
            ))),
        };
        match made {
            Ok(live) if !self.is_retired() => {
                self.install(live.clone());
                self.lock_gate().connected();
                self.changed.send_replace(Change::Connected);
                tracing::info!(node = %self.addr, to = %format!("{host}:{port}"), connection = live.number,
                    "handoff: traffic moved to the new endpoint; the old connection closes once its commands finish");
                drop(old);
                self.ctx.maintenance.done("MOVING", &self.addr);
                self.after_connect(&live).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(node = %self.addr, to = %format!("{host}:{port}"), error = %e,
                    "handoff: could not connect to the new endpoint; staying on the current connection until it closes");
            }
        }
    }
}
