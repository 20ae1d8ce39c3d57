//! A clustered cache: routing each command to the master that owns its
//! key's slot, following redirects, and reading the topology again when
//! the cluster changes.
//!
//! The topology comes from `CLUSTER SLOTS` ([`topology`]); each master is a
//! [`Node`] with one multiplexed connection, made on first use. A `MOVED`
//! answer patches the one slot at once (the command goes straight to the
//! new owner) and asks for a new read; `ASK` sends `ASKING` and the command
//! in one write to the importing master. One refresher task per cluster
//! reads the topology when asked (a `MOVED`, a node that could not be
//! reached, a failover the cache announced, `CLUSTERDOWN` and the other
//! "not now" answers), jittered and at most about four times a second, and
//! keeps reading at that pace while invocations wait on a node that is
//! down, so a replica promoted in its place is found at once.
//!
//! A master that leaves the topology (demoted, moved to another address,
//! or gone) is retired: its connection is closed, it is never dialled
//! again, and the invocations waiting for it route again. So the process
//! keeps exactly one connection per master, and never keeps dialling a
//! retired address.

mod topology;

pub(super) use topology::Topology;

use super::context::{Call, Context};
use super::error::CacheError;
use super::node::Node;
use super::replay::Replay;
use super::retry::{decide, Failure, Next, Routing, Tried};
use super::slot;
use super::status::ShardInfo;
use arc_swap::ArcSwap;
use redis::FromRedisValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use topology::{parse_slots, split_addr};

/// The least time between two topology reads.
const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// Up to this much more, at random, so that many instances do not read in step.
const REFRESH_JITTER: Duration = Duration::from_millis(100);

/// A clustered cache: cheap to clone.
#[derive(Clone)]
pub(super) struct Cluster {
    state: Arc<ClusterState>,
}

/// What the cluster's handles and its refresher share.
struct ClusterState {
    ctx: Arc<Context>,
    /// The configured endpoint: where the topology is first read, and the
    /// last place to read it from when no master answers.
    seed: Arc<Node>,
    /// The configured endpoint's addresses: when a master is announced at
    /// one of them, it is the same server, and the connection made to read
    /// the topology becomes that master's.
    seed_addrs: Vec<std::net::SocketAddr>,
    topology: ArcSwap<Topology>,
    /// Held while reading: one read at a time.
    reading: tokio::sync::Mutex<()>,
    /// `MOVED` patches, with when they were made, so a read that started
    /// before one does not undo it.
    patches: Mutex<Vec<(Instant, u16, String)>>,
    /// Topology reads that succeeded.
    refreshes: AtomicU64,
    /// The last read's error, logged once until a read succeeds.
    read_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("masters", &self.state.topology.load().shards.len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Reads the topology through `seed` (the configured endpoint) within
    /// `call`, and starts the refresher.
    pub(super) async fn discover(ctx: Arc<Context>, seed: Arc<Node>, call: &Call) -> Result<Cluster, CacheError> {
        let lookup = tokio::net::lookup_host((seed.host.as_str(), seed.port));
        let seed_addrs = match tokio::time::timeout(call.left(), lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        };
        let state = Arc::new(ClusterState {
            ctx,
            seed,
            seed_addrs,
            topology: ArcSwap::from_pointee(Topology::empty()),
            reading: tokio::sync::Mutex::new(()),
            patches: Mutex::new(Vec::new()),
            refreshes: AtomicU64::new(0),
            read_error: Mutex::new(None),
        });
        state.read(call).await?;
        state.ctx.cluster.store(true, Ordering::Relaxed);
        spawn_refresher(&state);
        Ok(Cluster { state })
    }

    /// The topology now.
    pub(super) fn topology(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.state.topology.load()
    }

    /// Topology reads that succeeded.
    pub(super) fn refreshes(&self) -> u64 {
        self.state.refreshes.load(Ordering::Relaxed)
    }

    /// Every master, with a hash tag that lands on it.
    pub(super) fn shards(&self) -> Vec<ShardInfo> {
        self.topology()
            .shards
            .iter()
            .filter(|s| !s.slots.is_empty())
            .map(|s| ShardInfo {
                node: s.node.addr.clone(),
                slots: s.slots.clone(),
                status: s.node.status(),
                tag: slot::tag_in(&s.slots).unwrap_or_default(),
            })
            .collect()
    }

    /// Every node with a connection to re-AUTH: the masters and the seed.
    pub(super) fn nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<Arc<Node>> = self.topology().shards.iter().map(|s| s.node.clone()).collect();
        if !nodes.iter().any(|n| Arc::ptr_eq(n, &self.state.seed)) {
            nodes.push(self.state.seed.clone());
        }
        nodes
    }

