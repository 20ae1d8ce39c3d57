//! The cluster scenario (`-- --cluster`, and part of the full run): the
//! handler in cluster mode against a local TLS Redis Cluster (3 masters with
//! a replica each, from `devhost::redis_cluster`), next to `redis-benchmark
//! --cluster` on the same cluster in the same run.
//!
//! The cluster is presented the way Azure presents one (docs/azure.md "Entra
//! ID and Azure Redis"): nodes announced by IP (`127.0.0.1`), a certificate
//! naming only the host name (`localhost`), ACL users on every node, and the
//! identity endpoint's tokens accepted on every node. The handler is given
//! only the host name and one master's TLS port; its `Redis__clusterMode`
//! default (`auto`) finds the cluster, which the bench checks on
//! `/api/health` (`"mode": "cluster"`, one shard per master) before it
//! measures.
//!
//! `redis-benchmark` gets `--tls --cacert <CA> --sni localhost --cluster`.
//! The `redis-benchmark` 7.0 here (hiredis) checks the server's chain
//! against `--cacert` but never its name: it accepts a node reached by IP
//! under a certificate naming only `localhost`, and `--sni` only sets the
//! name sent in the handshake (a wrong one is accepted too). So it cannot be
//! made to verify nodes against the host name; it verifies the chain only,
//! while the handler verifies every node against `Redis__redisHostName`.

use crate::load::{self, BenchTarget, LoadResult};
use crate::rig::{key, Program, Server, BENCH_USER, KEYSPACE, VALUE_BYTES};
use crate::scenarios::{print_point, Op, Side, Timing};
use crate::stats::{group, median, Target};
use crate::template::{fill, text};
use anyhow::{ensure, Context};
use devhost::identity::{IdentityConfig, IdentityEndpoint};
use devhost::pki::Pki;
use devhost::redis_cluster::{key_slot, ClusterOptions, RedisCluster};
use devhost::redis_server::RedisOptions;
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

/// The only name on the nodes' certificate: `Redis__redisHostName`.
const HOST: &str = "localhost";

/// `redis-benchmark`'s options for the cluster, after `--tls --cacert`.
const REDIS_BENCHMARK_CLUSTER: &[&str] = &["--sni", HOST, "--cluster"];

/// How much of the cluster scenario to run.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// Connections per point.
    pub concurrency: Vec<u32>,
    /// Runs per side at each point, alternating which side goes first.
    pub rounds: usize,
    /// Warm-up (per point, each side) and length of each run.
    pub timing: Timing,
}

/// The cluster, the identity endpoint and the benchmark's ACL user.
pub(crate) struct ClusterRig {
    pki: Pki,
    pub(crate) cluster: RedisCluster,
    identity: IdentityEndpoint,
    bench_password: String,
    /// Runs the stand-ins' tasks. Last, so it is dropped after them.
    pub(crate) rt: tokio::runtime::Runtime,
}

