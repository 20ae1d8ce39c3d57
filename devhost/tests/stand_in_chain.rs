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

#[tokio::test]
async fn minted_token_is_a_redis_password_over_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = Pki::generate().unwrap();
    let redis = RedisServer::start(&pki).await.unwrap();
    let cfg = IdentityConfig {
        redis: Some(redis.admin_handle()),
        ..IdentityConfig::default()
    };
    let oid = cfg.oid.clone();
    let idp = IdentityEndpoint::start(cfg).await.unwrap();

    // The only test in this binary that touches these variables.
    for (k, v) in idp.env() {
        std::env::set_var(k, v);
    }
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
    .unwrap()
    .unwrap();
    let token = at.token.secret().to_string();
    assert_eq!(idp.tokens_minted(), 1);
    assert_eq!(idp.last_token().as_deref(), Some(token.as_str()));
    let q = idp.last_query().unwrap();
    assert_eq!(q["api-version"], "2019-08-01");
    assert_eq!(q["resource"], "https://redis.azure.com");
    let claims = idp.verify(&token).unwrap();
    assert_eq!(claims.oid, oid);
    assert_eq!(at.expires_on.unix_timestamp(), claims.exp);

    let mut conn = tls_conn(&pki, redis.tls_port(), &oid, &token).await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let clients = redis.client_list().await.unwrap();
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
    assert_eq!(redis.admin_handle().acl_password_count(&oid).await.unwrap(), 2);
    tls_conn(&pki, redis.tls_port(), &oid, &short).await.unwrap();
    while !matches!(idp.verify(&short), Err(VerifyError::Expired(_))) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    idp.sweep_expired().await.unwrap();
    let err = tls_conn(&pki, redis.tls_port(), &oid, &short).await.unwrap_err();
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    assert_eq!(redis.admin_handle().acl_password_count(&oid).await.unwrap(), 1);

    // Losing the access policy: disable the user, kill its connections.
    redis.acl_disable_user(&oid).await.unwrap();
    assert!(redis.client_kill_user(&oid).await.unwrap() >= 1);
    assert!(tls_conn(&pki, redis.tls_port(), &oid, &token).await.is_err());
    redis.acl_enable_user(&oid).await.unwrap();
    tls_conn(&pki, redis.tls_port(), &oid, &token).await.unwrap();
}
