//! The port each node is announced on to plain (non-TLS) clients, so a
//! front end on that port can stand where Azure's per-shard endpoints do.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis" (clusters announce nodes
//! by IP on per-shard ports; `CLUSTER SLOTS` and `MOVED` name them) and
//! "redis 1.8.1" on redis-server 7.0: with `tls-cluster yes` a TLS client is
//! told `cluster-announce-tls-port` and a plain client `cluster-announce-port`.
//! A front end that terminates TLS and reaches a node on its plain port is
//! such a plain client, so setting `cluster-announce-port` to the front
//! end's port makes every `CLUSTER SLOTS`, `CLUSTER SHARDS` and `MOVED` it
//! relays name the front end. The cluster bus, replication and `MIGRATE`
//! stay on the TLS ports and are not affected.

use super::settle;
use super::topology::{admin_cmd, admin_conn, slot_nodes, AnnouncedNode};
use super::RedisCluster;
use anyhow::Context;
use redis::Value;
use std::collections::BTreeMap;

impl RedisCluster {
    /// Sets `cluster-announce-port` of node `i` to `ports[i]` (one port per
    /// node, in node order) on every running node, and returns once every
    /// running node's `CLUSTER SLOTS` and `CLUSTER SHARDS`, asked by a plain
    /// client, name each serving node on its new port, `CLUSTER SHARDS`
    /// still gives each node's TLS port, and the cluster is settled (bus
    /// links up, replicas in sync).
    ///
    /// A node started again ([`RedisCluster::restart`]) announces its plain
    /// port again until this is called once more.
    pub async fn announce_client_ports(&self, ports: &[u16]) -> anyhow::Result<()> {
        anyhow::ensure!(
            ports.len() == self.len(),
            "{} ports for {} nodes",
            ports.len(),
            self.len()
        );
        for i in self.running() {
            let mut set = redis::cmd("CONFIG");
            set.arg("SET").arg("cluster-announce-port").arg(ports[i]);
            admin_cmd::<()>(&self.admin.nodes()[i], &set)
                .await
                .with_context(|| format!("CONFIG SET cluster-announce-port on node {i}"))?;
        }
        let check = || async {
            for i in self.running() {
                if let Some(why) = self.announced_wrong(i, ports).await {
                    return Some(why);
                }
            }
            None
        };
        settle::wait_for("the new client ports spreading", self.settle_timeout(), check).await?;
        self.wait_settled(self.settle_timeout()).await
    }

    /// The nodes node `asked`'s `CLUSTER SLOTS` names to a plain client, in
    /// reply order (masters and replicas of each slot range).
    pub async fn announced_nodes(&self, asked: usize) -> anyhow::Result<Vec<AnnouncedNode>> {
        let mut conn = admin_conn(&self.admin.nodes()[asked]).await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .context("CLUSTER SLOTS")?;
        Ok(slot_nodes(&reply))
    }

    /// Why node `asked` does not yet tell a plain client every serving node
    /// on its port in `ports`, or `None` when it does.
    async fn announced_wrong(&self, asked: usize, ports: &[u16]) -> Option<String> {
        let slots = match self.announced_nodes(asked).await {
            Ok(s) => s,
            Err(e) => return Some(format!("{e:#}")),
        };
        for n in &slots {
            let want = self.index_of(&n.id).map(|i| ports[i]);
            if want != Some(n.port) {
                return Some(format!(
                    "node {asked} names {} on port {} in CLUSTER SLOTS",
                    n.id, n.port
                ));
            }
        }
        let shards = match self.shard_ports(asked).await {
            Ok(s) => s,
            Err(e) => return Some(format!("{e:#}")),
        };
        for (id, (port, tls_port)) in &shards {
            let Some(i) = self.index_of(id) else {
                return Some(format!("unknown node {id}"));
            };
            if (*port, *tls_port) != (Some(ports[i]), Some(self.nodes[i].tls_port())) {
                return Some(format!(
                    "node {asked} names {id} on ports {port:?}/TLS {tls_port:?} in CLUSTER SHARDS"
                ));
            }
        }
        None
    }

    /// Each node's `port` and `tls-port` in node `asked`'s `CLUSTER SHARDS`.
    async fn shard_ports(&self, asked: usize) -> anyhow::Result<BTreeMap<String, (Option<u16>, Option<u16>)>> {
        let mut conn = admin_conn(&self.admin.nodes()[asked]).await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query_async(&mut conn)
            .await
            .context("CLUSTER SHARDS")?;
        Ok(shard_node_ports(&reply))
    }
}

/// Each node's `port` and `tls-port` in a `CLUSTER SHARDS` reply (a list
/// of maps, RESP2 flat arrays: `slots`, `nodes` → list of node maps).
fn shard_node_ports(reply: &Value) -> BTreeMap<String, (Option<u16>, Option<u16>)> {
    let mut out = BTreeMap::new();
    let Value::Array(shards) = reply else {
        return out;
    };
    for shard in shards {
        let Some(Value::Array(nodes)) = field(shard, "nodes") else {
            continue;
        };
        for node in nodes {
            let port = |name| match field(node, name) {
                Some(Value::Int(p)) => u16::try_from(*p).ok(),
                _ => None,
            };
            if let Some(Value::BulkString(id)) = field(node, "id") {
                out.insert(
                    String::from_utf8_lossy(id).into_owned(),
                    (port("port"), port("tls-port")),
                );
            }
        }
    }
    out
}

/// The value of `name` in a RESP2 flat map (`[k1, v1, k2, v2, …]`) or a
/// RESP3 map.
fn field<'v>(map: &'v Value, name: &str) -> Option<&'v Value> {
    let is = |k: &Value| {
        matches!(k, Value::BulkString(b) if b == name.as_bytes()) || matches!(k, Value::SimpleString(s) if s == name)
    };
    match map {
        Value::Array(items) => items.chunks(2).find(|kv| is(&kv[0])).and_then(|kv| kv.get(1)),
        Value::Map(pairs) => pairs.iter().find(|(k, _)| is(k)).map(|(_, v)| v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_ports_from_cluster_slots_and_shards() {
        let slots = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(5460),
            Value::Array(vec![
                bulk("127.0.0.1"),
                Value::Int(41000),
                bulk("a"),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(41001), bulk("b")]),
        ])]);
        let nodes = slot_nodes(&slots);
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            nodes[0],
            AnnouncedNode {
                id: "a".into(),
                port: 41000
            }
        );
        assert_eq!(nodes[1].port, 41001);

        let node = Value::Array(vec![
            bulk("id"),
            bulk("a"),
            bulk("port"),
            Value::Int(41000),
            bulk("tls-port"),
            Value::Int(7000),
        ]);
        let shard = Value::Array(vec![
            bulk("slots"),
            Value::Array(vec![]),
            bulk("nodes"),
            Value::Array(vec![node]),
        ]);
        let ports = shard_node_ports(&Value::Array(vec![shard]));
        assert_eq!(ports["a"], (Some(41000), Some(7000)));
    }
}
