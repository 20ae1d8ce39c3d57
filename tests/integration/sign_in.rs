//! Every sign-in the handler offers besides App Service managed identity,
//! end to end: the real handler process signs in through a stand-in (the
//! `az`/`azd` executables, or the Entra ID token endpoint over TLS), the
//! token is accepted by a real TLS redis-server as the password of its
//! `oid`, GET and PUT work, and when the token is due the handler asks the
//! same source again and re-authenticates the same connection.
//!
//! What cannot be pointed at a stand-in is not here: IMDS
//! (`http://169.254.169.254` is a constant in azure_identity 1.0.0). The
//! identity client's trust of `SSL_CERT_FILE` is a unit test of
//! `credential.rs`.

use crate::support::{app_root, handler_binary, unix_ms, wait_until};
use devhost::entra::{
    CliConfig, DeveloperCli, EntraConfig, EntraEndpoint, FederatedCredential, Presented, Principal, Tool,
};
use devhost::functions_host::{HandlerProcess, SpawnOptions};
use devhost::identity::Claims;
use devhost::pki::Pki;
use devhost::redis_server::RedisServer;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

const REDIS_SCOPE: &str = "https://redis.azure.com/.default";

/// The Azure Cache for Redis application's id: the scope's resource in
/// the sovereign-cloud test (`<app id>/.default`, as Microsoft documents
/// beside `https://redis.azure.com/.default`).
const REDIS_APP_ID: &str = "acca5fbb-b7e4-4009-81f1-37e38fd66d78";

/// Tokens of 6 s, refreshed from 3 s before expiry.
const LIFETIME: Duration = Duration::from_secs(6);

/// Settings in the test's own environment that would sign the handler in
/// some other way; none reaches it.
const FOREIGN: &[&str] = &[
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "Redis",
    "Redis__credential",
    "Redis__clientId",
    "Redis__tenantId",
    "Redis__clientSecret",
    "Redis__principalId",
    "Redis__scope",
];

/// Where tokens come from, as the test counts and times them.
trait Source {
    /// Tokens handed out so far.
    fn minted(&self) -> usize;
    /// The last token and its `exp` (Unix ms).
    fn last(&self) -> (String, i64);
}

/// The last token and its `exp` (Unix ms), read from the token itself.
fn last_of(token: Option<String>, claims: impl Fn(&str) -> Option<Claims>) -> (String, i64) {
    let token = token.expect("a token was handed out");
    let exp = claims(&token).expect("minted here").exp;
    (token, exp * 1000)
}

impl Source for DeveloperCli {
    fn minted(&self) -> usize {
        self.tokens_minted()
    }
    fn last(&self) -> (String, i64) {
        last_of(self.last_token(), |t| self.claims(t))
    }
}

impl Source for EntraEndpoint {
    fn minted(&self) -> usize {
        self.tokens_minted()
    }
    fn last(&self) -> (String, i64) {
        last_of(self.last_token(), |t| self.claims(t))
    }
}

/// A TLS redis-server with ACL users, and the test CA its certificate and
/// the Entra ID stand-in's come from.
struct Cache {
    pki: Pki,
    redis: RedisServer,
}

impl Cache {
    async fn start() -> Cache {
        let pki = Pki::generate().expect("test PKI");
        let redis = RedisServer::start(&pki).await.expect("redis-server with TLS");
        Cache { pki, redis }
    }

    /// The signed-in principal, its tokens valid passwords here.
    fn principal(&self) -> Principal {
        Principal {
            redis: Some(self.redis.admin().clone()),
            token_lifetime: LIFETIME,
            ..Principal::default()
        }
    }