    /// One command: to the owner of its key's slot, to the master at
    /// `pinned` when given, else to any master. Redirects are followed, and
    /// a lost node or a cluster in the middle of a failover is ridden
    /// through within the call's window.
    pub(super) async fn query<T: FromRedisValue>(
        &self,
        call: &Call,
        cmd: &redis::Cmd,
        pinned: Option<&str>,
        replay: Replay,
    ) -> Result<T, CacheError> {
        let (routing, slot) = match pinned {
            Some(_) => (Routing::Pinned, None),
            None => (Routing::Cluster, slot::command_slot(cmd)),
        };
        let mut tried = Tried::default();
        let mut ask: Option<Arc<Node>> = None;
        loop {
            let asking = ask.is_some();
            let failure = match ask.take().or_else(|| self.route(pinned, slot)) {
                Some(node) => match node.run::<T>(call, cmd, asking).await {
                    Ok(v) => return Ok(v),
                    Err(failure) => failure,
                },
                None => match pinned {
                    Some(addr) => Failure::Reply(CacheError::Unavailable(format!(
                        "{addr} is not a master of the cluster"
                    ))),
                    None => Failure::NotNow(match slot {
                        Some(slot) => format!("no master serves slot {slot}"),
                        None => "the cluster has no master".to_owned(),
                    }),
                },
            };
            match decide(
                failure,
                &mut tried,
                routing,
                replay.allows(cmd),
                Instant::now(),
                call.wait_until,
            ) {
                Next::Retry => {}
                Next::FollowMoved { slot, addr } => {
                    tracing::debug!(slot, to = %addr, "MOVED");
                    redirected("MOVED", &addr);
                    self.state.moved(slot, &addr);
                    self.state.ctx.want_topology();
                }
                Next::FollowAsk { addr } => {
                    redirected("ASK", &addr);
                    ask = Some(self.state.node_for_ask(&addr));
                }
                Next::Pause { pause, reread, .. } => {
                    if reread {
                        self.state.ctx.want_topology();
                    }
                    tokio::time::sleep(pause).await;
                }
                Next::GiveUp(e) => return Err(e),
            }
        }
    }

    fn route(&self, pinned: Option<&str>, slot: Option<u16>) -> Option<Arc<Node>> {
        let topology = self.topology();
        match (pinned, slot) {
            (Some(addr), _) => topology.node(addr),
            (None, Some(slot)) => topology.master_for(slot),
            (None, None) => topology.any(),
        }
        .cloned()
    }
}

/// Counts a redirect followed, by kind and the node it sends to.
fn redirected(kind: &'static str, to: &str) {
    crate::otel::count(crate::otel::REDIRECTS, || {
        vec![
            ("redirect.kind", kind.into()),
            ("azure_redis.node", to.to_owned().into()),
        ]
    });
}

/// Reads the topology whenever someone asks (`Context::want_topology`),
/// a little later at random, then rests [`REFRESH_INTERVAL`] (plus jitter);
/// while invocations wait on a node that is down, it keeps reading at that
/// pace. Ends with the cluster.
fn spawn_refresher(state: &Arc<ClusterState>) {
    let ctx = state.ctx.clone();
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            ctx.refresh_wanted.notified().await;
            tokio::time::sleep(jitter(REFRESH_JITTER / 2)).await;
            let Some(state) = weak.upgrade() else { return };
            let _ = state.read(&Call::no_wait(&ctx)).await;
            let waiting = state
                .topology
                .load()
                .shards
                .iter()
                .any(|s| s.node.has_waiters() && !s.node.is_connected());
            drop(state);
            tokio::time::sleep(REFRESH_INTERVAL + jitter(REFRESH_JITTER)).await;
            if waiting {
                ctx.refresh_wanted.notify_one();
            }
        }
    });
}

/// A random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    max.mul_f64(fastrand::f64())
}

