//! A clustered cache: which master owns which slots, and reading that again
//! when the cluster changes.
//!
//! The topology comes from `CLUSTER SLOTS`; each master is a [`Node`] with
//! one multiplexed connection, made on first use. A `MOVED` answer patches
//! the one slot at once (the command goes straight to the new owner) and
//! reads the whole topology again in the background; so do a lost node and
//! the errors of a failover (`CLUSTERDOWN`, `READONLY`, ...). A master that
//! leaves the topology (demoted, or gone) has its connection closed, so the
//! process keeps exactly one connection per master.

use super::node::Node;
use super::slot::SLOTS;
use super::{CacheError, Credentials, Target};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// No master owns the slot (in `by_slot`).
const NO_SHARD: u16 = u16::MAX;

/// Topology reads in the background come at most this often.
pub(super) const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// One master and the slots it owns.
#[derive(Debug, Clone)]
pub(super) struct Shard {
    pub(super) node: Arc<Node>,
    /// Inclusive slot ranges, ascending.
    pub(super) slots: Vec<(u16, u16)>,
}

/// Masters and the slot map, replaced whole on each change.
#[derive(Debug)]
pub(super) struct Topology {
    pub(super) shards: Vec<Shard>,
    by_slot: Vec<u16>,
}

impl Topology {
    fn new(shards: Vec<Shard>) -> Self {
        let mut by_slot = vec![NO_SHARD; usize::from(SLOTS)];
        for (i, shard) in shards.iter().enumerate() {
            for &(lo, hi) in &shard.slots {
                for slot in lo..=hi.min(SLOTS - 1) {
                    by_slot[usize::from(slot)] = i as u16;
                }
            }
        }
        Self { shards, by_slot }
    }

    /// The master that owns `slot`.
    pub(super) fn master_for(&self, slot: u16) -> Option<&Arc<Node>> {
        let i = *self.by_slot.get(usize::from(slot))?;
        self.shards.get(usize::from(i)).map(|s| &s.node)
    }

    /// A master for a command without a key: one already connected if
    /// there is one, so such commands make no connection of their own.
    pub(super) fn any(&self) -> Option<&Arc<Node>> {
        let with_slots = || self.shards.iter().filter(|s| !s.slots.is_empty());
        with_slots()
            .find(|s| s.node.is_connected())
            .or_else(|| with_slots().next())
            .map(|s| &s.node)
    }

    fn node(&self, addr: &str) -> Option<&Arc<Node>> {
        self.shards.iter().map(|s| &s.node).find(|n| n.addr == addr)
    }

    /// A copy where `slot` belongs to the master at `addr` (added without
    /// slots if unknown), as a `MOVED` answer says; `slot: None` only adds
    /// the master (`ASK`).
    fn patched(&self, slot: Option<u16>, addr: &str) -> Topology {
        let mut shards = self.shards.clone();
        let i = match shards.iter().position(|s| s.node.addr == addr) {
            Some(i) => i,
            None => {
                let (host, port) = split_addr(addr).unwrap_or((addr, 0));
                shards.push(Shard {
                    node: Arc::new(Node::new(host, port)),
                    slots: Vec::new(),
                });
                shards.len() - 1
            }
        };
        let mut by_slot = self.by_slot.clone();
        if let Some(slot) = slot.filter(|&s| s < SLOTS) {
            by_slot[usize::from(slot)] = i as u16;
        }
        Topology { shards, by_slot }
    }
}

/// `host:port` (the host may be an IPv6 address) split in two.
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']'), port.parse().ok()?))
}

/// A clustered cache's shared state.
pub(super) struct Cluster {
    pub(super) topology: ArcSwap<Topology>,
    /// When the topology was last read; held while reading it, so one read
    /// runs at a time.
    refreshed_at: tokio::sync::Mutex<Option<Instant>>,
    /// Topology reads that succeeded.
    pub(super) refreshes: AtomicU64,
    /// The configured endpoint's addresses: when a master is announced at
    /// one of them, it is the same server, and the connection made to read
    /// the topology becomes that master's.
    seed_addrs: Vec<std::net::SocketAddr>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("masters", &self.topology.load().shards.len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Reads the topology through `seed` (the configured endpoint).
    pub(super) async fn discover(
        target: &Target,
        creds: &Credentials<'_>,
        seed: &Arc<Node>,
        deadline: Instant,
    ) -> Result<Cluster, CacheError> {
        let lookup = tokio::net::lookup_host((seed.host.as_str(), seed.port));
        let seed_addrs = match tokio::time::timeout(target.deadlines.connect, lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        };
        let cluster = Cluster {
            topology: ArcSwap::from_pointee(Topology::new(Vec::new())),
            refreshed_at: tokio::sync::Mutex::new(None),
            refreshes: AtomicU64::new(0),
            seed_addrs,
        };
        cluster.refresh(target, creds, seed, deadline, Instant::now()).await?;
        Ok(cluster)
    }

    /// Whether a read of the topology is under way or came less than
    /// [`REFRESH_INTERVAL`] ago: then asking for another is pointless.
    pub(super) fn refresh_is_fresh(&self) -> bool {
        match self.refreshed_at.try_lock() {
            Err(_) => true,
            Ok(at) => at.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL),
        }
    }