    /// Starts the handler for this cache with `env` (on top of the cache's
    /// settings), nothing else from the test's environment deciding how it
    /// signs in.
    async fn handler(&self, rust_log: &str, env: &[(&str, String)]) -> HandlerProcess {
        let mut all: Vec<(String, String)> = vec![
            ("SSL_CERT_FILE".into(), self.pki.ca_path.display().to_string()),
            ("RUST_LOG".into(), rust_log.into()),
            ("Redis__redisHostName".into(), "127.0.0.1".into()),
            ("Redis__port".into(), self.redis.tls_port().to_string()),
            ("Redis__tokenRefreshOffsetSeconds".into(), "3".into()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let opts = SpawnOptions {
            env_remove: FOREIGN.iter().map(|s| s.to_string()).collect(),
            ..SpawnOptions::default()
        };
        HandlerProcess::spawn_with(&handler_binary(), app_root(), &all, &opts)
            .await
            .expect("handler starts")
    }

    /// The handler's connections: those authenticated as `oid`.
    async fn connections_of(&self, oid: &str) -> Vec<devhost::redis_server::ClientInfo> {
        let all = self.redis.admin().client_list().await.expect("CLIENT LIST");
        all.into_iter().filter(|c| c.user == oid).collect()
    }
}

/// Sends a forwarded request; the status and the JSON body.
async fn call(h: &HandlerProcess, method: Method, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let res = h
        .forward(method, path, body.map(<[u8]>::to_vec))
        .await
        .expect("handler answers");
    let status = res.status().as_u16();
    let bytes = res.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

fn output(h: &HandlerProcess) -> String {
    format!("{}\n{}", h.stdout(), h.stderr())
}

/// Token fetched → AUTH as its `oid` accepted → PUT and GET work → when the
/// token is due, the source is asked again and the same connection is
/// re-authenticated, before the old token expires → PUT and GET still work.
/// No token reaches the handler's output.
async fn sign_in_end_to_end(cache: &Cache, h: &HandlerProcess, source: &impl Source, oid: &str) {
    let (s, b) = call(h, Method::PUT, "/api/cache/signed-in", Some(b"first")).await;
    assert_eq!(s, 200, "PUT with the first token: {b}\n{}", output(h));
    let (s, b) = call(h, Method::GET, "/api/cache/signed-in", None).await;
    assert_eq!((s, &b["value"]), (200, &Value::from("first")), "{b}");
    assert_eq!(source.minted(), 1, "one token for start-up and the first calls");
    let before = cache.connections_of(oid).await;
    assert_eq!(
        before.len(),
        1,
        "one connection, authenticated as the token's oid: {before:?}"
    );

    let (first, exp) = source.last();
    // The refresh is lazy: invocations drive it. Call until the source has
    // been asked again, which must happen before the first token expires.
    while source.minted() < 2 {
        assert!(unix_ms() < exp, "no refresh before the token expired:\n{}", output(h));
        assert_eq!(call(h, Method::GET, "/api/ping", None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("the re-AUTH with the new token", Duration::from_secs(5), || {
        output(h).contains("re-authenticated the connection with the new token")
    })
    .await;
    assert!(unix_ms() < exp, "re-authenticated before the old token expired");
    let (second, _) = source.last();
    assert_ne!(first, second);

    let (s, b) = call(h, Method::PUT, "/api/cache/signed-in", Some(b"second")).await;
    assert_eq!(s, 200, "PUT after the refresh: {b}");
    let (s, b) = call(h, Method::GET, "/api/cache/signed-in", None).await;
    assert_eq!((s, &b["value"]), (200, &Value::from("second")), "{b}");
    let after = cache.connections_of(oid).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, before[0].id, "the same connection, re-authenticated");
    let (_, health) = call(h, Method::GET, "/api/health", None).await;
    assert_eq!(health["token"]["refreshes"], 1, "{health}");
    assert_eq!(health["connection"]["reauths"], 1, "{health}");

    let out = output(h);
    for token in [&first, &second] {
        assert!(!out.contains(token.as_str()), "a token reached the logs");
        assert!(
            !out.contains(token.rsplit('.').next().unwrap()),
            "a token signature reached the logs"
        );
    }
}

/// With nothing configured (a laptop), the handler signs in through the
/// Azure CLI: `az account get-access-token -o json --scope
/// https://redis.azure.com/.default`, run in `/bin`, exactly as
/// azure_identity runs it; its `accessToken`/`expires_on` answer is used
/// end to end, and the refresh runs `az` again.
#[tokio::test]
async fn azure_cli_by_default() {
    let cache = Cache::start().await;
    let cli = DeveloperCli::start(CliConfig {
        principal: cache.principal(),
        ..CliConfig::default()
    })
    .await
    .expect("az and azd stand-ins");
    let h = cache.handler("debug", &[("PATH", cli.path_env())]).await;
    let oid = cache.principal().oid;
    sign_in_end_to_end(&cache, &h, &cli, &oid).await;

    let calls = cli.calls();
    assert_eq!(calls.len(), 2, "one az run per token: {calls:?}");
    for c in &calls {
        assert_eq!(c.tool, Tool::Az);
        assert_eq!(
            c.args,
            ["account", "get-access-token", "-o", "json", "--scope", REDIS_SCOPE]
        );
        assert_eq!((c.cwd.as_str(), c.exit_code), ("/bin", 0));
    }
}

/// `Redis__credential=developertools` with the Azure CLI signed out falls
/// back to the Azure Developer CLI (`azd auth token -o json --no-prompt
/// --scope …`, RFC 3339 `expiresOn`), and the refresh asks azd again
/// without trying az a second time (azure_identity keeps the tool that
/// worked).
#[tokio::test]
async fn azure_developer_cli_after_a_signed_out_az() {
    let cache = Cache::start().await;
    let cli = DeveloperCli::start(CliConfig {
        principal: cache.principal(),
        ..CliConfig::default()
    })
    .await
    .expect("az and azd stand-ins");
    cli.set_signed_in(Tool::Az, false);
    let env = [
        ("PATH", cli.path_env()),
        ("Redis__credential", "developertools".to_owned()),
    ];
    let h = cache.handler("debug", &env).await;
    let oid = cache.principal().oid;
    sign_in_end_to_end(&cache, &h, &cli, &oid).await;

    assert_eq!(cli.calls_to(Tool::Az), 1, "az tried once: {:?}", cli.calls());
    assert_eq!(cli.calls_to(Tool::Azd), 2, "azd for both tokens: {:?}", cli.calls());
    for c in cli.calls().iter().filter(|c| c.tool == Tool::Azd) {
        assert_eq!(
            c.args,
            ["auth", "token", "-o", "json", "--no-prompt", "--scope", REDIS_SCOPE]
        );
        assert_eq!((c.cwd.as_str(), c.exit_code), ("/bin", 0));
    }
}

/// An app registration's tenant, client id and secret, in a config for the
/// Entra stand-in and in the handler's settings.
fn app(cache: &Cache, secret: Option<&str>) -> EntraConfig {
    EntraConfig {
        principal: cache.principal(),
        client_secret: secret.map(str::to_owned),
        federated: Some(FederatedCredential::default()),
        ..EntraConfig::default()
    }
}

/// `Redis__clientSecret` (with `Redis__clientId`, `Redis__tenantId`) signs
/// in at `AZURE_AUTHORITY_HOST`, over TLS trusted through `SSL_CERT_FILE`,
/// with the client credentials grant; the refresh posts again. At `trace`,
/// neither the secret nor a token reaches the output.
#[tokio::test]
async fn client_secret_at_the_authority_host() {
    let cache = Cache::start().await;
    let secret = "client-secret-that-must-not-leak";
    let cfg = app(&cache, Some(secret));
    let idp = EntraEndpoint::start(&cache.pki, cfg.clone())
        .await
        .expect("Entra stand-in");
    let env = [
        ("AZURE_AUTHORITY_HOST", idp.authority_host()),
        ("Redis__tenantId", cfg.principal.tenant_id.clone()),
        ("Redis__clientId", cfg.client_id.clone()),
        ("Redis__clientSecret", secret.to_owned()),
    ];
    let h = cache.handler("trace", &env).await;
    sign_in_end_to_end(&cache, &h, &idp, &cfg.principal.oid).await;

    let requests = idp.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert_eq!(r.tenant, cfg.principal.tenant_id);
        assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(r.client_id.as_deref(), Some(cfg.client_id.as_str()));
        assert_eq!(r.scope.as_deref(), Some(REDIS_SCOPE));
        assert_eq!((r.presented, r.status), (Presented::Secret, 200));
    }
    let out = output(&h);
    assert!(out.contains("TRACE"), "trace logging was on");
    assert!(!out.contains(secret), "the client secret reached the logs");
}

/// `AZURE_FEDERATED_TOKEN_FILE` with `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`
/// (what AKS injects) signs in with workload identity: the file's token is
/// the client assertion Entra ID checks against the federated credential.
#[tokio::test]
async fn workload_identity_from_the_token_file() {
    let cache = Cache::start().await;
    let cfg = app(&cache, None);
    let idp = EntraEndpoint::start(&cache.pki, cfg.clone())
        .await
        .expect("Entra stand-in");
    let file = cache.pki.dir.join("azure-identity-token");
    let assertion = idp.federated_token();
    std::fs::write(&file, &assertion).unwrap();
    let env = [
        ("AZURE_AUTHORITY_HOST", idp.authority_host()),
        ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
        ("AZURE_CLIENT_ID", cfg.client_id.clone()),
        ("AZURE_TENANT_ID", cfg.principal.tenant_id.clone()),
    ];
    let h = cache.handler("debug", &env).await;
    sign_in_end_to_end(&cache, &h, &idp, &cfg.principal.oid).await;

    let requests = idp.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert_eq!(r.client_id.as_deref(), Some(cfg.client_id.as_str()));
        assert_eq!((r.presented, r.status), (Presented::Assertion, 200));
    }
    assert!(!output(&h).contains(&assertion), "the assertion reached the logs");
}

/// A cloud other than the public one: `AZURE_AUTHORITY_HOST` is the host the
/// client secret signs in at, and `Redis__scope` the scope it asks for (the
/// stand-in knows only that resource, as a sovereign tenant knows its own);
/// the Azure CLI is asked for the same scope.
#[tokio::test]
async fn sovereign_cloud_authority_and_scope() {
    let cache = Cache::start().await;
    let scope = format!("{REDIS_APP_ID}/.default");
    let cfg = EntraConfig {
        resources: vec![REDIS_APP_ID.into()],
        ..app(&cache, Some("s"))
    };
    let sovereign = EntraEndpoint::start(&cache.pki, cfg.clone())
        .await
        .expect("Entra stand-in");
    let env = [
        ("AZURE_AUTHORITY_HOST", sovereign.authority_host()),
        ("Redis__scope", scope.clone()),
        ("Redis__tenantId", cfg.principal.tenant_id.clone()),
        ("Redis__clientId", cfg.client_id.clone()),
        ("Redis__clientSecret", "s".to_owned()),
    ];
    let h = cache.handler("debug", &env).await;
    let (s, b) = call(&h, Method::PUT, "/api/cache/sovereign", Some(b"v")).await;
    assert_eq!(s, 200, "{b}\n{}", output(&h));
    let requests = sovereign.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (requests[0].scope.as_deref(), requests[0].status),
        (Some(scope.as_str()), 200)
    );
    let token = sovereign.last_token().unwrap();
    assert_eq!(sovereign.claims(&token).unwrap().aud, REDIS_APP_ID);

    let cli = DeveloperCli::start(CliConfig {
        principal: cache.principal(),
        ..CliConfig::default()
    })
    .await
    .expect("az stand-in");
    let h = cache
        .handler("debug", &[("PATH", cli.path_env()), ("Redis__scope", scope.clone())])
        .await;
    assert_eq!(call(&h, Method::GET, "/api/ping", None).await.0, 200);
    let calls = cli.calls();
    assert_eq!(
        calls[0].args,
        ["account", "get-access-token", "-o", "json", "--scope", scope.as_str()]
    );
}
