//! The handler in front of a real Redis Cluster presented the way Azure
//! presents a clustered cache (docs/azure.md "Entra ID and Azure Redis"):
//!
//! - every node (masters and replicas) behind its own Entra-enforcing
//!   [`Gateway`] on a per-shard port, TLS with a certificate naming only
//!   the cache's host name;
//! - nodes announced by IP: each node tells a client `127.0.0.1:<its
//!   gateway's port>` in `CLUSTER SLOTS`, `CLUSTER SHARDS` and `MOVED`. The
//!   gateway reaches its node on the plain port, and a plain client is told
//!   `cluster-announce-port`, so that is set to the gateway's port
//!   ([`RedisCluster::announce_client_ports`]); the cluster bus and
//!   replication stay on the nodes' own TLS ports;
//! - every shard connection needs its own AUTH with the token and its own
//!   re-AUTH before the token expires (each gateway closes a connection at
//!   its token's `exp`).
//!
//! The handler is started as the Functions host starts it, seeded with node
//! 0's gateway as `Redis__redisHostName:Redis__port`.

use super::gateway::Gateway;
use super::{app_root, call_handler, handler_binary, verify_with};
use devhost::functions_host::HandlerProcess;
use devhost::identity::{IdentityConfig, IdentityEndpoint};
use devhost::pki::Pki;
use devhost::redis_cluster::{slot_tag, ClusterOptions, MasterInfo, RedisCluster};
use devhost::redis_server::ClientInfo;
use reqwest::Method;
use serde_json::Value;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The only name on the nodes' certificate.
pub const HOST: &str = "localhost";

/// How to start a [`ClusterApp`].
pub struct ClusterAppOptions {
    /// The cluster's shape (default: 3 masters with a replica each).
    pub cluster: ClusterOptions,
    /// Lifetime of each token the identity endpoint mints.
    pub token_lifetime: Duration,
    /// `Redis__tokenRefreshOffsetSeconds`.
    pub refresh_offset_s: f64,
    /// `Redis__connectTimeoutSeconds` and `Redis__commandTimeoutSeconds`
    /// (each; the handler's defaults of 5 s when `None`).
    pub deadline_s: Option<f64>,
    /// `Redis__clusterMode` (`None`: not set, the handler's `auto`).
    pub cluster_mode: Option<&'static str>,
    /// `RUST_LOG` for the handler.
    pub rust_log: &'static str,
    /// More settings, applied last.
    pub env: Vec<(String, String)>,
}

impl Default for ClusterAppOptions {
    fn default() -> Self {
        Self {
            cluster: ClusterOptions::default(),
            token_lifetime: Duration::from_secs(3600),
            refresh_offset_s: 300.0,
            deadline_s: None,
            cluster_mode: None,
            rust_log: "info",
            env: Vec::new(),
        }
    }
}

/// The cluster, its gateways and the identity endpoint, without a handler.
pub struct ClusterRig {
    pub pki: Pki,
    pub cluster: RedisCluster,
    /// One per node, in node order.
    pub gateways: Vec<Gateway>,
    pub identity: Arc<IdentityEndpoint>,
    pub oid: String,
}

/// A handler in front of a [`ClusterRig`] (derefs to it).
pub struct ClusterApp {
    pub rig: ClusterRig,
    pub handler: HandlerProcess,
    /// The app settings the handler was started with.
    pub env: Vec<(String, String)>,
}

impl Deref for ClusterApp {
    type Target = ClusterRig;
    fn deref(&self) -> &ClusterRig {
        &self.rig
    }
}

/// Starts the cluster, a gateway per node announced as the node's client
/// port, the identity endpoint and the handler; returns once the handler
/// answers `GET /` (it has not necessarily connected yet).
pub async fn spawn_cluster_app(opts: ClusterAppOptions) -> ClusterApp {
    let rig = ClusterRig::start(&opts).await;
    let env = rig.handler_env(&opts);
    let handler = HandlerProcess::spawn(&handler_binary(), app_root(), &env)
        .await
        .expect("handler starts");
    ClusterApp { rig, handler, env }
}

