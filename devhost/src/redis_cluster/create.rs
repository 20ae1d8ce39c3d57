//! Starting the node processes and forming the cluster through their plain
//! admin ports with ordinary commands (`CLUSTER ADDSLOTSRANGE`, `MEET`,
//! `REPLICATE`), so no `redis-cli` is needed.

use super::topology::{admin_cmd, Report};
use super::{ClusterAdmin, ClusterOptions, RedisCluster, SLOTS};
use crate::pki::Pki;
use crate::redis_server::{RedisServer, ServerSpec};
use anyhow::Context;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long the nodes may take to all know each other.
const MEET_TIMEOUT: Duration = Duration::from_secs(20);

/// How long after creation the cluster may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// See [`RedisCluster::start`].
pub(super) async fn start(pki: &Pki, opts: ClusterOptions) -> anyhow::Result<RedisCluster> {
    let host_name = host_name(pki)?;
    anyhow::ensure!(opts.masters >= 1, "a cluster needs at least one master");
    let count = opts.masters * (1 + opts.replicas_per_master);
    let password = crate::util::random_hex(24);
    let mut taken = HashSet::new();
    let mut nodes = Vec::with_capacity(count);
    let mut bus_ports = Vec::with_capacity(count);
    for _ in 0..count {
        let (node, bus) = start_node(pki, &opts, &password, &mut taken).await?;
        nodes.push(node);
        bus_ports.push(bus);
    }
    let admin = ClusterAdmin::new(nodes.iter().map(|n| n.admin().clone()).collect());
    let mut ids = Vec::with_capacity(count);
    for a in admin.nodes() {
        ids.push(admin_cmd::<String>(a, redis::cmd("CLUSTER").arg("MYID")).await?);
    }
    let cluster = RedisCluster {
        nodes,
        ids,
        bus_ports,
        host_name,
        opts,
        admin,
    };
    form(&cluster).await.with_context(|| {
        let logs = cluster.nodes.iter().enumerate();
        let logs = logs.map(|(i, n)| format!("node {i} (admin port {}) log tail:\n{}", n.plain_port(), n.log_tail()));
        format!("forming the cluster\n{}", logs.collect::<Vec<_>>().join("\n"))
    })?;
    Ok(cluster)
}

/// The host name every node is verified against: the certificate's first
/// name, provided it names no IP address.
fn host_name(pki: &Pki) -> anyhow::Result<String> {
    let names = &pki.server_names;
    match names.first() {
        Some(first) if names.iter().all(|n| n.parse::<std::net::IpAddr>().is_err()) => Ok(first.clone()),
        _ => anyhow::bail!(
            "the cluster's certificate must name host names only, as Azure's do (it names {names:?}); \
             make it with Pki::generate_for_hosts"
        ),
    }
}

