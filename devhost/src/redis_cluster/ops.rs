//! Faults and role changes, each waiting until every running node reports
//! the result: a planned failover, a crashed master, a shard that is down,
//! and nodes coming back.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis" (clients refresh the
//! topology after a failover, and a key on another shard answers `MOVED`).

use super::settle;
use super::topology::{admin_cmd, Report};
use super::RedisCluster;
use anyhow::Context;
use std::time::Duration;

/// How long a replica may take to apply what its master has, before a kill.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisCluster {
    /// `CLUSTER FAILOVER` on a running replica of master `master` (a planned
    /// failover: the master stops writes until the replica has everything).
    /// Returns the replica's index once every node reports it as the master
    /// of those slots, with `master` as its replica, in sync.
    pub async fn failover(&self, master: usize) -> anyhow::Result<usize> {
        let replica = self.running_replica_of(master).await?;
        admin_cmd::<()>(&self.admin.nodes()[replica], redis::cmd("CLUSTER").arg("FAILOVER"))
            .await
            .context("CLUSTER FAILOVER")?;
        self.wait_roles("a planned failover", replica, Some(master)).await?;
        Ok(replica)
    }

    /// Kills master `master` (SIGKILL, as a crash) once a running replica of
    /// it has applied everything it had, so no acknowledged write is lost;
    /// returns that replica's index once every running node reports the
    /// master failed and the replica elected in its place. The killed node
    /// stays down until [`RedisCluster::restart`], which brings it back as a
    /// replica of the new master.
    pub async fn kill_master(&self, master: usize) -> anyhow::Result<usize> {
        let replica = self.running_replica_of(master).await?;
        let admins = self.admin.nodes();
        let target = Report::fetch(&admins[master])
            .await?
            .repl_offset()
            .context("the master's replication offset")?;
        settle::wait_for("the replica catching up before the kill", CATCH_UP_TIMEOUT, || async {
            match Report::fetch(&admins[replica]).await {
                Ok(r) if r.repl_offset().is_some_and(|o| o >= target) => None,
                Ok(r) => Some(format!("replica at offset {:?} of {target}", r.repl_offset())),
                Err(e) => Some(format!("{e:#}")),
            }
        })
        .await?;
        self.nodes[master].stop();
        self.wait_roles("the failover after a killed master", replica, None)
            .await?;
        Ok(replica)
    }

    /// Stops master `master` and its replicas (SIGKILL): a shard that is
    /// down. Returns their indices once every other node reports them
    /// failed and still `cluster_state:ok` (the other shards serve their
    /// keys; this shard's keys fail).
    pub async fn stop_shard(&self, master: usize) -> anyhow::Result<Vec<usize>> {
        let report = Report::fetch(&self.admin.nodes()[master]).await?;
        anyhow::ensure!(
            report.myself().is_some_and(|m| m.is_master()),
            "node {master} is not a master"
        );
        let mut shard = vec![master];
        for line in &report.nodes {
            if line.master_id.as_deref() == Some(&self.ids[master]) {
                shard.extend(self.index_of(&line.id));
            }
        }
        for &i in &shard {
            self.nodes[i].stop();
        }
        self.wait_settled_and("a shard going down", self.settle_timeout(), |_| None)
            .await?;
        Ok(shard)
    }

    /// Starts the given stopped nodes again (same ports, ids and ACL users,
    /// no keys) and waits until the cluster is settled with them back: a
    /// master that was failed over rejoins as a replica of its successor.
    pub async fn restart(&self, nodes: &[usize]) -> anyhow::Result<()> {
        for &i in nodes {
            self.nodes[i].start_again().await?;
        }
        self.wait_settled_and("restarted nodes rejoining", self.settle_timeout(), |_| None)
            .await
    }

    /// A running replica of `master`, as `master`'s own view has it.
    async fn running_replica_of(&self, master: usize) -> anyhow::Result<usize> {
        let report = Report::fetch(&self.admin.nodes()[master]).await?;
        anyhow::ensure!(
            report.myself().is_some_and(|m| m.is_master()),
            "node {master} is not a master"
        );
        report
            .nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(&self.ids[master]))
            .filter_map(|n| self.index_of(&n.id))
            .find(|&i| self.nodes[i].is_running())
            .ok_or_else(|| anyhow::anyhow!("master {master} has no running replica"))
    }

    /// Waits until the cluster is settled with `master` a master owning
    /// slots and, when given, `replica` its replica.
    async fn wait_roles(&self, what: &str, master: usize, replica: Option<usize>) -> anyhow::Result<()> {
        let (master_id, replica_id) = (&self.ids[master], replica.map(|r| &self.ids[r]));
        self.wait_settled_and(what, self.settle_timeout(), |reports| {
            let view = &reports[0];
            if !view
                .line(master_id)
                .is_some_and(|m| m.is_master() && !m.slots.is_empty())
            {
                return Some(format!("node {master} is not yet a master with slots"));
            }
            let replica_id = replica_id?;
            let follows = view.line(replica_id).and_then(|r| r.master_id.as_ref()) == Some(master_id);
            (!follows).then(|| format!("node {replica:?} is not yet its replica"))
        })
        .await
    }
}
