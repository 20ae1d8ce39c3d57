//! What each node says about the cluster (`CLUSTER NODES`, `CLUSTER INFO`,
//! `INFO replication`, `CLUSTER SLOTS`), asked on the plain admin ports.

use crate::redis_server::RedisAdmin;
use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Limits of the cluster's admin connections: forming the cluster, a
/// `MIGRATE` batch or thousands of pipelined `SETSLOT`s can take seconds on
/// a busy 2-core machine, and each operation's deadline is the wait on the
/// state that follows it.
const ADMIN_CONNECT: Duration = Duration::from_secs(5);
const ADMIN_RESPONSE: Duration = Duration::from_secs(15);

/// A new admin connection to a node, with the limits above.
pub(super) async fn admin_conn(admin: &RedisAdmin) -> anyhow::Result<MultiplexedConnection> {
    admin.connection_with_timeouts(ADMIN_CONNECT, ADMIN_RESPONSE).await
}

/// One command on a new [`admin_conn`].
pub(super) async fn admin_cmd<T: FromRedisValue>(admin: &RedisAdmin, cmd: &redis::Cmd) -> anyhow::Result<T> {
    let mut conn = admin_conn(admin).await?;
    Ok(cmd.query_async(&mut conn).await?)
}

/// One line of `CLUSTER NODES`: one node as the asking node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeLine {
    pub(super) id: String,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`, …
    pub(super) flags: Vec<String>,
    /// The master's id, for a replica.
    pub(super) master_id: Option<String>,
    /// Whether the asking node's bus link to this node is up.
    pub(super) connected: bool,
    /// Slot ranges owned.
    pub(super) slots: Vec<RangeInclusive<u16>>,
    /// Whether slots are being imported or migrated (`[slot-<-id]`,
    /// `[slot->-id]`), as only the two nodes involved show.
    pub(super) migrating: bool,
}

impl NodeLine {
    /// Parses `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch>
    /// <link> <slot>...`; `None` for a short or blank line.
    pub(super) fn parse(line: &str) -> Option<NodeLine> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        let mut slots = Vec::new();
        let mut migrating = false;
        for s in &f[8..] {
            if s.starts_with('[') {
                migrating = true;
            } else if let Some((lo, hi)) = s.split_once('-') {
                slots.push(lo.parse().ok()?..=hi.parse().ok()?);
            } else {
                let slot = s.parse().ok()?;
                slots.push(slot..=slot);
            }
        }
        Some(NodeLine {
            id: f[0].to_string(),
            flags: f[2].split(',').map(str::to_string).collect(),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            connected: f[7] == "connected",
            slots,
            migrating,
        })
    }

    pub(super) fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub(super) fn is_master(&self) -> bool {
        self.has("master")
    }

    /// What every node must agree on: role, master, slots, failure.
    pub(super) fn agreed(&self) -> (bool, Option<&str>, &[RangeInclusive<u16>], bool) {
        (
            self.is_master(),
            self.master_id.as_deref(),
            &self.slots,
            self.has("fail"),
        )
    }
}

/// Parses a whole `CLUSTER NODES` reply.
pub(super) fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines().filter_map(NodeLine::parse).collect()
}

/// The `name:value` fields of an `INFO` or `CLUSTER INFO` reply.
pub(super) fn info_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One node's answers to `CLUSTER INFO`, `CLUSTER NODES` and
/// `INFO replication`, asked on one admin connection.
#[derive(Debug, Clone)]
pub(super) struct Report {
    pub(super) info: BTreeMap<String, String>,
    pub(super) nodes: Vec<NodeLine>,
    pub(super) replication: BTreeMap<String, String>,
    /// The ids of the nodes `CLUSTER SLOTS` names: what a client discovers.
    pub(super) slot_ids: BTreeSet<String>,
}

impl Report {
    pub(super) async fn fetch(admin: &RedisAdmin) -> anyhow::Result<Report> {
        let mut conn = admin_conn(admin).await?;
        let (info, nodes, replication, slots): (String, String, String, Value) = redis::pipe()
            .cmd("CLUSTER")
            .arg("INFO")
            .cmd("CLUSTER")
            .arg("NODES")
            .cmd("INFO")
            .arg("replication")
            .cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .with_context(|| format!("CLUSTER INFO/NODES/SLOTS on admin port {}", admin.port()))?;
        Ok(Report {
            info: info_fields(&info),
            nodes: parse_nodes(&nodes),
            replication: info_fields(&replication),
            slot_ids: slot_ids(&slots),
        })
    }

