//! A real Redis Cluster on loopback (`redis-server` 7.x processes in cluster
//! mode, TLS), standing in for Azure Managed Redis with the OSS cluster
//! policy and clustered Premium Azure Cache for Redis.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis":
//!
//! - Clients discover the shards with `CLUSTER SLOTS`/`SHARDS` and connect to
//!   each on its own port; a key on another shard answers `MOVED slot
//!   host:port` (`ASK` while a slot migrates).
//! - Clusters announce nodes by IP address while the certificate names the
//!   cache's host name. Every node here is announced as `127.0.0.1` on its
//!   TLS port, and its certificate must carry host names only
//!   ([`crate::pki::Pki::generate_for_hosts`]): a client that verifies a
//!   node against the announced IP fails, one that verifies every node
//!   against the host name succeeds.
//! - Every shard connection needs its own AUTH: ACL users live on each node,
//!   so [`ClusterAdmin`] changes them on all nodes (replicas too).
//!
//! And "redis 1.8.1" on redis-server 7.0: `cluster-announce-ip`,
//! `cluster-announce-port`/`-tls-port` and `cluster-preferred-endpoint-type
//! ip` decide what `CLUSTER SLOTS` and `MOVED` name, and a TLS client is told
//! the TLS port only with `tls-cluster yes`, which also puts the cluster bus
//! (and `MIGRATE`) on TLS; `tls-replication yes` does the same for
//! replication.
//!
//! Each node is a [`RedisServer`] (TLS port for clients, plain admin port for
//! the emulators, `default` user with one random password shared by all
//! nodes, also given to replicas as `masterauth`), so every process is killed
//! when the [`RedisCluster`] is dropped. `cluster-require-full-coverage no`
//! keeps the other shards serving while one is down, and replicas may always
//! take over (`cluster-replica-validity-factor 0`). Like the single server,
//! nodes keep no data across a restart.
//!
//! Every operation ends by waiting, bounded, until every running node
//! reports the state it caused (`settle.rs`); none sleeps a fixed time.

mod admin;
mod announce;
mod create;
mod migrate;
mod ops;
mod settle;
mod slots;
mod topology;

pub(crate) use admin::AclTarget;
pub use admin::ClusterAdmin;
pub use migrate::SlotMigration;
pub use slots::{key_slot, slot_tag, SLOTS};
pub use topology::AnnouncedNode;

use crate::pki::Pki;
use crate::redis_server::{ClientInfo, RedisOptions, RedisServer};
use std::ops::RangeInclusive;
use std::time::Duration;
use topology::Report;

/// How [`RedisCluster::start`] builds the cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Masters, each owning an equal share of the 16384 slots; default 3
    /// (failover needs a majority of masters alive, so at least 3).
    pub masters: usize,
    /// Replicas per master; default 1.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before it
    /// is suspected failed (and a replica elected about one more second
    /// later); default 2 s.
    pub node_timeout: Duration,
    /// How each node process runs.
    pub redis: RedisOptions,
}

impl Default for ClusterOptions {
    /// 3 masters with 1 replica each, 2 s node timeout.
    fn default() -> Self {
        ClusterOptions {
            masters: 3,
            replicas_per_master: 1,
            node_timeout: Duration::from_secs(2),
            redis: RedisOptions::default(),
        }
    }
}

/// A master as the cluster reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    /// The node's index in the cluster ([`RedisCluster::node`]).
    pub index: usize,
    /// The node id (`CLUSTER MYID`).
    pub id: String,
    /// The TLS port clients use and the cluster announces.
    pub tls_port: u16,
    /// The plain admin port.
    pub plain_port: u16,
    /// The slot ranges it owns, ascending.
    pub slots: Vec<RangeInclusive<u16>>,
    /// Indices of its replicas.
    pub replicas: Vec<usize>,
    /// Whether the cluster has flagged it `fail` (its shard is down).
    pub failed: bool,
}

/// A running Redis Cluster on 127.0.0.1; every node is killed on drop.
///
/// Nodes are numbered in start order: `0..masters` began as the masters,
/// then the replicas of master 0, of master 1, and so on. Roles change with
/// [`RedisCluster::failover`] and [`RedisCluster::kill_master`]; indices
/// and node ids do not.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    ids: Vec<String>,
    /// Cluster bus port of each node.
    bus_ports: Vec<u16>,
    host_name: String,
    opts: ClusterOptions,
    admin: ClusterAdmin,
}

impl RedisCluster {
    /// Starts the nodes with `pki`'s certificate (which must name host names
    /// only: [`Pki::generate_for_hosts`]), assigns the slots, joins the
    /// nodes, attaches the replicas, and returns once every node reports
    /// `cluster_state:ok`, all agree on the topology and every replica is in
    /// sync (at most ~30 s).
    pub async fn start(pki: &Pki, opts: ClusterOptions) -> anyhow::Result<RedisCluster> {
        create::start(pki, opts).await
    }

