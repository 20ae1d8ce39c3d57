//! The process as the host sees it: start-up that never waits for Redis or
//! the identity, settings errors, the loopback-only listener, and a clean
//! exit on SIGTERM.

mod support;

use devhost::identity::IdentityMode;
use std::time::{Duration, Instant};
use support::{handler_binary, spawn_app, Options};

/// `GET /` answers while the identity endpoint hangs and Redis is down;
/// invocations meanwhile fail fast with 503 naming the problem, and succeed
/// once both are back.
#[tokio::test]
async fn start_up_never_waits_for_identity_or_redis() {
    let pki = devhost::pki::Pki::generate().unwrap();
    let redis = devhost::redis_server::RedisServer::start(&pki).await.unwrap();
    let identity = devhost::identity::IdentityEndpoint::start(devhost::identity::IdentityConfig {
        redis: Some(redis.admin_handle()),
        ..Default::default()
    })
    .await
    .unwrap();
    identity.set_mode(IdentityMode::Hang);
    redis.stop();
    let mut env = vec![
        ("SSL_CERT_FILE".to_string(), pki.ca_path.display().to_string()),
        ("Redis__redisHostName".into(), "127.0.0.1".into()),
        ("Redis__port".into(), redis.tls_port().to_string()),
        ("Redis__tokenTimeoutSeconds".into(), "1".into()),
    ];
    env.extend(identity.env());
    let started = Instant::now();
    let handler = devhost::functions_host::HandlerProcess::spawn(handler_binary(), support::app_root(), &env)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ready without a token or a cache"
    );

    let t = Instant::now();
    let res = handler.forward(reqwest::Method::GET, "/api/ping", None).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "identity_unavailable", "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by the token deadline: {:?}",
        t.elapsed()
    );

    identity.set_mode(IdentityMode::Normal);
    let t = Instant::now();
    let body = loop {
        let res = handler.forward(reqwest::Method::GET, "/api/ping", None).await.unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        if body["code"] == "cache_unavailable" {
            break body;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "identity never recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body["error"].as_str().unwrap().contains("cache"), "{body}");

    redis.start_again().await.unwrap();
    let t = Instant::now();
    loop {
        let res = handler.forward(reqwest::Method::GET, "/api/ping", None).await.unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "cache never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A missing or bad setting stops the process at once with one line naming it.
#[test]
fn bad_settings_stop_with_one_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "Redis__redisHostName"),
        (&[("Redis__redisHostName", "h"), ("Redis__port", "none")], "Redis__port"),
        (
            &[("Redis", "h:6380,password=KEY"), ("Redis__redisHostName", "h")],
            "Redis",
        ),
        (
            &[("Redis__redisHostName", "h"), ("SSL_CERT_FILE", "/nonexistent/ca.pem")],
            "SSL_CERT_FILE",
        ),
    ];
    for (env, name) in cases {
        let out = std::process::Command::new(handler_binary())
            .env_clear()
            .envs(env.iter().copied())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!stderr.contains("KEY"), "{stderr}");
    }
}

/// The handler listens on 127.0.0.1 only, never on all addresses.
#[tokio::test]
async fn listens_on_loopback_only() {
    let app = spawn_app(Options::default()).await;
    let port = format!("{:04X}", app.handler.port());
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let listening: Vec<&str> = tcp
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&format!(":{port}")) && f[3] == "0A"
        })
        .collect();
    assert_eq!(listening.len(), 1, "{listening:?}");
    assert!(
        listening[0].split_whitespace().nth(1).unwrap().starts_with("0100007F:"),
        "{listening:?}"
    );
}

/// SIGTERM lets an in-flight invocation finish, then the process exits 0.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    // The identity endpoint holds every token request until released, so
    // the PUT below is in flight, waiting for its token, when SIGTERM comes.
    let mut app = spawn_app(Options {
        identity_mode: IdentityMode::Hang,
        env: vec![("Redis__tokenTimeoutSeconds".into(), "5".into())],
        ..Options::default()
    })
    .await;
    let url = format!("{}/api/cache/drained", app.handler.base_url());
    let in_flight = tokio::spawn(async move {
        let r = reqwest::Client::new().put(url).body("v").send().await?;
        Ok::<u16, reqwest::Error>(r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let identity = &app.identity;
    let release = async {
        // terminate() sends SIGTERM at once; release the token a moment later.
        tokio::time::sleep(Duration::from_millis(500)).await;
        identity.set_mode(IdentityMode::Normal);
    };
    let (exit, ()) = tokio::join!(app.handler.terminate(Duration::from_secs(15)), release);
    let exit = exit.unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(
        in_flight.await.unwrap().ok(),
        Some(200),
        "the in-flight invocation finished before the exit"
    );
    let stored: Option<String> = app.redis.admin_cmd(redis::cmd("GET").arg("drained")).await.unwrap();
    assert_eq!(stored.as_deref(), Some("v"));
    let out = app.output();
    let (shutdown, done) = (
        out.find("shutting down").unwrap(),
        out.find("invocation done method=PUT").unwrap(),
    );
    assert!(shutdown < done, "SIGTERM came while the PUT was in flight:\n{out}");
}