impl ClusterRig {
    /// Starts everything but the handler (see [`spawn_cluster_app`]).
    pub async fn start(opts: &ClusterAppOptions) -> ClusterRig {
        crate::support::install_crypto_provider();
        let pki = Pki::generate_for_hosts(&[HOST]).expect("test PKI naming a host name only");
        let cluster = RedisCluster::start(&pki, opts.cluster)
            .await
            .expect("a Redis Cluster with TLS");
        let cfg = IdentityConfig {
            token_lifetime: opts.token_lifetime,
            ..IdentityConfig::default()
        };
        let oid = cfg.oid.clone();
        let identity = Arc::new(IdentityEndpoint::start(cfg).await.expect("identity endpoint"));
        let mut gateways = Vec::with_capacity(cluster.len());
        for i in 0..cluster.len() {
            let node = cluster.node(i);
            let verify = verify_with(identity.clone());
            gateways.push(Gateway::start(&pki, node.plain_port(), node.admin().password(), verify).await);
        }
        let ports: Vec<u16> = gateways.iter().map(Gateway::port).collect();
        cluster
            .announce_client_ports(&ports)
            .await
            .expect("every node announcing its gateway's port");
        ClusterRig {
            pki,
            cluster,
            gateways,
            identity,
            oid,
        }
    }

    /// The handler's settings: seeded with node 0's gateway by host name,
    /// Entra ID through the identity endpoint.
    pub fn handler_env(&self, opts: &ClusterAppOptions) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("SSL_CERT_FILE".into(), self.pki.ca_path.display().to_string()),
            ("RUST_LOG".into(), opts.rust_log.into()),
            ("Redis__redisHostName".into(), self.cluster.host_name().into()),
            ("Redis__port".into(), self.gateways[0].port().to_string()),
            (
                "Redis__tokenRefreshOffsetSeconds".into(),
                opts.refresh_offset_s.to_string(),
            ),
        ];
        env.extend(self.identity.env());
        if let Some(mode) = opts.cluster_mode {
            env.push(("Redis__clusterMode".into(), mode.into()));
        }
        if let Some(s) = opts.deadline_s {
            env.push(("Redis__connectTimeoutSeconds".into(), s.to_string()));
            env.push(("Redis__commandTimeoutSeconds".into(), s.to_string()));
        }
        env.extend(opts.env.iter().cloned());
        env
    }

    /// Node `i`'s gateway.
    pub fn gateway(&self, i: usize) -> &Gateway {
        &self.gateways[i]
    }

    /// The node behind the gateway on `port`.
    pub fn node_of_gateway_port(&self, port: u16) -> Option<usize> {
        self.gateways.iter().position(|g| g.port() == port)
    }

    /// The node named `127.0.0.1:<gateway port>` (as the handler's `node`
    /// fields and `MOVED` name it).
    pub fn node_of_addr(&self, addr: &str) -> Option<usize> {
        let (ip, port) = addr.rsplit_once(':')?;
        (ip == "127.0.0.1").then_some(())?;
        self.node_of_gateway_port(port.parse().ok()?)
    }

    /// `127.0.0.1:<gateway port>` of node `i`: how the cluster announces it.
    pub fn announced_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.gateways[i].port())
    }

    /// The connections that came through node `i`'s gateway, as node `i`'s
    /// own `CLIENT LIST` shows them (asked on its admin port).
    pub async fn gateway_clients(&self, i: usize) -> Vec<ClientInfo> {
        let list: String = self.admin_query(i, redis::cmd("CLIENT").arg("LIST")).await;
        let behind = self.gateways[i].backend_addrs();
        list.lines()
            .filter_map(ClientInfo::parse)
            .filter(|c| behind.contains(&c.addr))
            .collect()
    }

    /// An admin connection to node `i` (plain port, `default`), with
    /// limits for a busy 2-core machine (redis-rs's defaults, which
    /// `RedisAdmin` uses, are 1 s to connect and 500 ms per reply).
    pub async fn admin_conn(&self, i: usize) -> redis::aio::MultiplexedConnection {
        let node = self.cluster.node(i);
        let url = format!(
            "redis://default:{}@127.0.0.1:{}/",
            node.admin().password(),
            node.plain_port()
        );
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&slow_machine())
            .await
            .unwrap_or_else(|e| panic!("admin connection to node {i}: {e}"))
    }

    /// `cmd` on a new [`ClusterRig::admin_conn`] to node `i`.
    pub async fn admin_query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> T {
        let mut conn = self.admin_conn(i).await;
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{:?} on node {i}: {e}", cmd.args_iter().next()))
    }

    /// A sum of one gateway counter over every node.
    pub fn gateway_total(
        &self,
        counter: impl Fn(&super::gateway::GatewayStats) -> &std::sync::atomic::AtomicUsize,
    ) -> usize {
        self.gateways
            .iter()
            .map(|g| counter(g.stats()).load(Ordering::SeqCst))
            .sum()
    }

    /// A token from the identity endpoint, as the handler gets one.
    pub async fn fetch_token(&self) -> String {
        super::fetch_token(&self.identity).await
    }

    /// A plain (not cluster-aware) client of node `i` through its gateway,
    /// verifying the certificate against the host name, authenticated with
    /// `token`.
    pub async fn gateway_conn(&self, i: usize, token: &str) -> redis::aio::MultiplexedConnection {
        let info = redis::ConnectionAddr::TcpTls {
            host: HOST.into(),
            port: self.gateways[i].port(),
            insecure: false,
            tls_params: None,
        };
        let info = redis::IntoConnectionInfo::into_connection_info(info)
            .unwrap()
            .set_redis_settings(
                redis::RedisConnectionInfo::default()
                    .set_username(&self.oid)
                    .set_password(token),
            );
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.pki.ca_pem.clone().into_bytes()),
        };
        redis::Client::build_with_tls(info, certs)
            .unwrap()
            .get_multiplexed_async_connection_with_config(&slow_machine())
            .await
            .expect("a connection through the gateway")
    }
}

