//! The processes behind the local host: the handler and, without a real
//! cache configured, the built-in cache (a TLS `redis-server` with an ACL
//! user per identity, or with `--cluster` a TLS Redis Cluster of such
//! servers) and an App Service–style managed-identity endpoint whose tokens
//! are that user's passwords (on every node of a cluster).
//!
//! The handler gets the environment the Functions host gives it (see
//! [`crate::functions_host`]) plus the app settings; with the built-in cache
//! the connection settings point at it and authenticate with the managed
//! identity, as an app in Azure does. A cluster is named the way Azure names
//! one: by the host name its certificate carries (`localhost`) and one
//! master's TLS port; its nodes announce themselves by IP (docs/azure.md
//! "Entra ID and Azure Redis"), and the handler's `Redis__clusterMode`
//! (default `auto`) finds out that it is a cluster.

use crate::app_manifest::AppManifest;
use crate::functions_host::{HandlerProcess, SpawnOptions};
use crate::gateway::{Gateway, GatewayConfig};
use crate::identity::{IdentityConfig, IdentityEndpoint};
use crate::local_settings::{CacheTarget, MergedSettings, CONNECTION_SETTINGS};
use crate::pki::Pki;
use crate::redis_cluster::{ClusterOptions, RedisCluster};
use crate::redis_server::{RedisOptions, RedisServer, INSTALL_HINT};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the handler gets to drain after SIGTERM before it is killed
/// (its own drain defaults to 10 s).
const HANDLER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which built-in cache to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LocalTopology {
    /// One `redis-server` (the default).
    #[default]
    Single,
    /// A Redis Cluster: 3 masters with a replica each (`--cluster`).
    Cluster,
}

/// The built-in cache's Redis: one server or a cluster.
pub enum LocalRedis {
    /// One `redis-server` child.
    Single(RedisServer),
    /// The cluster's `redis-server` children.
    Cluster(RedisCluster),
}

/// The built-in cache and identity.
pub struct LocalCache {
    /// The TLS certificates (a temporary folder, deleted on drop).
    pub pki: Pki,
    /// The `redis-server` child, or the cluster's.
    pub redis: LocalRedis,
    /// The managed-identity endpoint.
    pub identity: Arc<IdentityEndpoint>,
    /// In front of the one server, as Azure's front end stands in front of
    /// a cache: it checks tokens (passing them on, as the server knows them
    /// as ACL passwords) and plays maintenance ([`super::maintenance`]).
    pub front: Option<Gateway>,
    /// Front ends a maintenance play started, kept until the run ends.
    more_fronts: std::sync::Mutex<Vec<Gateway>>,
}

impl LocalCache {
    /// `Redis__redisHostName` and `Redis__port` for the handler: the
    /// server's loopback address, or the cluster's host name and the TLS
    /// port of its first master.
    fn address(&self) -> (String, u16) {
        match (&self.redis, &self.front) {
            (LocalRedis::Single(_), Some(front)) => ("127.0.0.1".into(), front.port()),
            (LocalRedis::Single(r), None) => ("127.0.0.1".into(), r.tls_port()),
            (LocalRedis::Cluster(c), _) => (c.host_name().to_owned(), c.node(0).tls_port()),
        }
    }

    /// Keeps a front end a play started until the run ends.
    pub(super) fn keep(&self, front: Gateway) {
        self.more_fronts.lock().unwrap().push(front);
    }
}

/// Everything started for a local run.
pub struct Stack {
    /// The handler.
    pub handler: HandlerProcess,
    /// The built-in cache, unless a real one is configured.
    pub local: Option<Arc<LocalCache>>,
}

/// Whether `name` is an executable file on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

