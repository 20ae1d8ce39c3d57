//! The processes behind the local host: the handler and, without a real
//! cache configured, the built-in cache (a TLS `redis-server` with an ACL
//! user per identity) and an App Service–style managed-identity endpoint
//! whose tokens are that user's passwords.
//!
//! The handler gets the environment the Functions host gives it (see
//! [`crate::functions_host`]) plus the app settings; with the built-in cache
//! the connection settings point at it and authenticate with the managed
//! identity, as an app in Azure does.

use crate::app_manifest::AppManifest;
use crate::functions_host::{HandlerProcess, SpawnOptions};
use crate::identity::{IdentityConfig, IdentityEndpoint};
use crate::local_settings::{CacheTarget, MergedSettings, CONNECTION_SETTINGS};
use crate::pki::Pki;
use crate::redis_server::{RedisOptions, RedisServer, INSTALL_HINT};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;

/// How long the handler gets to drain after SIGTERM before it is killed
/// (its own drain defaults to 10 s).
const HANDLER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The built-in cache and identity.
pub struct LocalCache {
    /// The TLS certificates (a temporary folder, deleted on drop).
    pub pki: Pki,
    /// The `redis-server` child.
    pub redis: RedisServer,
    /// The managed-identity endpoint.
    pub identity: IdentityEndpoint,
}

/// Everything started for a local run.
pub struct Stack {
    /// The handler.
    pub handler: HandlerProcess,
    /// The built-in cache, unless a real one is configured.
    pub local: Option<LocalCache>,
}

/// Whether `name` is an executable file on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

impl Stack {
    /// Starts the built-in cache if `cache` is [`CacheTarget::Local`], then
    /// the handler at `binary` with `settings`; returns once the handler
    /// answers `GET /`.
    pub async fn start(
        manifest: &AppManifest,
        settings: &MergedSettings,
        cache: &CacheTarget,
        binary: &Path,
    ) -> anyhow::Result<Stack> {
        let mut env: Vec<(String, String)> = settings.from_file.clone().into_iter().collect();
        if settings.get("RUST_LOG").is_none() {
            env.push(("RUST_LOG".into(), "info".into()));
        }
        let mut opts = SpawnOptions {
            port: manifest.host.port,
            echo: Some("handler".into()),
            env_remove: Vec::new(),
            die_with_parent: true,
            args: manifest.host.arguments.clone(),
        };
        let local = match cache {
            CacheTarget::Real(_) => None,
            CacheTarget::Local => {
                let cache = start_local_cache().await?;
                env.retain(|(k, _)| !CONNECTION_SETTINGS.contains(&k.as_str()));
                opts.env_remove = CONNECTION_SETTINGS.iter().map(|s| s.to_string()).collect();
                env.extend([
                    ("SSL_CERT_FILE".into(), cache.pki.ca_path.display().to_string()),
                    ("Redis__redisHostName".into(), "127.0.0.1".into()),
                    ("Redis__port".into(), cache.redis.tls_port().to_string()),
                    ("Redis__credential".into(), "managedidentity".into()),
                ]);
                env.extend(cache.identity.env());
                Some(cache)
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
            local.redis.stop();
            drop(local);
        }
        status
    }
}

async fn start_local_cache() -> anyhow::Result<LocalCache> {
    if !on_path("redis-server") {
        anyhow::bail!(
            "the built-in local cache needs `redis-server`, which is not on PATH.\n  To get it: {INSTALL_HINT}.\n  \
             Or use a real cache: copy local.settings.example.json to local.settings.json and set \
             Redis__redisHostName (Microsoft Entra ID) or Redis (access key)."
        );
    }
    let pki = Pki::generate().context("generating certificates for the local cache")?;
    let redis = RedisServer::start_with(&pki, RedisOptions { die_with_parent: true })
        .await
        .context("starting the local redis-server")?;
    let identity = IdentityEndpoint::start(IdentityConfig {
        redis: Some(redis.admin_handle()),
        ..IdentityConfig::default()
    })
    .await
    .context("starting the local identity endpoint")?;
    Ok(LocalCache { pki, redis, identity })
}
