//! Shared set-up for the integration tests: a real TLS `redis-server` with
//! ACL users, the App Service identity endpoint, and the built `handler`
//! started the way the Functions host starts it (all from `devhost`).
//!
//! Handler output is captured for assertions; set `TEST_LOG=1` to also see it.

#![allow(dead_code)]

pub mod cluster;

/// The Entra-enforcing front end with Azure's faults (devhost's).
pub use devhost::gateway;

use devhost::functions_host::HandlerProcess;
use devhost::identity::{IdentityConfig, IdentityEndpoint, IdentityMode};
use devhost::pki::Pki;
use devhost::redis_server::{ClientInfo, RedisServer};
use gateway::Gateway;
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How to start a test app.
pub struct Options {
    /// Lifetime of each token the identity endpoint mints.
    pub token_lifetime: Duration,
    /// `Redis__tokenRefreshOffsetSeconds`.
    pub refresh_offset_s: f64,
    /// `RUST_LOG` for the handler.
    pub rust_log: &'static str,
    /// More settings, applied last.
    pub env: Vec<(String, String)>,
    /// Use the access-key connection string instead of Entra ID.
    pub access_key: bool,
    /// The identity endpoint's mode when the handler starts.
    pub identity_mode: IdentityMode,
    /// Put the Entra-enforcing gateway between the handler and Redis.
    pub gateway: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            refresh_offset_s: 300.0,
            rust_log: "debug",
            env: Vec::new(),
            access_key: false,
            identity_mode: IdentityMode::Normal,
            gateway: false,
        }
    }
}

/// One handler with its own Redis and identity endpoint.
pub struct TestApp {
    pub pki: Pki,
    pub redis: RedisServer,
    pub identity: Arc<IdentityEndpoint>,
    pub handler: HandlerProcess,
    pub gateway: Option<Gateway>,
    pub oid: String,
    /// The app settings the handler was started with.
    pub env: Vec<(String, String)>,
}

/// All `handler` printed so far, stdout then stderr.
pub fn handler_output(handler: &HandlerProcess) -> String {
    format!("{}\n{}", handler.stdout(), handler.stderr())
}

/// Waits until `handler` has written `needle`, or panics after `limit`.
pub async fn wait_for_handler_output(handler: &HandlerProcess, needle: &str, limit: Duration) {
    let start = std::time::Instant::now();
    while !handler_output(handler).contains(needle) {
        assert!(
            start.elapsed() < limit,
            "no {needle:?} in the handler's output:\n{}",
            handler_output(handler)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A token from `identity`, asked for the way the handler asks.
pub async fn fetch_token(identity: &IdentityEndpoint) -> String {
    install_crypto_provider();
    let body: Value = reqwest::Client::new()
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://redis.azure.com",
            identity.endpoint_url()
        ))
        .header("x-identity-header", identity.header_secret())
        .send()
        .await
        .expect("identity endpoint answers")
        .json()
        .await
        .expect("a JSON token");
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// The built handler binary, or `TEST_HANDLER_BINARY` when set (to run the
/// fault tests against another build, e.g. the handler before a change:
/// their printed figures are the "before" of a comparison).
pub fn handler_binary() -> std::path::PathBuf {
    std::env::var_os("TEST_HANDLER_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_handler")).to_path_buf())
}

/// The repository root: the function app's root (host.json, function-app/).
pub fn app_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The handler's router, in process, whose cache is a closed port: every
/// Redis call fails fast (503), so tests of parsing and routing need no
/// servers. `max_value_bytes` sets `CACHE_MAX_VALUE_BYTES`.
pub fn router_without_cache(max_value_bytes: usize) -> axum::Router {
    use azure_redis_handler::{router, AppState, Cache, Settings};
    let settings = Settings::from_lookup(|k| match k {
        "Redis" => Some("127.0.0.1:1,password=k,ssl=False".into()),
        "Redis__connectTimeoutSeconds" | "Redis__commandTimeoutSeconds" => Some("0.2".into()),
        "CACHE_MAX_VALUE_BYTES" => Some(max_value_bytes.to_string()),
        _ => None,
    })
    .expect("settings for a router without a cache");
    router(AppState::new(
        Cache::from_settings(&settings).expect("cache handle"),
        &settings,
    ))
}