    /// How many nodes (masters and replicas).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`: its ports, process, log and admin connection. Stopping
    /// or starting it directly skips the waits of [`RedisCluster::restart`].
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// Node `index`'s id (kept across restarts in its `nodes.conf`).
    pub fn node_id(&self, index: usize) -> &str {
        &self.ids[index]
    }

    /// The index of the node with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|i| i == id)
    }

    /// The host name the certificate names (its first name): what a client
    /// verifies every node against, e.g. `localhost`.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// For each node, its announced address `127.0.0.1:<tls port>` and the
    /// same port on [`RedisCluster::host_name`]: the map a client connects
    /// through so it verifies the certificate against the host name (redis
    /// 1.8's `ClusterClientBuilder::node_address_map`).
    pub fn tls_address_map(&self) -> Vec<(String, String)> {
        let host = &self.host_name;
        self.nodes
            .iter()
            .map(|n| {
                (
                    format!("127.0.0.1:{}", n.tls_port()),
                    format!("{host}:{}", n.tls_port()),
                )
            })
            .collect()
    }

    /// ACL changes on every node; clone it to keep one (for
    /// [`crate::identity::IdentityConfig::redis_cluster`]).
    pub fn admin(&self) -> &ClusterAdmin {
        &self.admin
    }

    /// `CLIENT LIST` of every running node, with its index (the asking admin
    /// connection left out; replication links show as clients of their
    /// master with flag `S`).
    pub async fn client_lists(&self) -> anyhow::Result<Vec<(usize, Vec<ClientInfo>)>> {
        let mut lists = Vec::new();
        for i in self.running() {
            lists.push((i, self.nodes[i].admin().client_list().await?));
        }
        Ok(lists)
    }

    /// The masters as the first running node reports them, in slot order: a
    /// master that lost its slots to a failover and is down is left out.
    pub async fn masters(&self) -> anyhow::Result<Vec<MasterInfo>> {
        let first = self
            .running()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no node is running"))?;
        let report = Report::fetch(&self.admin.nodes()[first]).await?;
        let mut masters = Vec::new();
        for line in report.nodes.iter().filter(|n| n.is_master()) {
            let failed = line.has("fail");
            if failed && line.slots.is_empty() {
                continue;
            }
            let index = self
                .index_of(&line.id)
                .ok_or_else(|| anyhow::anyhow!("unknown node {}", line.id))?;
            let mut slots = line.slots.clone();
            slots.sort_by_key(|r| *r.start());
            let replicas = report.nodes.iter().filter(|n| n.master_id.as_deref() == Some(&line.id));
            masters.push(MasterInfo {
                index,
                id: line.id.clone(),
                tls_port: self.nodes[index].tls_port(),
                plain_port: self.nodes[index].plain_port(),
                slots,
                replicas: replicas.filter_map(|n| self.index_of(&n.id)).collect(),
                failed,
            });
        }
        masters.sort_by_key(|m| m.slots.first().map(|r| *r.start()));
        Ok(masters)
    }

    /// The master owning `slot` now (see [`key_slot`]).
    pub async fn master_of_slot(&self, slot: u16) -> anyhow::Result<MasterInfo> {
        self.masters()
            .await?
            .into_iter()
            .find(|m| m.slots.iter().any(|r| r.contains(&slot)))
            .ok_or_else(|| anyhow::anyhow!("no master owns slot {slot}"))
    }

    /// Waits until the cluster is settled: every running node reports
    /// `cluster_state:ok`, sees stopped nodes as failed and the others as
    /// healthy, all agree on roles and slots, every slot is assigned, no slot
    /// is migrating, and every replica of a running master is in sync.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_settled_and("the cluster settling", timeout, |_| None).await
    }

    /// Indices of the nodes whose process runs.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    /// The reports of all running nodes.
    async fn reports(&self) -> anyhow::Result<Vec<Report>> {
        let mut reports = Vec::new();
        for i in self.running() {
            reports.push(Report::fetch(&self.admin.nodes()[i]).await?);
        }
        Ok(reports)
    }

    /// Waits until the cluster is settled and `also` finds nothing wrong in
    /// the running nodes' reports (which then agree).
    async fn wait_settled_and(
        &self,
        what: &str,
        timeout: Duration,
        also: impl Fn(&[Report]) -> Option<String>,
    ) -> anyhow::Result<()> {
        let also = &also;
        settle::wait_for(what, timeout, move || async move {
            let down: Vec<&str> = (0..self.len())
                .filter(|&i| !self.nodes[i].is_running())
                .map(|i| self.ids[i].as_str())
                .collect();
            match self.reports().await {
                Ok(reports) => settle::unsettled(&reports, self.len(), &down).or_else(|| also(&reports)),
                Err(e) => Some(format!("{e:#}")),
            }
        })
        .await
    }

    /// How long an operation may take to settle: a failure is detected after
    /// the node timeout and the election follows within about a second,
    /// plus room for a busy 2-core machine.
    fn settle_timeout(&self) -> Duration {
        self.opts.node_timeout * 4 + Duration::from_secs(20)
    }
}