    /// Reads `CLUSTER SLOTS` from a master (connected ones first), or from
    /// `seed` when none answers, and replaces the topology. Skipped when a
    /// read finished after `asked_at`: that one already saw the change.
    pub(super) async fn refresh(
        &self,
        target: &Target,
        creds: &Credentials<'_>,
        seed: &Arc<Node>,
        deadline: Instant,
        asked_at: Instant,
    ) -> Result<(), CacheError> {
        let mut refreshed_at = self.refreshed_at.lock().await;
        if refreshed_at.is_some_and(|at| at > asked_at) {
            return Ok(());
        }
        let current = self.topology.load_full();
        let mut candidates: Vec<&Arc<Node>> = current.shards.iter().map(|s| &s.node).collect();
        candidates.sort_by_key(|n| !n.is_connected());
        candidates.push(seed);
        let mut last_err = CacheError::Unavailable("the cluster has no reachable node".into());
        for node in candidates {
            if Instant::now() >= deadline {
                break;
            }
            let reply = node
                .run::<redis::Value>(target, creds, redis::cmd("CLUSTER").arg("SLOTS"), deadline, false)
                .await;
            match reply
                .map_err(super::node::Failure::into_cache_error)
                .and_then(|v| parse_slots(&v, &node.host))
            {
                Ok(ranges) if !ranges.is_empty() => {
                    self.replace(&current, ranges, seed);
                    *refreshed_at = Some(Instant::now());
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(_) => last_err = CacheError::Unavailable(format!("{} reports no slots", node.addr)),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Installs a topology built from `ranges`, keeping the nodes (and
    /// their connections) of masters that stay, and closing the others.
    fn replace(&self, current: &Topology, ranges: Vec<SlotRange>, seed: &Arc<Node>) {
        let mut known: HashMap<&str, &Arc<Node>> =
            current.shards.iter().map(|s| (s.node.addr.as_str(), &s.node)).collect();
        known.entry(seed.addr.as_str()).or_insert(seed);
        let mut shards: Vec<Shard> = Vec::new();
        for range in ranges {
            let addr = format!("{}:{}", range.host, range.port);
            match shards.iter_mut().find(|s| s.node.addr == addr) {
                Some(shard) => shard.slots.push((range.start, range.end)),
                None => shards.push(Shard {
                    node: known
                        .get(addr.as_str())
                        .map_or_else(|| Arc::new(Node::new(&range.host, range.port)), |n| Arc::clone(n)),
                    slots: vec![(range.start, range.end)],
                }),
            }
        }
        for shard in &mut shards {
            shard.slots.sort_unstable();
        }
        shards.sort_by_key(|s| s.slots.first().copied());
        let next = Topology::new(shards);
        self.adopt_seed(&next, seed);
        let changed = current.shards.len() != next.shards.len()
            || current
                .shards
                .iter()
                .zip(&next.shards)
                .any(|(a, b)| a.node.addr != b.node.addr || a.slots != b.slots);
        // Masters that left the topology, and the seed once the masters are
        // known (unless it is one of them): one connection per master.
        let leaving = current
            .shards
            .iter()
            .map(|s| &s.node)
            .chain(std::iter::once(seed))
            .filter(|n| next.node(&n.addr).is_none());
        for node in leaving {
            node.close("not a master of the cluster (any more)");
        }
        if changed {
            let masters: Vec<String> = next
                .shards
                .iter()
                .map(|s| format!("{} ({})", s.node.addr, fmt_ranges(&s.slots)))
                .collect();
            tracing::info!(masters = next.shards.len(), layout = %masters.join(", "), "cluster topology");
        }
        self.topology.store(Arc::new(next));
    }

    /// When the configured endpoint is itself a master (same IP address and
    /// port as announced), its connection becomes that master's instead of
    /// being closed and made again: one connection per master from the start.
    fn adopt_seed(&self, next: &Topology, seed: &Arc<Node>) {
        if !seed.is_connected() {
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
            .find(|n| !Arc::ptr_eq(n, seed) && !n.is_connected() && same(n))
        else {
            return;
        };
        if let Some(live) = seed.take_live() {
            if master.adopt(live) {
                tracing::info!(node = %master.addr, "the configured endpoint is this master: its connection is kept as the master's");
            }
        }
    }

    /// A `MOVED` answer: the slot goes to `addr` at once.
    pub(super) fn moved(&self, slot: u16, addr: &str) {
        self.topology.rcu(|t| t.patched(Some(slot), addr));
    }

    /// The node at `addr`, for an `ASK` answer (a master importing a slot).
    pub(super) fn node_for_ask(&self, addr: &str) -> Arc<Node> {
        if let Some(node) = self.topology.load().node(addr) {
            return node.clone();
        }
        self.topology.rcu(|t| t.patched(None, addr));
        let topology = self.topology.load();
        topology.node(addr).cloned().unwrap_or_else(|| {
            let (host, port) = split_addr(addr).unwrap_or((addr, 0));
            Arc::new(Node::new(host, port))
        })
    }
}

/// Slot ranges as `0-5460,10923-16383`.
pub(super) fn fmt_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
        .collect::<Vec<_>>()
        .join(",")
}

/// One entry of `CLUSTER SLOTS`: a slot range and its master.
#[derive(Debug, PartialEq, Eq)]
struct SlotRange {
    start: u16,
    end: u16,
    host: String,
    port: u16,
}

/// Parses `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`.
/// An empty host means the node that answered (`asked`); a `?` host (no
/// known endpoint) is skipped.
fn parse_slots(reply: &redis::Value, asked: &str) -> Result<Vec<SlotRange>, CacheError> {
    use redis::Value;
    let bad = |why: &str| CacheError::Command(format!("unexpected CLUSTER SLOTS reply: {why}"));
    let Value::Array(entries) = reply else {
        return Err(bad("not an array"));
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad("an entry is not an array"));
        };
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (fields.first().and_then(int), fields.get(1).and_then(int), fields.get(2))
        else {
            return Err(bad("an entry has no range and master"));
        };
        let (Some(host), Some(port)) = (master.first().and_then(text), master.get(1).and_then(int)) else {
            return Err(bad("a master has no host and port"));
        };
        if host == "?" {
            continue;
        }
        let host = if host.is_empty() { asked.to_owned() } else { host };
        let (Ok(start), Ok(end), Ok(port)) = (u16::try_from(start), u16::try_from(end), u16::try_from(port)) else {
            return Err(bad("a number is out of range"));
        };
        if start > end || end >= SLOTS {
            return Err(bad("a slot range is out of order or out of range"));
        }
        ranges.push(SlotRange { start, end, host, port });
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn node(host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(host.into()),
            Value::Int(port),
            Value::BulkString(id.into()),
        ])
    }

    /// A real reply's shape: ranges, masters first, replicas after; an
    /// empty host is the node asked; `?` is skipped.
    #[test]
    fn parses_cluster_slots() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 8500, "a"),
                node("10.0.0.4", 8503, "d"),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("", 8501, "b")]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("?", 8502, "c")]),
        ]);
        let ranges = parse_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(
            ranges,
            vec![
                SlotRange {
                    start: 0,
                    end: 5460,
                    host: "10.0.0.1".into(),
                    port: 8500
                },
                SlotRange {
                    start: 5461,
                    end: 10922,
                    host: "10.0.0.9".into(),
                    port: 8501
                },
            ]
        );
        assert!(parse_slots(&Value::Nil, "x").is_err());
        assert!(parse_slots(
            &Value::Array(vec![Value::Array(vec![
                Value::Int(9),
                Value::Int(1),
                node("h", 1, "a")
            ])]),
            "x"
        )
        .is_err());
    }

    /// Ranges of one master are grouped; the slot map answers for every slot.
    #[test]
    fn topology_maps_every_slot() {
        let cluster = Cluster {
            topology: ArcSwap::from_pointee(Topology::new(Vec::new())),
            refreshed_at: tokio::sync::Mutex::new(None),
            refreshes: AtomicU64::new(0),
            seed_addrs: Vec::new(),
        };
        let seed = Arc::new(Node::new("cache.example", 10000));
        let range = |start, end, port| SlotRange {
            start,
            end,
            host: "10.0.0.1".into(),
            port,
        };
        let current = cluster.topology.load_full();
        cluster.replace(
            &current,
            vec![range(0, 99, 8500), range(100, 16283, 8501), range(16284, 16383, 8500)],
            &seed,
        );
        let t = cluster.topology.load();
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.shards[0].slots, vec![(0, 99), (16284, 16383)]);
        assert_eq!(t.master_for(16383).unwrap().addr, "10.0.0.1:8500");
        assert_eq!(t.master_for(100).unwrap().addr, "10.0.0.1:8501");
        let first = t.master_for(0).unwrap().clone();
        drop(t);

        // MOVED patches one slot and adds an unknown master.
        cluster.moved(5, "10.0.0.2:8509");
        let t = cluster.topology.load();
        assert_eq!(t.master_for(5).unwrap().addr, "10.0.0.2:8509");
        assert_eq!(t.master_for(4).unwrap().addr, "10.0.0.1:8500");
        drop(t);

        // A new read keeps the node (and its connection) of a master that stays.
        let current = cluster.topology.load_full();
        cluster.replace(&current, vec![range(0, 16383, 8500)], &seed);
        let t = cluster.topology.load();
        assert_eq!(t.shards.len(), 1);
        assert!(Arc::ptr_eq(t.master_for(5).unwrap(), &first));
        assert_eq!(fmt_ranges(&t.shards[0].slots), "0-16383");
    }
}