/// Installs rustls's crypto provider for the tests' own TLS and HTTP
/// clients (once; later calls do nothing). reqwest brings none of its own
/// (`rustls-no-provider`, as the handler builds it): every test that builds
/// a client calls this first, so that none depends on another having run.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Starts Redis, the identity endpoint and the handler; returns once the
/// handler answers `GET /` (it has not necessarily connected yet).
pub async fn spawn_app(opts: Options) -> TestApp {
    let pki = Pki::generate().expect("test PKI");
    let redis = RedisServer::start(&pki).await.expect("redis-server with TLS");
    let cfg = IdentityConfig {
        redis: Some(redis.admin().clone()),
        token_lifetime: opts.token_lifetime,
        ..IdentityConfig::default()
    };
    let oid = cfg.oid.clone();
    let identity = Arc::new(IdentityEndpoint::start(cfg).await.expect("identity endpoint"));
    identity.set_mode(opts.identity_mode);
    let gateway = if opts.gateway {
        let verify = verify_with(identity.clone());
        Some(Gateway::start(&pki, redis.plain_port(), redis.admin().password(), verify).await)
    } else {
        None
    };
    let redis_port = gateway.as_ref().map_or(redis.tls_port(), Gateway::port);
    let mut env: Vec<(String, String)> = vec![
        ("SSL_CERT_FILE".into(), pki.ca_path.display().to_string()),
        ("RUST_LOG".into(), opts.rust_log.into()),
    ];
    if opts.access_key {
        let conn = format!(
            "127.0.0.1:{},password={},ssl=True,abortConnect=False",
            redis.tls_port(),
            redis.admin().password()
        );
        env.push(("Redis".into(), conn));
    } else {
        env.extend([
            ("Redis__redisHostName".into(), "127.0.0.1".into()),
            ("Redis__port".into(), redis_port.to_string()),
            (
                "Redis__tokenRefreshOffsetSeconds".into(),
                opts.refresh_offset_s.to_string(),
            ),
        ]);
        env.extend(identity.env());
    }
    env.extend(opts.env);
    let handler = HandlerProcess::spawn(&handler_binary(), app_root(), &env)
        .await
        .expect("handler starts");
    TestApp {
        pki,
        redis,
        identity,
        handler,
        gateway,
        oid,
        env,
    }
}

/// What a [`Gateway`] accepts: a token the identity endpoint minted, still
/// valid, presented as the user of its `oid`; gives the token's expiry.
pub fn verify_with(identity: Arc<IdentityEndpoint>) -> gateway::Verify {
    Arc::new(move |user: &str, token: &str| match identity.verify(token) {
        Ok(claims) if claims.oid == user => Ok(claims.exp),
        Ok(_) => Err("the user is not the token's oid".into()),
        Err(e) => Err(format!("{e:?}")),
    })
}

impl TestApp {
    /// Sends a forwarded request; returns the status and the JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        call_handler(&self.handler, method, path, body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    /// Connections the handler's identity has open on Redis.
    pub async fn handler_connections(&self) -> Vec<ClientInfo> {
        let all = self.redis.admin().client_list().await.expect("CLIENT LIST");
        all.into_iter().filter(|c| c.user == self.oid).collect()
    }

    /// Starts another handler with the same settings, `overrides` applied
    /// last (another instance of the app, say), as the cluster rig's
    /// `ClusterApp::spawn_another` does.
    pub async fn spawn_another(&self, overrides: &[(&str, &str)]) -> HandlerProcess {
        let mut env = self.env.clone();
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        HandlerProcess::spawn(&handler_binary(), app_root(), &env)
            .await
            .expect("handler starts")
    }

    /// The gateway (the test asked for one).
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("started with gateway: true")
    }

    /// The exact expiry (Unix ms) of the last token the identity minted:
    /// tests time themselves on it, not on the nominal lifetime, since
    /// `expires_on` is whole seconds.
    pub fn last_token_exp_ms(&self) -> i64 {
        let token = self.identity.last_token().expect("a token was minted");
        self.identity.verify(&token).expect("a valid token").exp * 1000
    }

    /// How many times the handler has written `needle` so far.
    pub fn output_count(&self, needle: &str) -> usize {
        self.output().matches(needle).count()
    }

    /// All the handler printed so far.
    pub fn output(&self) -> String {
        handler_output(&self.handler)
    }

    /// Waits until the handler has written `needle`, or panics after `limit`.
    pub async fn wait_for_output(&self, needle: &str, limit: Duration) {
        wait_for_handler_output(&self.handler, needle, limit).await
    }
}

/// Sends a forwarded request to `handler`; returns the status and the JSON
/// body, panicking when the answer is not JSON.
pub async fn call_handler(handler: &HandlerProcess, method: Method, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let res = handler
        .forward(method.clone(), path, body.map(<[u8]>::to_vec))
        .await
        .expect("handler answers");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = res.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{method} {path}: {status} {ctype} is not JSON: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(
        ctype.starts_with("application/json"),
        "{method} {path}: content-type {ctype}"
    );
    (status, json)
}

/// Milliseconds since the Unix epoch, the clock tokens' `exp` is on.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sleeps until the Unix time `at_ms` (no-op if it has passed).
pub async fn sleep_until_unix_ms(at_ms: i64) {
    let left = at_ms - unix_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

/// Polls `done` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sleeps until `deadline` (a point relative to `start`).
pub async fn sleep_until(start: std::time::Instant, deadline: Duration) {
    if let Some(left) = deadline.checked_sub(start.elapsed()) {
        tokio::time::sleep(left).await;
    }
}
