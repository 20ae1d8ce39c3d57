//! Which master owns which slots: read from `CLUSTER SLOTS`, patched by
//! `MOVED`, and rebuilt from a new read without losing a patch made while
//! the read was under way. Pure: the nodes come from a `new_node` function,
//! and nothing here connects.

use crate::cache::error::CacheError;
use crate::cache::node::Node;
use crate::cache::slot::SLOTS;
use std::sync::Arc;

/// No master owns the slot (in `by_slot`).
const NO_SHARD: u16 = u16::MAX;

/// Makes the [`Node`] of a master first seen at `host:port`.
pub(super) type NewNode<'a> = &'a dyn Fn(&str, u16) -> Arc<Node>;

/// One master and the slots it owns.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) node: Arc<Node>,
    /// Inclusive slot ranges, ascending.
    pub(crate) slots: Vec<(u16, u16)>,
}

/// Masters and the slot map, replaced whole on each change.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) shards: Vec<Shard>,
    by_slot: Vec<u16>,
}

impl Topology {
    /// No masters: before the first read.
    pub(super) fn empty() -> Self {
        Self::new(Vec::new())
    }

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

    /// The master at `addr`, if it is one.
    pub(super) fn node(&self, addr: &str) -> Option<&Arc<Node>> {
        self.shards.iter().map(|s| &s.node).find(|n| n.addr == addr)
    }

    /// A copy where `slot` belongs to the master at `addr` (added without
    /// slots if unknown), as a `MOVED` answer says; `slot: None` only adds
    /// the master (`ASK`).
    pub(super) fn patched(&self, slot: Option<u16>, addr: &str, new_node: NewNode<'_>) -> Topology {
        let mut shards = self.shards.clone();
        let i = position_or_add(&mut shards, addr, new_node);
        let mut by_slot = self.by_slot.clone();
        if let Some(slot) = slot.filter(|&s| s < SLOTS) {
            by_slot[usize::from(slot)] = i as u16;
            // The slot list says the same (Health, probe tags).
            for shard in shards.iter_mut() {
                remove_slot(&mut shard.slots, slot);
            }
            shards[i].slots.push((slot, slot));
            shards[i].slots.sort_unstable();
        }
        Topology { shards, by_slot }
    }

    /// The topology a `CLUSTER SLOTS` read gives, keeping the nodes (and
    /// their connections) of masters already known in `latest` or
    /// `known` (the configured endpoint), then applying the `MOVED`
    /// patches made since the read was sent: a patch is never lost to a
    /// read that started before it.
    pub(super) fn from_read(
        ranges: &[SlotRange],
        latest: &Topology,
        known: &[&Arc<Node>],
        patches: &[(u16, String)],
        new_node: NewNode<'_>,
    ) -> Topology {
        let reuse = |host: &str, port: u16| {
            let addr = format!("{host}:{port}");
            latest
                .node(&addr)
                .or_else(|| known.iter().copied().find(|n| n.addr == addr && !n.is_retired()))
                .cloned()
                .unwrap_or_else(|| new_node(host, port))
        };
        let mut shards: Vec<Shard> = Vec::new();
        for range in ranges {
            let addr = format!("{}:{}", range.host, range.port);
            match shards.iter_mut().find(|s| s.node.addr == addr) {
                Some(shard) => shard.slots.push((range.start, range.end)),
                None => shards.push(Shard {
                    node: reuse(&range.host, range.port),
                    slots: vec![(range.start, range.end)],
                }),
            }
        }
        for shard in &mut shards {
            shard.slots.sort_unstable();
        }
        shards.sort_by_key(|s| s.slots.first().copied());
        let mut topology = Topology::new(shards);
        for (slot, addr) in patches {
            let by_addr = |host: &str, port: u16| reuse(host, port);
            topology = topology.patched(Some(*slot), addr, &by_addr);
        }
        topology
    }

    /// Whether the masters or their slots differ from `other`'s.
    pub(super) fn differs(&self, other: &Topology) -> bool {
        self.shards.len() != other.shards.len()
            || self
                .shards
                .iter()
                .zip(&other.shards)
                .any(|(a, b)| a.node.addr != b.node.addr || a.slots != b.slots)
    }

    /// `addr (slots), ...` for the log.
    pub(super) fn describe(&self) -> String {
        self.shards
            .iter()
            .map(|s| format!("{} ({})", s.node.addr, fmt_ranges(&s.slots)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The index of the shard at `addr` in `shards`, added without slots if
/// absent.
fn position_or_add(shards: &mut Vec<Shard>, addr: &str, new_node: NewNode<'_>) -> usize {
    if let Some(i) = shards.iter().position(|s| s.node.addr == addr) {
        return i;
    }
    let (host, port) = split_addr(addr).unwrap_or((addr, 0));
    shards.push(Shard {
        node: new_node(host, port),
        slots: Vec::new(),
    });
    shards.len() - 1
}

/// Removes one slot from inclusive ranges, splitting a range if needed.
fn remove_slot(ranges: &mut Vec<(u16, u16)>, slot: u16) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(lo, hi) in ranges.iter() {
        if slot < lo || slot > hi {
            out.push((lo, hi));
            continue;
        }
        if lo < slot {
            out.push((lo, slot - 1));
        }
        if slot < hi {
            out.push((slot + 1, hi));
        }
    }
    *ranges = out;
}

/// `host:port` (the host may be an IPv6 address, bracketed or not) split in two.
pub(super) fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']'), port.parse().ok()?))
}

