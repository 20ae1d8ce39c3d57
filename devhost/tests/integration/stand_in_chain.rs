//! The whole stand-in chain: the real `azure_identity` client fetches a token
//! from `IdentityEndpoint`, and that token authenticates over TLS to the
//! stand-in Redis as `AUTH <oid> <token>`.

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions};
use devhost::identity::{IdentityConfig, IdentityEndpoint, VerifyError};
use devhost::pki::Pki;
use devhost::redis_server::RedisServer;
use redis::{Client, TlsCertificates};
use std::time::Duration;

async fn tls_conn(
    pki: &Pki,
    port: u16,
    user: &str,
    token: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let url = format!("rediss://{user}:{token}@127.0.0.1:{port}/");
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(pki.ca_pem.clone().into_bytes()),
    };
    Client::build_with_tls(url.as_str(), certs)?
        .get_multiplexed_async_connection()
        .await
}

/// The environment variable that marks the child run of
/// [`managed_identity_credential_in_a_child`].
const CHILD: &str = "DEVHOST_TEST_MANAGED_IDENTITY_CHILD";

/// The real `ManagedIdentityCredential` fetches a token from `idp`.
/// `azure_identity` reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the
/// process environment only, and setting them here would leak into every
/// other test of this binary and the processes they start; so the
/// credential runs in a child: this test binary re-run for
/// [`managed_identity_credential_in_a_child`] alone, with the endpoint's
/// variables in its environment. Gives the token and its `expires_on`.
async fn token_from_managed_identity_credential(idp: &IdentityEndpoint) -> (String, i64) {
    let exe = std::env::current_exe().expect("this test binary");
    let out = tokio::process::Command::new(exe)
        .args([
            "stand_in_chain::managed_identity_credential_in_a_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(idp.env())
        .env(CHILD, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the child test runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("TOKEN ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no TOKEN line from the child:\n{stdout}\n{stderr}"));
    let (token, exp) = line.split_once(' ').expect("TOKEN <token> <expires_on>");
    (token.to_string(), exp.parse().expect("expires_on, Unix seconds"))
}

/// The child half of [`minted_token_is_a_redis_password_over_tls`] (run by
/// it, with the identity endpoint's variables; fails when run any other
/// way): `ManagedIdentityCredential` with its defaults but no retries gets
/// a token for Redis from `IDENTITY_ENDPOINT` within 5 s, and prints it.
#[tokio::test]
#[ignore = "the child process of stand_in_chain::minted_token_is_a_redis_password_over_tls"]
async fn managed_identity_credential_in_a_child() {
    assert!(
        std::env::var_os(CHILD).is_some() && std::env::var_os("IDENTITY_ENDPOINT").is_some(),
        "run only by minted_token_is_a_redis_password_over_tls, which sets {CHILD} and IDENTITY_ENDPOINT"
    );
    let cred = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        client_options: ClientOptions {
            retry: RetryOptions::none(),
            ..Default::default()
        },
        ..Default::default()
    }))
    .unwrap();
    let at = tokio::time::timeout(
        Duration::from_secs(5),
        cred.get_token(&["https://redis.azure.com/.default"], None),
    )
    .await
    .expect("a token within 5 s")
    .expect("a token");
    println!("\nTOKEN {} {}", at.token.secret(), at.expires_on.unix_timestamp());
}

/// The real `azure_identity` managed-identity client gets a token from the
/// identity endpoint with App Service's query, and that token is the
/// password of its `oid` on the TLS redis-server; a wrong token, an expired
/// one and a disabled user are refused, and ACL users survive a restart.
#[tokio::test]
async fn minted_token_is_a_redis_password_over_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = Pki::generate().unwrap();
    let redis = RedisServer::start(&pki).await.unwrap();
    let cfg = IdentityConfig {
        redis: Some(redis.admin().clone()),
        ..IdentityConfig::default()
    };
    let oid = cfg.oid.clone();
    let idp = IdentityEndpoint::start(cfg).await.unwrap();

    let (token, expires_on) = token_from_managed_identity_credential(&idp).await;
    assert_eq!(idp.tokens_minted(), 1);
    assert_eq!(idp.last_token().as_deref(), Some(token.as_str()));
    let q = idp.last_query().unwrap();
    assert_eq!(q["api-version"], "2019-08-01");
    assert_eq!(q["resource"], "https://redis.azure.com");
    let claims = idp.verify(&token).unwrap();
    assert_eq!(claims.oid, oid);
    assert_eq!(expires_on, claims.exp);

    let mut conn = tls_conn(&pki, redis.tls_port(), &oid, &token).await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let clients = redis.admin().client_list().await.unwrap();
    let tls_port = format!(":{}", redis.tls_port());
    assert!(
        clients.iter().any(|c| c.user == oid && c.laddr.ends_with(&tls_port)),
        "{clients:?}"
    );

    let err = tls_conn(&pki, redis.tls_port(), &oid, "not-a-token").await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");

    // ACL users survive a restart, as access policy assignments do.
    redis.stop();
    assert!(!redis.is_running());
    redis.start_again().await.unwrap();
    let mut conn = tls_conn(&pki, redis.tls_port(), &oid, &token).await.unwrap();
    let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();

    // A short-lived token stops being a password once it expires.
    idp.set_lifetime(Duration::from_secs(1));
    let short = reqwest::Client::new()
        .get(format!(
            "{}?api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com",
            idp.endpoint_url()
        ))
        .header("x-identity-header", idp.header_secret())
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(redis.admin().clone().acl_password_count(&oid).await.unwrap(), 2);
    tls_conn(&pki, redis.tls_port(), &oid, &short).await.unwrap();
    while !matches!(idp.verify(&short), Err(VerifyError::Expired(_))) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    idp.sweep_expired().await.unwrap();
    let err = tls_conn(&pki, redis.tls_port(), &oid, &short).await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    assert_eq!(redis.admin().clone().acl_password_count(&oid).await.unwrap(), 1);

    // Losing the access policy: disable the user, kill its connections.
    redis.admin().acl_disable_user(&oid).await.unwrap();
    assert!(redis.admin().client_kill_user(&oid).await.unwrap() >= 1);
    assert!(tls_conn(&pki, redis.tls_port(), &oid, &token).await.is_err());
    redis.admin().acl_enable_user(&oid).await.unwrap();
    tls_conn(&pki, redis.tls_port(), &oid, &token).await.unwrap();
}