    /// The ids `CLUSTER SLOTS` should name by this node's `CLUSTER NODES`:
    /// masters owning slots and their healthy replicas. Redis 7.0 leaves out
    /// a replica until it has replicated something (offset above 0), so
    /// this is how a wait knows clients can see every replica.
    pub(super) fn expected_slot_ids(&self) -> BTreeSet<String> {
        let masters: BTreeSet<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_master() && !n.slots.is_empty())
            .map(|n| n.id.as_str())
            .collect();
        let replicas = self.nodes.iter().filter(|n| {
            n.has("slave") && !n.has("fail") && n.master_id.as_deref().is_some_and(|m| masters.contains(m))
        });
        let replicas: Vec<&str> = replicas.map(|n| n.id.as_str()).collect();
        masters.iter().chain(&replicas).map(|id| id.to_string()).collect()
    }

    /// The line of the node that answered.
    pub(super) fn myself(&self) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.has("myself"))
    }

    pub(super) fn line(&self, id: &str) -> Option<&NodeLine> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// `INFO replication`'s `master_repl_offset` (on a replica: how far it
    /// has applied its master's stream).
    pub(super) fn repl_offset(&self) -> Option<u64> {
        self.replication.get("master_repl_offset")?.parse().ok()
    }

    /// A replica whose link to its master is up and not in a full sync.
    pub(super) fn replica_in_sync(&self) -> bool {
        self.replication.get("role").map(String::as_str) == Some("slave")
            && self.replication.get("master_link_status").map(String::as_str) == Some("up")
            && self.replication.get("master_sync_in_progress").map(String::as_str) == Some("0")
    }
}

/// The node ids in a `CLUSTER SLOTS` reply (`[[start, end, [ip, port, id,
/// …], …], …]`).
fn slot_ids(reply: &Value) -> BTreeSet<String> {
    slot_nodes(reply).into_iter().map(|n| n.id).collect()
}

/// One node as a plain client is told about it in `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedNode {
    /// The node id.
    pub id: String,
    /// The port `CLUSTER SLOTS` names to a plain client.
    pub port: u16,
}

/// The nodes of a `CLUSTER SLOTS` reply (`[[start, end, [ip, port, id, …],
/// …], …]`), in order.
pub(super) fn slot_nodes(reply: &Value) -> Vec<AnnouncedNode> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let nodes = ranges.iter().filter_map(|r| match r {
        Value::Array(fields) => Some(fields.iter().skip(2)),
        _ => None,
    });
    nodes
        .flatten()
        .filter_map(|node| match node {
            Value::Array(f) => match (f.get(1), f.get(2)) {
                (Some(Value::Int(port)), Some(Value::BulkString(id))) => Some(AnnouncedNode {
                    id: String::from_utf8_lossy(id).into_owned(),
                    port: u16::try_from(*port).ok()?,
                }),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let text = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002,cache.redis.test master - 0 1426238316232 2 connected 5461-10922 [5461->-e7d1]
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 16000
9bbb 127.0.0.1:30003@31003 master,fail - 1426238316232 0 3 disconnected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].master_id.as_deref(), Some("e7d1"));
        assert!(nodes[0].has("slave") && nodes[0].connected && nodes[0].slots.is_empty());
        assert_eq!(nodes[1].slots, vec![5461..=10922]);
        assert!(nodes[1].migrating && !nodes[2].migrating);
        assert_eq!(nodes[2].slots, vec![0..=5460, 16000..=16000]);
        assert!(nodes[2].has("myself") && nodes[2].is_master());
        assert!(nodes[3].has("fail") && !nodes[3].connected);
    }

    #[test]
    fn reads_info_fields() {
        let f = info_fields("# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n");
        assert_eq!(f["role"], "slave");
        assert_eq!(f["master_link_status"], "up");
    }
}
