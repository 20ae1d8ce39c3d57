//! `devhost doctor` end to end: the real handler's check, run with the
//! settings of a `local.settings.json` (under the environment), against a
//! TLS redis-server with ACL users and the App Service identity endpoint.

use devhost::cargo_build::{self, BuildRequest};
use devhost::identity::{IdentityConfig, IdentityEndpoint};
use devhost::pki::Pki;
use devhost::redis_server::RedisServer;
use std::path::{Path, PathBuf};
use std::process::Output;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The repository's handler, built the way `devhost start` builds it.
fn handler() -> PathBuf {
    let root = repo_root();
    cargo_build::build(&BuildRequest {
        dir: &root,
        bin: "handler",
        release: false,
        target: None,
    })
    .expect("the handler builds")
}

/// An app root holding the repository's host.json and a local.settings.json
/// with `values`.
fn app_root(values: &[(String, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("host.json"), dir.path().join("host.json")).unwrap();
    let values: serde_json::Map<String, serde_json::Value> =
        values.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    let file = serde_json::json!({"IsEncrypted": false, "Values": values});
    std::fs::write(dir.path().join("local.settings.json"), file.to_string()).unwrap();
    dir
}

async fn doctor(root: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_devhost"));
    cmd.arg("doctor")
        .arg("--app-root")
        .arg(root)
        .arg("--handler")
        .arg(handler());
    // The machine's own settings would win over the file's (as in `func start`).
    for name in [
        "Redis__redisHostName",
        "Redis__port",
        "Redis",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "SSL_CERT_FILE",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The settings come from local.settings.json: every step passes against
/// the stand-ins; a variable set in the environment wins over the file (a
/// wrong port there makes the network step fail).
#[tokio::test]
async fn checks_with_local_settings_and_the_environment_wins() {
    let pki = Pki::generate().unwrap();
    let redis = RedisServer::start(&pki).await.unwrap();
    let identity = IdentityEndpoint::start(IdentityConfig {
        redis: Some(redis.admin().clone()),
        ..IdentityConfig::default()
    })
    .await
    .unwrap();
    let mut values = vec![
        ("Redis__redisHostName".to_owned(), "127.0.0.1".to_owned()),
        ("Redis__port".to_owned(), redis.tls_port().to_string()),
        ("SSL_CERT_FILE".to_owned(), pki.ca_path.display().to_string()),
    ];
    values.extend(identity.env());
    let root = app_root(&values);
    let out = doctor(root.path(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("all checks passed"), "{}", text(&out));
    assert_eq!(identity.requests(), 1, "one token request");

    let closed = devhost::RefusingPort::new().unwrap();
    let port = closed.port();
    let out = doctor(root.path(), &[("Redis__port", port.to_string())]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED  network"), "{}", text(&out));
}

/// With no cache configured there is nothing to check: it says so and how
/// to name one, instead of checking the built-in cache.
#[tokio::test]
async fn without_a_cache_it_says_what_to_set() {
    let root = app_root(&[]);
    let out = doctor(root.path(), &[]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("no cache is configured"), "{}", text(&out));
    assert!(text(&out).contains("Redis__redisHostName"), "{}", text(&out));
}