impl ClusterRig {
    /// Starts the cluster and the identity endpoint (tokens accepted on
    /// every node), adds the benchmark's user on every node and stores a
    /// value under every key of the key space, each on its master.
    pub(crate) fn start() -> anyhow::Result<ClusterRig> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let pki = Pki::generate_for_hosts(&[HOST])?;
        // Nodes are spawned from this (the main) thread, which outlives
        // them: if the bench dies without cleaning up, they get SIGTERM.
        let opts = ClusterOptions {
            redis: RedisOptions { die_with_parent: true },
            ..ClusterOptions::default()
        };
        let cluster = rt
            .block_on(RedisCluster::start(&pki, opts))
            .context("starting the local Redis Cluster")?;
        let identity = rt.block_on(IdentityEndpoint::start(IdentityConfig {
            redis_cluster: Some(cluster.admin().clone()),
            ..IdentityConfig::default()
        }))?;
        let bench_password = format!("bench-{}", std::process::id());
        rt.block_on(cluster.admin().acl_add_password(BENCH_USER, &bench_password))?;
        rt.block_on(async {
            for m in cluster.masters().await? {
                let mut pipe = redis::pipe();
                let mine = (0..KEYSPACE).map(key).filter(|k| {
                    let slot = key_slot(k.as_bytes());
                    m.slots.iter().any(|r| r.contains(&slot))
                });
                for k in mine {
                    pipe.cmd("SET").arg(k).arg("x".repeat(VALUE_BYTES)).ignore();
                }
                let mut conn = cluster.node(m.index).admin().connection().await?;
                pipe.query_async::<()>(&mut conn).await?;
            }
            anyhow::Ok(())
        })?;
        Ok(ClusterRig {
            pki,
            cluster,
            identity,
            bench_password,
            rt,
        })
    }

    /// The handler's settings: the host name, one master's TLS port, the
    /// CA, the identity endpoint; the cluster mode left at its default.
    pub(crate) fn app_settings(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("Redis__redisHostName".to_owned(), self.cluster.host_name().to_owned()),
            ("Redis__port".to_owned(), self.cluster.node(0).tls_port().to_string()),
            ("Redis__tokenRefreshOffsetSeconds".to_owned(), "300".to_owned()),
            ("SSL_CERT_FILE".to_owned(), self.pki.ca_path.display().to_string()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        env.extend(self.identity.env());
        env
    }

    /// `redis-benchmark --cluster`, seeded with the same master.
    fn target(&self) -> BenchTarget<'_> {
        BenchTarget {
            host: "127.0.0.1",
            port: self.cluster.node(0).tls_port(),
            ca: &self.pki.ca_path,
            password: &self.bench_password,
            extra: REDIS_BENCHMARK_CLUSTER,
        }
    }

    /// The identity's connections on each node: `(TLS port, is master, count)`.
    fn identity_connections(&self) -> anyhow::Result<Vec<(u16, bool, usize)>> {
        let masters = self.rt.block_on(self.cluster.masters())?;
        let lists = self.rt.block_on(self.cluster.client_lists())?;
        let oid = self.identity.oid();
        Ok(lists
            .into_iter()
            .map(|(i, clients)| {
                let n = clients.iter().filter(|c| c.user == oid).count();
                (self.cluster.node(i).tls_port(), masters.iter().any(|m| m.index == i), n)
            })
            .collect())
    }
}

/// Handler ÷ `redis-benchmark --cluster` req/s at 64 connections that
/// issue 19 asks of GET and of PUT.
pub const TARGET_RATIO: f64 = 0.7;

/// The runs of one side at one point.
#[derive(Debug, Clone)]
pub struct ClusterPoint {
    /// Who served them.
    pub side: Side,
    /// What was asked.
    pub op: Op,
    /// Concurrent connections.
    pub conns: u32,
    /// One result per round.
    pub runs: Vec<LoadResult>,
}

