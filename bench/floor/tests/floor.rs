//! The floor against a real TLS `redis-server` with an ACL user, started as
//! the bench starts it. (It also makes `cargo test --workspace` build
//! `target/debug/floor`, which the smoke run in CI uses.)

use devhost::functions_host::HandlerProcess;
use devhost::pki::Pki;
use devhost::redis_server::RedisServer;
use std::path::Path;

/// PUT stores the body in Redis and answers 204 with nothing; GET answers
/// the value as it is; an absent key and any other path are 404.
#[tokio::test]
async fn serves_get_and_put_over_one_tls_connection() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let redis = RedisServer::start(&pki).await?;
    redis.admin().acl_add_password("floor", "floor-secret").await?;
    let settings = [
        ("Redis__redisHostName", "127.0.0.1".to_owned()),
        ("Redis__port", redis.tls_port().to_string()),
        ("SSL_CERT_FILE", pki.ca_path.display().to_string()),
        ("FLOOR_REDIS_USER", "floor".to_owned()),
        ("FLOOR_REDIS_PASSWORD", "floor-secret".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let floor = HandlerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_floor")),
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &settings,
    )
    .await?;
    let http = floor.client().http().clone();
    let url = |path: &str| format!("{}{path}", floor.base_url());

    let put = http.put(url("/api/cache/k1")).body("hello").send().await?;
    assert_eq!(put.status().as_u16(), 204);
    assert!(put.bytes().await?.is_empty());
    let stored: Option<String> = redis.admin().cmd(redis::cmd("GET").arg("k1")).await?;
    assert_eq!(stored.as_deref(), Some("hello"));

    let get = http.get(url("/api/cache/k1")).send().await?;
    assert_eq!(get.status().as_u16(), 200);
    assert_eq!(&get.bytes().await?[..], b"hello");

    for path in ["/api/cache/absent", "/api/ping", "/"] {
        let status = http.get(url(path)).send().await?.status().as_u16();
        assert_eq!(status, 404, "GET {path}");
    }
    Ok(())
}