/// Starts one node on free ports; returns it with its bus port. A free port
/// is found by binding and releasing it, so another process (or an
/// outgoing connection) can take it before `redis-server` binds it: then
/// the node is started again on other ports, up to 5 times.
async fn start_node(
    pki: &Pki,
    opts: &ClusterOptions,
    password: &str,
    taken: &mut HashSet<u16>,
) -> anyhow::Result<(RedisServer, u16)> {
    let mut attempt = 1;
    loop {
        let ports = NodePorts {
            plain: distinct_port(taken)?,
            tls: distinct_port(taken)?,
            bus: distinct_port(taken)?,
        };
        let spec = ServerSpec {
            plain_port: ports.plain,
            tls_port: ports.tls,
            password: password.to_string(),
            extra_args: node_args(opts, ports, password),
        };
        match RedisServer::start_spec(pki, opts.redis, spec).await {
            Ok(node) => return Ok((node, ports.bus)),
            Err(e) if attempt < 5 && format!("{e:#}").contains("Address already in use") => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A free loopback port not handed out before in this cluster.
fn distinct_port(taken: &mut HashSet<u16>) -> anyhow::Result<u16> {
    loop {
        let port = crate::util::free_port()?;
        if taken.insert(port) {
            return Ok(port);
        }
    }
}

/// A node's three loopback ports.
#[derive(Debug, Clone, Copy)]
struct NodePorts {
    /// Plain port: the emulators' admin connection.
    plain: u16,
    /// TLS port: clients, replication, `MIGRATE`.
    tls: u16,
    /// Cluster bus (TLS). Set explicitly: the default, port + 10000, can
    /// pass 65535 for a port the OS picked.
    bus: u16,
}

/// The cluster settings of one node (see the module documentation for why
/// each is set). `masterauth` is on the command line: the password is a
/// throw-away one for loopback.
fn node_args(opts: &ClusterOptions, ports: NodePorts, password: &str) -> Vec<String> {
    let timeout_ms = opts.node_timeout.as_millis().to_string();
    let settings = [
        ("cluster-enabled", "yes"),
        ("cluster-config-file", "nodes.conf"),
        ("cluster-port", &ports.bus.to_string()),
        ("cluster-node-timeout", &timeout_ms),
        ("cluster-announce-ip", "127.0.0.1"),
        ("cluster-announce-port", &ports.plain.to_string()),
        ("cluster-announce-tls-port", &ports.tls.to_string()),
        ("cluster-announce-bus-port", &ports.bus.to_string()),
        ("cluster-preferred-endpoint-type", "ip"),
        ("cluster-require-full-coverage", "no"),
        ("cluster-allow-replica-migration", "no"),
        ("cluster-replica-validity-factor", "0"),
        ("tls-cluster", "yes"),
        ("tls-replication", "yes"),
        ("masteruser", "default"),
        ("masterauth", password),
        // A replica's full sync starts at once instead of waiting 5 s for
        // other replicas to join it.
        ("repl-diskless-sync-delay", "0"),
        // The master's ping moves a new replica's offset above 0 within a
        // second (10 s by default), and 7.0's CLUSTER SLOTS names a replica
        // only from then on.
        ("repl-ping-replica-period", "1"),
    ];
    settings
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
        .collect()
}

/// The slots of master `i` of `masters`: an equal share, in order.
fn slot_range(i: usize, masters: usize) -> (u16, u16) {
    let all = usize::from(SLOTS);
    ((i * all / masters) as u16, ((i + 1) * all / masters - 1) as u16)
}

/// Gives each master its slots, joins the nodes, attaches the replicas and
/// waits until the cluster is settled.
async fn form(c: &RedisCluster) -> anyhow::Result<()> {
    let admins = c.admin.nodes();
    let masters = c.opts.masters;
    // Distinct epochs up front, as `redis-cli --cluster create` does, so the
    // masters need no rounds of epoch-collision resolution.
    for (i, a) in admins.iter().enumerate() {
        admin_cmd::<()>(a, redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1))
            .await
            .context("CLUSTER SET-CONFIG-EPOCH")?;
    }
    for (i, a) in admins.iter().take(masters).enumerate() {
        let (lo, hi) = slot_range(i, masters);
        admin_cmd::<()>(a, redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(lo).arg(hi))
            .await
            .context("CLUSTER ADDSLOTSRANGE")?;
    }
    meet_all(c).await?;
    for (k, a) in admins.iter().enumerate().skip(masters) {
        let master = (k - masters) / c.opts.replicas_per_master;
        admin_cmd::<()>(a, redis::cmd("CLUSTER").arg("REPLICATE").arg(&c.ids[master]))
            .await
            .context("CLUSTER REPLICATE")?;
    }
    c.wait_settled_and("the new cluster settling", SETTLE_TIMEOUT, |_| None)
        .await
}

/// Introduces every node to node 0 and waits until each knows all others
/// (past the handshake). A pair still apart after a second is introduced
/// again: a handshake can be dropped while the other side is still busy.
async fn meet_all(c: &RedisCluster) -> anyhow::Result<()> {
    let mut apart: Vec<(usize, usize)> = (1..c.len()).map(|j| (0, j)).collect();
    let deadline = Instant::now() + MEET_TIMEOUT;
    let mut last_meet: Option<Instant> = None;
    loop {
        if last_meet.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            for &(i, j) in &apart {
                let mut meet = redis::cmd("CLUSTER");
                meet.arg("MEET")
                    .arg("127.0.0.1")
                    .arg(c.nodes[j].tls_port())
                    .arg(c.bus_ports[j]);
                admin_cmd::<()>(&c.admin.nodes()[i], &meet)
                    .await
                    .context("CLUSTER MEET")?;
            }
            last_meet = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let unanswered;
        (apart, unanswered) = pairs_apart(c).await;
        if apart.is_empty() && unanswered.is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the nodes did not all meet within {MEET_TIMEOUT:?}; still apart: {apart:?}; last error: {unanswered:?}"
            );
        }
    }
}

/// The pairs `(i, j)` where node `i` does not yet know node `j`, and the
/// last error of a node that did not answer.
async fn pairs_apart(c: &RedisCluster) -> (Vec<(usize, usize)>, Option<anyhow::Error>) {
    let mut apart = Vec::new();
    let mut unanswered = None;
    for (i, a) in c.admin.nodes().iter().enumerate() {
        match Report::fetch(a).await {
            Ok(report) => {
                for (j, id) in c.ids.iter().enumerate() {
                    if !report.line(id).is_some_and(|l| !l.has("handshake") && !l.has("noaddr")) {
                        apart.push((i, j));
                    }
                }
            }
            Err(e) => unanswered = Some(e),
        }
    }
    (apart, unanswered)
}

#[cfg(test)]
mod tests {
    use super::slot_range;

    #[test]
    fn masters_share_the_slots_in_order() {
        assert_eq!(slot_range(0, 3), (0, 5460));
        assert_eq!(slot_range(1, 3), (5461, 10921));
        assert_eq!(slot_range(2, 3), (10922, 16383));
        assert_eq!(slot_range(0, 1), (0, 16383));
    }
}