impl ClusterPoint {
    fn median_of(&self, f: impl Fn(&LoadResult) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// Median req/s over the rounds.
    pub fn rps(&self) -> f64 {
        self.median_of(|r| r.rps)
    }
}

/// What the cluster scenario measured.
#[derive(Debug, Clone, Default)]
pub struct ClusterResults {
    /// The plan it ran.
    pub concurrency: Vec<u32>,
    /// Runs per side and point.
    pub rounds: usize,
    /// Seconds per run.
    pub seconds: f64,
    /// Seconds of warm-up of the handler per point.
    pub warm: f64,
    /// Every point, both sides.
    pub points: Vec<ClusterPoint>,
    /// The masters: TLS port and slot ranges.
    pub masters: Vec<(u16, String)>,
    /// Shards the handler's `/api/health` listed.
    pub health_shards: usize,
    /// The identity's connections per node after the runs: (TLS port, master?, count).
    pub connections: Vec<(u16, bool, usize)>,
    /// `redis-benchmark`'s options for the cluster, after `--tls --cacert <CA>`.
    pub redis_benchmark_options: String,
    /// The commit measured (and whether the handler's sources differed from it).
    pub commit: String,
    /// `(name, value)` lines about the machine and tools.
    pub machine: Vec<(&'static str, String)>,
    /// The command that produced these numbers.
    pub command: String,
}

/// Starts the cluster, the identity endpoint and a handler against it,
/// checks that the handler runs in cluster mode with one shard per master,
/// then measures GET and PUT at each concurrency, handler and
/// `redis-benchmark --cluster` alternating within each point.
pub fn run(root: &Path, lua: &Path, handler: &Program, plan: &ClusterPlan) -> anyhow::Result<ClusterResults> {
    let rig = ClusterRig::start()?;
    let masters = rig.rt.block_on(rig.cluster.masters())?;
    let mut out = ClusterResults {
        concurrency: plan.concurrency.clone(),
        rounds: plan.rounds,
        seconds: plan.timing.measure.as_secs_f64(),
        warm: plan.timing.warm.as_secs_f64(),
        masters: masters
            .iter()
            .map(|m| {
                let slots: Vec<String> = m.slots.iter().map(|r| format!("{}–{}", r.start(), r.end())).collect();
                (m.tls_port, slots.join(", "))
            })
            .collect(),
        redis_benchmark_options: REDIS_BENCHMARK_CLUSTER.join(" "),
        ..ClusterResults::default()
    };
    let server = Server::start(handler, root, &rig.app_settings())?;
    let health = health(server.port)?;
    let shards = health["shards"].as_array().map_or(0, Vec::len);
    ensure!(
        health["mode"] == "cluster" && shards == masters.len(),
        "the handler is not in cluster mode with {} shards; /api/health: {health}",
        masters.len()
    );
    out.health_shards = shards;
    let target = rig.target();
    for &conns in &plan.concurrency {
        for op in [Op::Get, Op::Put] {
            let (method, test) = match op {
                Op::Get => ("GET", "get"),
                Op::Put => ("PUT", "set"),
            };
            load::wrk(lua, server.port, method, conns, plan.timing.warm)?;
            let mut handler_runs = Vec::new();
            let mut redis_runs = Vec::new();
            for round in 0..plan.rounds {
                for side in match round % 2 {
                    0 => [Side::Handler, Side::Redis],
                    _ => [Side::Redis, Side::Handler],
                } {
                    let r = match side {
                        Side::Handler => load::wrk(lua, server.port, method, conns, plan.timing.measure)?,
                        _ => load::redis_benchmark_for_at(&target, test, conns, plan.timing.measure)?,
                    };
                    report(side, op, conns, &r);
                    match side {
                        Side::Handler => handler_runs.push(r),
                        _ => redis_runs.push(r),
                    }
                }
            }
            for (side, runs) in [(Side::Handler, handler_runs), (Side::Redis, redis_runs)] {
                out.points.push(ClusterPoint { side, op, conns, runs });
            }
        }
    }
    out.connections = rig.identity_connections()?;
    drop(server);
    Ok(out)
}

fn report(side: Side, op: Op, conns: u32, r: &LoadResult) {
    let label = match side {
        Side::Redis => "redis-bench --cl",
        _ => side.label(),
    };
    print_point(&format!("cluster {label}"), op, conns, r);
}

/// `GET /api/health` as JSON (any status).
fn health(port: u16) -> anyhow::Result<Value> {
    let (_, body) = crate::client::Conn::connect(port)?.request("GET", "/api/health", b"")?;
    Ok(serde_json::from_slice(&body)?)
}

impl ClusterResults {
    fn point(&self, side: Side, op: Op, conns: u32) -> Option<&ClusterPoint> {
        self.points
            .iter()
            .find(|p| p.side == side && p.op == op && p.conns == conns)
    }

    /// Median handler GET req/s over median `redis-benchmark --cluster` GET
    /// req/s at `conns`.
    pub fn ratio(&self, op: Op, conns: u32) -> Option<f64> {
        let h = self.point(Side::Handler, op, conns)?;
        let r = self.point(Side::Redis, op, conns)?;
        Some(h.rps() / r.rps())
    }