impl ClusterApp {
    /// Sends a forwarded request; returns the status and the JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        call_handler(&self.handler, method, path, body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    /// Starts another handler with the same settings, `overrides` applied
    /// last (e.g. `Redis__clusterMode=standalone`).
    pub async fn spawn_another(&self, overrides: &[(&str, &str)]) -> HandlerProcess {
        let mut env = self.env.clone();
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        HandlerProcess::spawn(&handler_binary(), app_root(), &env)
            .await
            .expect("handler starts")
    }

    /// All the handler printed so far.
    pub fn output(&self) -> String {
        super::handler_output(&self.handler)
    }

    /// Waits until the handler has written `needle`, or panics after `limit`.
    pub async fn wait_for_output(&self, needle: &str, limit: Duration) {
        super::wait_for_handler_output(&self.handler, needle, limit).await
    }

    /// Waits until the handler has written `needle` `n` times, or panics
    /// after `limit`.
    pub async fn wait_for_output_count(&self, needle: &str, n: usize, limit: Duration) {
        let what = format!("{n} times {needle:?} in the handler's output");
        super::wait_until(&what, limit, || self.output().matches(needle).count() >= n).await
    }
}

/// A key named `name` in `slot`.
pub fn key_in_slot(slot: u16, name: &str) -> String {
    format!("{}{name}", slot_tag(slot))
}

/// `n` slots spread evenly over `master`'s slot ranges (first and last
/// included).
pub fn slots_of(master: &MasterInfo, n: usize) -> Vec<u16> {
    let all: Vec<u16> = master.slots.iter().flat_map(|r| r.clone()).collect();
    if n <= 1 || all.len() <= 1 {
        return all.into_iter().take(n.max(1)).collect();
    }
    let n = n.min(all.len());
    (0..n).map(|k| all[k * (all.len() - 1) / (n - 1)]).collect()
}

/// Connection limits for a busy 2-core machine: a TLS handshake and AUTH
/// can take seconds there (redis-rs's defaults are 1 s to connect and
/// 500 ms per reply).
pub fn slow_machine() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(10)))
}
