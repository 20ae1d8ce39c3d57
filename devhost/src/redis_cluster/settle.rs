//! When the cluster is settled, and the bounded waits built on it: every
//! operation of [`super::RedisCluster`] ends by polling the running nodes'
//! reports until the state it caused is what all of them say.

use super::topology::Report;
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How often a wait asks the nodes again.
const POLL: Duration = Duration::from_millis(50);

/// Why the reports of the running nodes do not yet describe a settled
/// cluster, or `None` when they do. Settled: each running node is settled
/// by [`node_unsettled`]; all agree on roles, masters, slots and failures;
/// the slots cover all 16384.
pub(super) fn unsettled(reports: &[Report], total: usize, down: &[&str]) -> Option<String> {
    let Some(first) = reports.first() else {
        return Some("no node is running".into());
    };
    let reference = agreed(first);
    for r in reports {
        if let Some(why) = node_unsettled(r, total, down) {
            return Some(why);
        }
        if agreed(r) != reference {
            let reporter = r.myself().map_or("?", |m| m.id.as_str());
            return Some(format!("{reporter} disagrees on the topology"));
        }
    }
    let covered: usize = first.nodes.iter().flat_map(|n| &n.slots).map(|s| s.len()).sum();
    (covered != usize::from(super::SLOTS)).then(|| format!("{covered} of 16384 slots assigned"))
}

/// What one node must say for the cluster to be settled: `cluster_state:ok`;
/// `total` nodes known; the nodes in `down` (ids) flagged `fail` and every
/// other one healthy, linked and not migrating; `CLUSTER SLOTS` naming every
/// master and every replica that is up; and, for a replica whose master
/// runs, in sync.
fn node_unsettled(r: &Report, total: usize, down: &[&str]) -> Option<String> {
    let reporter = r.myself().map_or("?", |m| m.id.as_str());
    if r.info.get("cluster_state").map(String::as_str) != Some("ok") {
        return Some(format!(
            "{reporter} says cluster_state:{:?}",
            r.info.get("cluster_state")
        ));
    }
    if r.nodes.len() != total {
        return Some(format!("{reporter} knows {} of {total} nodes", r.nodes.len()));
    }
    for n in &r.nodes {
        let is_down = down.contains(&n.id.as_str());
        let bad = ["fail?", "fail", "handshake", "noaddr"].iter().any(|f| n.has(f));
        if is_down && !n.has("fail") {
            return Some(format!(
                "{reporter} does not yet see {} as failed ({:?})",
                n.id, n.flags
            ));
        }
        if !is_down && (bad || n.migrating || !(n.connected || n.has("myself"))) {
            return Some(format!(
                "{reporter} sees {} as {:?}, linked: {}",
                n.id, n.flags, n.connected
            ));
        }
    }
    if r.slot_ids != r.expected_slot_ids() {
        return Some(format!(
            "{reporter}'s CLUSTER SLOTS does not name every serving node yet"
        ));
    }
    let master_down = r
        .myself()
        .and_then(|m| m.master_id.as_deref())
        .is_some_and(|m| down.contains(&m));
    if r.myself().is_some_and(|m| m.has("slave")) && !master_down && !r.replica_in_sync() {
        return Some(format!("replica {reporter} is not in sync with its master"));
    }
    None
}

type Agreed<'r> = Vec<(&'r str, (bool, Option<&'r str>, &'r [RangeInclusive<u16>], bool))>;

/// A report's view of every node, in id order, as all must agree on it.
fn agreed(r: &Report) -> Agreed<'_> {
    let mut v: Agreed<'_> = r.nodes.iter().map(|n| (n.id.as_str(), n.agreed())).collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

/// Polls `check` every 50 ms until it returns `None` (done), giving up
/// after `timeout` with the last reason it gave.
pub(super) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let why = match check().await {
            None => return Ok(()),
            Some(why) => why,
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: not done within {timeout:?}; last seen: {why}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_cluster::topology::{info_fields, parse_nodes};

    fn report(nodes: &str, info: &str, slot_ids: &[&str]) -> Report {
        Report {
            info: info_fields(info),
            nodes: parse_nodes(nodes),
            replication: info_fields("role:master\n"),
            slot_ids: slot_ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_failed_node_is_settled_only_when_expected_down() {
        let nodes = "\
a 127.0.0.1:1@3 myself,master - 0 0 1 connected 0-16383
b 127.0.0.1:4@6 master,fail - 0 0 2 disconnected
";
        let r = [report(nodes, "cluster_state:ok\n", &["a"])];
        assert!(unsettled(&r, 2, &[]).unwrap().contains("sees b"));
        assert_eq!(unsettled(&r, 2, &["b"]), None);
        let r = [report(nodes, "cluster_state:fail\n", &["a"])];
        assert!(unsettled(&r, 2, &["b"]).unwrap().contains("cluster_state"));
        assert_eq!(unsettled(&[], 2, &[]).as_deref(), Some("no node is running"));
    }
}