/// Slot ranges as `0-5460,10923-16383`.
pub(crate) fn fmt_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
        .collect::<Vec<_>>()
        .join(",")
}

/// One entry of `CLUSTER SLOTS`: a slot range and its master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotRange {
    pub(super) start: u16,
    pub(super) end: u16,
    pub(super) host: String,
    pub(super) port: u16,
}

/// Parses `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`.
/// An empty host means the node that answered (`asked`); a `?` host (no
/// known endpoint) is skipped.
pub(super) fn parse_slots(reply: &redis::Value, asked: &str) -> Result<Vec<SlotRange>, CacheError> {
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
    use crate::cache::test_context;
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
        let reversed = Value::Array(vec![Value::Array(vec![
            Value::Int(9),
            Value::Int(1),
            node("h", 1, "a"),
        ])]);
        assert!(parse_slots(&reversed, "x").is_err());
    }

    fn range(start: u16, end: u16, port: u16) -> SlotRange {
        SlotRange {
            start,
            end,
            host: "10.0.0.1".into(),
            port,
        }
    }

    /// Ranges of one master are grouped; the slot map answers for every
    /// slot; a MOVED patch moves one slot (and adds an unknown master);
    /// a new read keeps the node, and so the connection, of a master that
    /// stays.
    #[test]
    fn reads_and_patches() {
        let ctx = test_context();
        let new_node = |host: &str, port: u16| Node::new(ctx.clone(), host, port);
        let t = Topology::from_read(
            &[range(0, 99, 8500), range(100, 16283, 8501), range(16284, 16383, 8500)],
            &Topology::empty(),
            &[],
            &[],
            &new_node,
        );
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.shards[0].slots, vec![(0, 99), (16284, 16383)]);
        assert_eq!(t.master_for(16383).unwrap().addr, "10.0.0.1:8500");
        assert_eq!(t.master_for(100).unwrap().addr, "10.0.0.1:8501");
        let first = t.master_for(0).unwrap().clone();

        let t = t.patched(Some(5), "10.0.0.2:8509", &new_node);
        assert_eq!(t.master_for(5).unwrap().addr, "10.0.0.2:8509");
        assert_eq!(t.master_for(4).unwrap().addr, "10.0.0.1:8500");
        assert_eq!(t.shards[0].slots, vec![(0, 4), (6, 99), (16284, 16383)]);
        assert_eq!(t.node("10.0.0.2:8509").unwrap().addr, "10.0.0.2:8509");

        let next = Topology::from_read(&[range(0, 16383, 8500)], &t, &[], &[], &new_node);
        assert_eq!(next.shards.len(), 1);
        assert!(Arc::ptr_eq(next.master_for(5).unwrap(), &first));
        assert_eq!(fmt_ranges(&next.shards[0].slots), "0-16383");
        assert!(next.differs(&t));
        assert!(!next.differs(&Topology::from_read(
            &[range(0, 16383, 8500)],
            &next,
            &[],
            &[],
            &new_node
        )));
    }

    /// A MOVED patch made while a read was under way survives that read,
    /// on the node already made for its address (one node, so one
    /// connection, per master); the configured endpoint's node is reused
    /// when it is announced as a master.
    #[test]
    fn a_patch_made_during_a_read_survives_it() {
        let ctx = test_context();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let new_node = |host: &str, port: u16| {
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Node::new(ctx.clone(), host, port)
        };
        let before = Topology::from_read(&[range(0, 16383, 8500)], &Topology::empty(), &[], &[], &new_node);
        // During the read: slot 42 MOVED to a master the read does not know yet.
        let during = before.patched(Some(42), "10.0.0.2:8501", &new_node);
        let moved_to = during.master_for(42).unwrap().clone();
        let read = [range(0, 16383, 8500)];
        let after = Topology::from_read(&read, &during, &[], &[(42, "10.0.0.2:8501".into())], &new_node);
        assert_eq!(after.master_for(42).unwrap().addr, "10.0.0.2:8501");
        assert!(
            Arc::ptr_eq(after.master_for(42).unwrap(), &moved_to),
            "no second node for the master"
        );
        assert_eq!(after.master_for(41).unwrap().addr, "10.0.0.1:8500");
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Without the patch, the read's own answer stands.
        let plain = Topology::from_read(&read, &during, &[], &[], &new_node);
        assert_eq!(plain.master_for(42).unwrap().addr, "10.0.0.1:8500");
        // The configured endpoint, announced as a master, is that master.
        let seed = Node::new(ctx.clone(), "10.0.0.3", 8502);
        let with_seed = Topology::from_read(
            &[SlotRange {
                start: 0,
                end: 16383,
                host: "10.0.0.3".into(),
                port: 8502,
            }],
            &Topology::empty(),
            &[&seed],
            &[],
            &new_node,
        );
        assert!(Arc::ptr_eq(with_seed.master_for(0).unwrap(), &seed));
    }
}