    /// Issue 19's targets: GET and PUT req/s at 64 connections at least
    /// [`TARGET_RATIO`] × `redis-benchmark --cluster`'s, for each op
    /// measured there.
    pub fn targets(&self) -> Vec<Target> {
        [Op::Get, Op::Put]
            .into_iter()
            .filter_map(|op| {
                let ratio = self.ratio(op, 64)?;
                Some(Target {
                    goal: format!(
                        "cluster: handler {} req/s at 64 connections ≥ {TARGET_RATIO} × `redis-benchmark --cluster`'s",
                        op.label()
                    ),
                    measured: format!("{ratio:.2}×"),
                    met: ratio >= TARGET_RATIO,
                })
            })
            .collect()
    }

    /// [`ClusterResults::targets`] as the section's lines, each followed
    /// by a blank line.
    fn target_lines(&self) -> String {
        self.targets()
            .iter()
            .map(|t| {
                format!(
                    "Target: {}: {} — {}.\n\n",
                    t.goal.trim_start_matches("cluster: "),
                    t.measured,
                    if t.met { "met" } else { "**not met**" }
                )
            })
            .collect()
    }

    /// Every run answered, with some throughput.
    pub fn check(&self) -> anyhow::Result<()> {
        for p in &self.points {
            for r in &p.runs {
                ensure!(
                    r.errors == 0 && r.rps > 0.0,
                    "cluster: {} {} at {} connections: {} errors, {:.0} req/s",
                    p.side.label(),
                    p.op.label(),
                    p.conns,
                    r.errors,
                    r.rps
                );
            }
        }
        Ok(())
    }