impl Stack {
    /// Starts the built-in cache (`topology`) if `cache` is
    /// [`CacheTarget::Local`], then the handler at `binary` with `settings`
    /// and `extra_env` (the telemetry variables); returns once the handler
    /// answers `GET /`.
    pub async fn start(
        manifest: &AppManifest,
        settings: &MergedSettings,
        cache: &CacheTarget,
        topology: LocalTopology,
        binary: &Path,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Stack> {
        let mut env: Vec<(String, String)> = settings.from_file.clone().into_iter().collect();
        env.extend(extra_env.iter().cloned());
        if settings.get("RUST_LOG").is_none() {
            env.push(("RUST_LOG".into(), "info".into()));
        }
        let mut opts = SpawnOptions {
            port: manifest.host.port,
            echo: Some("handler".into()),
            env_remove: Vec::new(),
            die_with_parent: true,
            args: manifest.host.arguments.clone(),
            ..SpawnOptions::default()
        };
        let local = match cache {
            CacheTarget::Real(_) => None,
            CacheTarget::Local => {
                let cache = start_local_cache(topology).await?;
                env.retain(|(k, _)| !CONNECTION_SETTINGS.contains(&k.as_str()));
                opts.env_remove = CONNECTION_SETTINGS.iter().map(|s| s.to_string()).collect();
                let (host, port) = cache.address();
                env.extend([
                    ("SSL_CERT_FILE".into(), cache.pki.ca_path.display().to_string()),
                    ("Redis__redisHostName".into(), host),
                    ("Redis__port".into(), port.to_string()),
                    ("Redis__credential".into(), "managedidentity".into()),
                ]);
                // The local front end announces maintenance as Azure does
                // (`devhost maintenance`): ask for it, unless settings say.
                if settings.get("Redis__maintenanceNotifications").is_none() {
                    env.push(("Redis__maintenanceNotifications".into(), "on".into()));
                }
                env.extend(cache.identity.env());
                Some(Arc::new(cache))
            }
        };
        let handler = HandlerProcess::spawn_with(binary, &manifest.root, &env, &opts)
            .await
            .context("starting the handler")?;
        Ok(Stack { handler, local })
    }

    /// Stops the handler (SIGTERM, then its drain), then the cache and the
    /// identity endpoint. Returns the handler's exit status text.
    pub async fn stop(mut self) -> String {
        let status = match self.handler.terminate(HANDLER_STOP_TIMEOUT).await {
            Ok(s) => s.to_string(),
            Err(e) => format!("{e:#}"),
        };
        if let Some(local) = self.local.take() {
            if let Some(front) = &local.front {
                front.close_all();
            }
            match &local.redis {
                LocalRedis::Single(r) => r.stop(),
                // Dropping the cluster kills every node.
                LocalRedis::Cluster(_) => {}
            }
            drop(local);
        }
        status
    }
}

async fn start_local_cache(topology: LocalTopology) -> anyhow::Result<LocalCache> {
    if !on_path("redis-server") {
        anyhow::bail!(
            "the built-in local cache needs `redis-server`, which is not on PATH.\n  To get it: {INSTALL_HINT}.\n  \
             Or use a real cache: copy local.settings.example.json to local.settings.json and set \
             Redis__redisHostName (Microsoft Entra ID) or Redis (access key)."
        );
    }
    // Children die with this thread (`die_with_parent`): `devhost start`
    // runs on one thread that lives as long as they do.
    let die_with_parent = RedisOptions { die_with_parent: true };
    let (pki, redis, identity_config) = match topology {
        LocalTopology::Single => {
            let pki = Pki::generate().context("generating certificates for the local cache")?;
            let redis = RedisServer::start_with(&pki, die_with_parent)
                .await
                .context("starting the local redis-server")?;
            let config = IdentityConfig {
                redis: Some(redis.admin().clone()),
                ..IdentityConfig::default()
            };
            (pki, LocalRedis::Single(redis), config)
        }
        LocalTopology::Cluster => {
            // As in Azure, the certificate names the host name only, not
            // the IP address the nodes are announced by.
            let pki =
                Pki::generate_for_hosts(&[CLUSTER_HOST]).context("generating certificates for the local cluster")?;
            let opts = ClusterOptions {
                redis: die_with_parent,
                ..ClusterOptions::default()
            };
            let cluster = RedisCluster::start(&pki, opts)
                .await
                .context("starting the local Redis Cluster")?;
            let config = IdentityConfig {
                redis_cluster: Some(cluster.admin().clone()),
                ..IdentityConfig::default()
            };
            (pki, LocalRedis::Cluster(cluster), config)
        }
    };
    let identity = Arc::new(
        IdentityEndpoint::start(identity_config)
            .await
            .context("starting the local identity endpoint")?,
    );
    let front = match &redis {
        LocalRedis::Single(r) => {
            let verifier = identity.clone();
            let verify: crate::gateway::Verify =
                Arc::new(move |user: &str, token: &str| match verifier.verify(token) {
                    Ok(claims) if claims.oid == user => Ok(claims.exp),
                    Ok(_) => Err("the user is not the token's oid".into()),
                    Err(e) => Err(format!("{e:?}")),
                });
            let config = GatewayConfig {
                backend_port: r.plain_port(),
                backend_password: r.admin().password().to_owned(),
                verify,
                pass_through_auth: true,
                cert: pki.server_cert(),
            };
            Some(
                Gateway::start_with(config)
                    .await
                    .context("starting the local front end")?,
            )
        }
        LocalRedis::Cluster(_) => None,
    };
    Ok(LocalCache {
        pki,
        redis,
        identity,
        front,
        more_fronts: std::sync::Mutex::new(Vec::new()),
    })
}

/// The host name on the local cluster's certificate, which the handler is
/// given as `Redis__redisHostName`.
const CLUSTER_HOST: &str = "localhost";