impl ClusterState {
    /// Reads `CLUSTER SLOTS` from a master (connected ones first), or from
    /// the seed when none answers, and installs the topology it gives.
    async fn read(&self, call: &Call) -> Result<(), CacheError> {
        let _one_at_a_time = self.reading.lock().await;
        let started = Instant::now();
        let current = self.topology.load_full();
        let mut candidates: Vec<&Arc<Node>> = current.shards.iter().map(|s| &s.node).collect();
        candidates.sort_by_key(|n| !n.is_connected());
        candidates.push(&self.seed);
        let mut last_err = CacheError::Unavailable("the cluster has no reachable node".into());
        for node in candidates {
            if Instant::now() >= call.deadline {
                break;
            }
            let reply = node
                .run::<redis::Value>(call, redis::cmd("CLUSTER").arg("SLOTS"), false)
                .await;
            match reply
                .map_err(Failure::into_cache_error)
                .and_then(|v| parse_slots(&v, &node.host))
            {
                Ok(ranges) if !ranges.is_empty() => {
                    self.install(&ranges, started);
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    *self.read_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Ok(());
                }
                Ok(_) => last_err = CacheError::Unavailable(format!("{} reports no slots", node.addr)),
                Err(e) => last_err = e,
            }
        }
        let text = last_err.to_string();
        let mut logged = self.read_error.lock().unwrap_or_else(|p| p.into_inner());
        if logged.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, "could not read the cluster's topology; trying again when asked");
            *logged = Some(text);
        }
        Err(last_err)
    }

    /// Installs the topology a read started at `started` gave: nodes of
    /// masters that stay are kept, `MOVED` patches made since are applied
    /// on top, masters that left are retired, and the seed's connection is
    /// closed unless it is a master's.
    fn install(&self, ranges: &[topology::SlotRange], started: Instant) {
        let new_node = |host: &str, port: u16| self.new_node(host, port);
        let patches: Vec<(u16, String)> = {
            let mut patches = self.patches.lock().unwrap_or_else(|p| p.into_inner());
            patches.retain(|(at, _, _)| *at >= started);
            patches.iter().map(|(_, slot, addr)| (*slot, addr.clone())).collect()
        };
        let mut next = None;
        let previous = self.topology.rcu(|latest| {
            let built = Arc::new(Topology::from_read(ranges, latest, &[&self.seed], &patches, &new_node));
            next = Some(built.clone());
            built
        });
        let Some(next) = next else { return };
        self.adopt_seed(&next);
        let leaving = previous
            .shards
            .iter()
            .map(|s| &s.node)
            .filter(|n| next.node(&n.addr).is_none_or(|m| !Arc::ptr_eq(m, n)));
        for node in leaving {
            if !Arc::ptr_eq(node, &self.seed) {
                node.retire("not a master of the cluster (any more)");
            }
        }
        if next.node(&self.seed.addr).is_none_or(|m| !Arc::ptr_eq(m, &self.seed)) {
            self.seed
                .close("the configured endpoint is not a master: one connection per master");
        }
        if next.differs(&previous) {
            tracing::info!(masters = next.shards.len(), layout = %next.describe(), "cluster topology");
        }
    }

    /// When the configured endpoint is itself a master (same IP address and
    /// port as announced), its connection becomes that master's instead of
    /// being closed and made again: one connection per master from the start.
    fn adopt_seed(&self, next: &Topology) {
        if !self.seed.is_connected() {
            return;
        }
        let same = |node: &Node| {
            node.host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| self.seed_addrs.contains(&std::net::SocketAddr::new(ip, node.port)))
        };
        let Some(master) = next
            .shards
            .iter()
            .map(|s| &s.node)
            .find(|n| !Arc::ptr_eq(n, &self.seed) && !n.is_connected() && same(n))
        else {
            return;
        };
        if let Some(live) = self.seed.take_live() {
            if master.adopt(live) {
                tracing::info!(node = %master.addr, "the configured endpoint is this master: its connection is kept as the master's");
            }
        }
    }

    /// A `MOVED` answer: the slot goes to `addr` at once, and stays there
    /// through a read that started before this.
    fn moved(&self, slot: u16, addr: &str) {
        let new_node = |host: &str, port: u16| self.new_node(host, port);
        self.patches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), slot, addr.to_owned()));
        self.topology.rcu(|t| t.patched(Some(slot), addr, &new_node));
    }

    /// The node at `addr`, for an `ASK` answer (a master importing a slot).
    fn node_for_ask(&self, addr: &str) -> Arc<Node> {
        if let Some(node) = self.topology.load().node(addr) {
            return node.clone();
        }
        let new_node = |host: &str, port: u16| self.new_node(host, port);
        self.topology.rcu(|t| t.patched(None, addr, &new_node));
        let topology = self.topology.load();
        topology.node(addr).cloned().unwrap_or_else(|| {
            let (host, port) = split_addr(addr).unwrap_or((addr, 0));
            self.new_node(host, port)
        })
    }

    /// A node of this cluster at `host:port`, not yet connected.
    fn new_node(&self, host: &str, port: u16) -> Arc<Node> {
        Node::new(self.ctx.clone(), host, port)
    }
}