    /// The "## Cluster" section of BENCHMARKS.md, ending with a newline.
    pub fn section(&self) -> String {
        let get = |k: &str| crate::machine::value(&self.machine, k);
        let ports: Vec<String> = self
            .masters
            .iter()
            .map(|(port, slots)| format!("127.0.0.1:{port} (slots {slots})"))
            .collect();
        let mut values = crate::machine::stamp(&self.machine, &self.commit, &self.command);
        values.extend([
            (
                "redis_version",
                get("redis-server").split_whitespace().nth(2).unwrap_or("?").to_owned(),
            ),
            ("masters", self.masters.len().to_string()),
            ("ports", ports.join(", ")),
            ("host", HOST.to_owned()),
            ("shards", self.health_shards.to_string()),
            ("keys", group(u64::from(KEYSPACE))),
            ("value_bytes", VALUE_BYTES.to_string()),
            ("options", self.redis_benchmark_options.clone()),
            ("keyspace", KEYSPACE.to_string()),
            ("rounds", self.rounds.to_string()),
            ("seconds", self.seconds.to_string()),
            ("warm", self.warm.to_string()),
        ]);
        let mut s = fill(text::CLUSTER, &values);
        for &c in &self.concurrency {
            for op in [Op::Get, Op::Put] {
                let (Some(h), Some(r)) = (self.point(Side::Handler, op, c), self.point(Side::Redis, op, c)) else {
                    continue;
                };
                let cells = |p: &ClusterPoint| {
                    format!(
                        "{} | {:.3} | {:.3}",
                        group(p.rps().round() as u64),
                        p.median_of(|r| r.p50_ms),
                        p.median_of(|r| r.p99_ms)
                    )
                };
                let runs = |p: &ClusterPoint| {
                    p.runs
                        .iter()
                        .map(|r| format!("{:.0}", r.rps))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    s,
                    "| {c} | {} | {} | {} | {:.2}× | {}; {} |",
                    op.label(),
                    cells(h),
                    cells(r),
                    h.rps() / r.rps(),
                    runs(h),
                    runs(r)
                );
            }
        }
        s.push('\n');
        s.push_str(&self.target_lines());
        let conns: Vec<String> = self
            .connections
            .iter()
            .map(|(port, master, n)| format!(":{port} {} {n}", if *master { "master" } else { "replica" }))
            .collect();
        let _ = writeln!(
            s,
            "Connections the handler's identity held per node after the runs: {}.\n",
            conns.join(", ")
        );
        s.push_str(&fill(text::CLUSTER_TLS, &[("host", HOST.to_owned())]));
        s
    }
}

/// The text of `markdown` with the section headed as `section`'s first line
/// (e.g. "## Cluster") replaced by `section`, or `section` inserted before
/// "## Machine" (or at the end).
pub fn splice(markdown: &str, section: &str) -> String {
    let heading = format!("\n{}\n", section.lines().next().unwrap_or_default());
    let find_heading = |from: usize| markdown[from..].find("\n## ").map(|i| from + i + 1);
    if let Some(start) = markdown.find(&heading).map(|i| i + 1) {
        let end = find_heading(start + 1).unwrap_or(markdown.len());
        return format!("{}{}\n{}", &markdown[..start], section, &markdown[end..]);
    }
    match markdown.find("\n## Machine\n").map(|i| i + 1) {
        Some(at) => format!("{}{}\n{}", &markdown[..at], section, &markdown[at..]),
        None => format!("{}\n\n{}", markdown.trim_end(), section),
    }
}

/// The section of `markdown` under `heading` (e.g. "## Logging writer"), to
/// its end, if there is one.
pub fn section<'a>(markdown: &'a str, heading: &str) -> Option<&'a str> {
    let start = markdown.find(&format!("\n{heading}\n"))? + 1;
    let end = markdown[start + 1..]
        .find("\n## ")
        .map_or(markdown.len(), |i| start + 1 + i + 1);
    Some(&markdown[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(side: Side, op: Op, rps: f64) -> ClusterPoint {
        ClusterPoint {
            side,
            op,
            conns: 64,
            runs: vec![LoadResult {
                rps,
                ..LoadResult::default()
            }],
        }
    }

    /// A target line for GET and one for PUT, each judged by its own
    /// ratio at 64 connections.
    #[test]
    fn targets_for_get_and_put() {
        let results = ClusterResults {
            points: vec![
                point(Side::Handler, Op::Get, 75_000.0),
                point(Side::Redis, Op::Get, 100_000.0),
                point(Side::Handler, Op::Put, 60_000.0),
                point(Side::Redis, Op::Put, 100_000.0),
            ],
            ..ClusterResults::default()
        };
        let lines = results.target_lines();
        assert!(
            lines.contains("handler GET req/s at 64 connections ≥ 0.7 × `redis-benchmark --cluster`'s: 0.75× — met."),
            "{lines}"
        );
        assert!(
            lines.contains(
                "handler PUT/SET req/s at 64 connections ≥ 0.7 × `redis-benchmark --cluster`'s: 0.60× — **not met**."
            ),
            "{lines}"
        );
    }

    /// The section goes in before "## Machine" the first time, and replaces
    /// itself, and nothing else, after that; [`section`] reads one back.
    #[test]
    fn splice_inserts_then_replaces() {
        let doc = "# B\n\n## Refresh\n\nr\n\n## Machine\n\nm\n";
        let once = splice(doc, "## Cluster\n\nfirst\n");
        assert_eq!(
            once,
            "# B\n\n## Refresh\n\nr\n\n## Cluster\n\nfirst\n\n## Machine\n\nm\n"
        );
        let twice = splice(&once, "## Cluster\n\nsecond\n");
        assert_eq!(
            twice,
            "# B\n\n## Refresh\n\nr\n\n## Cluster\n\nsecond\n\n## Machine\n\nm\n"
        );
        assert_eq!(splice("# B\n", "## Cluster\n\nx\n"), "# B\n\n## Cluster\n\nx\n");
        assert_eq!(section(&twice, "## Cluster"), Some("## Cluster\n\nsecond\n\n"));
        assert_eq!(section(&twice, "## Machine"), Some("## Machine\n\nm\n"));
        assert_eq!(section(&twice, "## Logging writer"), None);
    }
}
