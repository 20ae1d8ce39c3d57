//! The connection's behaviour across token refreshes and connection loss,
//! against a real TLS redis-server and the App Service identity endpoint
//! with tokens that live seconds.

use crate::support;

use crate::support::{sleep_until, sleep_until_unix_ms, spawn_app, wait_until, Options};
use reqwest::Method;
use std::time::{Duration, Instant};

/// Tokens of 6 s refreshed 3 s before expiry (jitter moves it up to 0.6 s
/// later): due from `exp` - 3 s to `exp` - 2.4 s.
fn short_tokens() -> Options {
    Options {
        token_lifetime: Duration::from_secs(6),
        refresh_offset_s: 3.0,
        ..Options::default()
    }
}

/// The refresh is lazy, happens at the offset, runs beside the invocation
/// that found it due, and re-authenticates the same connection: CLIENT LIST
/// shows one connection whose id stays put.
#[tokio::test]
async fn lazy_refresh_reauthenticates_the_same_connection() {
    let app = spawn_app(short_tokens()).await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let exp = app.last_token_exp_ms();
    assert_eq!(app.identity.requests(), 1);
    let before = app.handler_connections().await;
    assert_eq!(before.len(), 1, "{before:?}");

    sleep_until_unix_ms(exp - 3300).await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    assert_eq!(app.identity.requests(), 1, "not due yet: no fetch");

    // Nothing runs between the calls: the handler refreshes only when an
    // invocation finds the token due.
    sleep_until_unix_ms(exp - 2200).await;
    assert_eq!(app.identity.requests(), 1, "no background refresh");
    assert_eq!(app.get("/api/ping").await.0, 200);
    wait_until("the refresh's token request", Duration::from_secs(5), || {
        app.identity.requests() == 2
    })
    .await;
    app.wait_for_output(
        "re-authenticated the connection with the new token",
        Duration::from_secs(5),
    )
    .await;
    assert!(support::unix_ms() < exp, "re-AUTHed before the old token expired");

    let after = app.handler_connections().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, before[0].id, "the same connection, re-authenticated");
    let (_, h) = app.get("/api/health").await;
    assert_eq!(h["token"]["refreshes"], 1, "{h}");
    assert_eq!(h["connection"]["reauths"], 1, "{h}");
    assert_eq!(h["connection"]["connects"], 1, "{h}");
    assert_eq!(app.identity.requests(), 2, "one refresh inside the window");
}

/// Hundreds of concurrent invocations inside the refresh window cause one
/// token request, and all of them succeed.
#[tokio::test]
async fn single_flight_refresh_under_concurrency() {
    let app = spawn_app(short_tokens()).await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    sleep_until_unix_ms(app.last_token_exp_ms() - 2200).await;
    let calls = (0..300).map(|_| app.handler.forward(Method::GET, "/api/ping", None));
    let results = futures_util::future::join_all(calls).await;
    for r in results {
        assert_eq!(r.expect("answer").status(), 200);
    }
    wait_until("the new token in use", Duration::from_secs(5), || {
        app.output_count("new access token in use") == 2
    })
    .await;
    assert_eq!(app.identity.requests(), 2, "one initial fetch and exactly one refresh");
    assert_eq!(app.handler_connections().await.len(), 1);
}

/// A connection killed by the server is re-made transparently: the call
/// that finds it dead still succeeds.
#[tokio::test]
async fn killed_connection_is_remade() {
    let app = spawn_app(Options::default()).await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let before = app.handler_connections().await;
    assert_eq!(app.redis.admin().client_kill_user(&app.oid).await.unwrap(), 1);
    let (s, b) = app.call(Method::PUT, "/api/cache/after-kill", Some(b"v")).await;
    assert_eq!(s, 200, "{b}");
    let after = app.handler_connections().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].id, before[0].id);
    let (_, h) = app.get("/api/health").await;
    assert_eq!(h["connection"]["connects"], 2, "{h}");
    assert_eq!(h["connection"]["drops"], 1, "{h}");
}

/// A connection lost after its token expired is re-made with a fresh
/// token: the old one is no longer a valid password.
#[tokio::test]
async fn connection_lost_after_expiry_uses_a_fresh_token() {
    let app = spawn_app(Options {
        token_lifetime: Duration::from_secs(3),
        refresh_offset_s: 1.5,
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let old_token = app.identity.last_token().unwrap();
    sleep_until_unix_ms(app.last_token_exp_ms() + 100).await;
    app.identity.sweep_expired().await.unwrap();
    let still_a_password = app
        .redis
        .admin()
        .acl_remove_password(&app.oid, &old_token)
        .await
        .unwrap();
    assert!(!still_a_password, "the expired token is no longer a valid password");
    app.redis.admin().client_kill_user(&app.oid).await.unwrap();
    let (s, b) = app.get("/api/ping").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(app.identity.requests(), 2);
    assert_eq!(app.handler_connections().await.len(), 1);
}

/// A whole session at `trace` (start, refreshes, a kill, values written)
/// never prints a token, the identity header or a client secret.
#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let secret = "client-secret-that-must-not-leak";
    let app = spawn_app(Options {
        token_lifetime: Duration::from_secs(4),
        refresh_offset_s: 2.0,
        rust_log: "trace",
        // Set but unused (managed identity is forced): still never printed.
        env: vec![
            ("Redis__clientSecret".into(), secret.into()),
            ("Redis__credential".into(), "managedidentity".into()),
        ],
        ..Options::default()
    })
    .await;
    let mut tokens = Vec::new();
    let start = Instant::now();
    for round in 0..3u64 {
        let (s, _) = app
            .call(Method::PUT, &format!("/api/cache/k{round}"), Some(b"some value"))
            .await;
        assert_eq!(s, 200);
        assert_eq!(app.get("/api/health").await.0, 200);
        tokens.push(app.identity.last_token().unwrap());
        if round == 1 {
            app.redis.admin().client_kill_user(&app.oid).await.unwrap();
        }
        sleep_until(start, Duration::from_millis(2600 * (round + 1))).await;
    }
    assert!(app.identity.requests() >= 3, "refreshed during the session");
    let out = app.output();
    assert!(out.contains("TRACE") || out.contains("DEBUG"), "trace logging was on");
    for token in &tokens {
        assert!(!out.contains(token.as_str()), "a token leaked into the logs");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!out.contains(signature), "a token signature leaked into the logs");
    }
    assert!(
        !out.contains(&app.identity.header_secret()),
        "the identity header leaked"
    );
    assert!(!out.contains(secret), "the client secret leaked");
}

/// Runs `handler doctor` with the app's settings plus `extra`; returns its
/// exit code and what it printed.
async fn doctor(app: &support::TestApp, extra: &[(&str, String)]) -> (i32, String) {
    let out = tokio::process::Command::new(support::handler_binary())
        .arg("doctor")
        .envs(app.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("handler doctor runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Which step failed, by its line.
fn failed_step(text: &str) -> Option<&str> {
    text.lines()
        .find(|l| l.trim_start().starts_with("FAILED"))
        .and_then(|l| l.split_whitespace().nth(1))
}

/// `handler doctor` against working stand-ins: every step passes, in order,
/// with the user name read from the token, and the token is never printed.
#[tokio::test]
async fn doctor_passes_every_step() {
    let app = spawn_app(Options::default()).await;
    let (code, text) = doctor(&app, &[]).await;
    assert_eq!(code, 0, "{text}");
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("ok "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        steps,
        [
            "settings",
            "token",
            "network",
            "certificate",
            "authentication",
            "ping",
            "cluster"
        ],
        "{text}"
    );
    assert!(text.contains("not a cluster: standalone mode"), "{text}");
    assert!(
        text.contains(&format!("user {} (from the token's oid)", app.oid)),
        "{text}"
    );
    assert!(text.contains("PONG") && text.contains("all checks passed"), "{text}");
    let token = app.identity.last_token().unwrap();
    assert!(
        !text.contains(token.rsplit('.').next().unwrap()),
        "the token was printed"
    );
}

/// The cache refusing the token (no access policy): the doctor says the
/// authentication step failed and names the access policy and the user.
#[tokio::test]
async fn doctor_names_a_refused_token() {
    let app = spawn_app(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    app.gateway().set_reject_all(true);
    let (code, text) = doctor(&app, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert_eq!(failed_step(&text), Some("authentication"), "{text}");
    assert!(text.contains("data access policy") && text.contains(&app.oid), "{text}");
    assert!(!text.contains("PONG"), "stops at the first failure: {text}");
}

/// Nothing listening at the configured port: the network step fails and
/// names the port setting.
#[tokio::test]
async fn doctor_names_an_unreachable_cache() {
    let app = spawn_app(Options::default()).await;
    let closed = devhost::RefusingPort::new().unwrap();
    let port = closed.port();
    let (code, text) = doctor(&app, &[("Redis__port", port.to_string())]).await;
    assert_eq!(code, 1, "{text}");
    assert_eq!(failed_step(&text), Some("network"), "{text}");
    assert!(text.contains("Redis__port"), "{text}");
}

/// A certificate from a CA the machine does not trust (a TLS-inspecting
/// proxy, a private CA): the certificate step fails and names SSL_CERT_FILE.
#[tokio::test]
async fn doctor_names_an_untrusted_certificate() {
    let app = spawn_app(Options::default()).await;
    let other = devhost::pki::Pki::generate().unwrap();
    let (code, text) = doctor(&app, &[("SSL_CERT_FILE", other.ca_path.display().to_string())]).await;
    assert_eq!(code, 1, "{text}");
    assert_eq!(failed_step(&text), Some("certificate"), "{text}");
    assert!(text.contains("not issued by a CA this machine trusts"), "{text}");
    assert!(text.contains("SSL_CERT_FILE"), "{text}");
}

/// The identity endpoint refusing (no managed identity on the app): the
/// token step fails and says to assign one.
#[tokio::test]
async fn doctor_names_a_missing_identity() {
    let app = spawn_app(Options::default()).await;
    app.identity.set_mode(devhost::identity::IdentityMode::Unauthorized);
    let (code, text) = doctor(&app, &[]).await;
    assert_eq!(code, 1, "{text}");
    assert_eq!(failed_step(&text), Some("token"), "{text}");
    assert!(text.contains("az functionapp identity assign"), "{text}");
}

/// A cold start makes the connection's TCP and TLS handshake while its
/// first token is fetched, and sends AUTH once the token comes: with an
/// identity endpoint that takes 2 s, the gateway has the new handler's
/// connection before that token is minted, and the first invocation is
/// answered once it is.
#[tokio::test]
async fn the_connection_is_made_while_the_first_token_is_fetched() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = spawn_app(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gateway = app.gateway();
    let connections = gateway.stats().connections.load(SeqCst);
    let minted = app.identity.tokens_minted();
    app.identity.set_delay(Duration::from_secs(2));
    let another = app.spawn_another(&[]).await;
    wait_until(
        "the new handler's connection at the gateway",
        Duration::from_millis(1500),
        || gateway.stats().connections.load(SeqCst) > connections,
    )
    .await;
    assert_eq!(
        app.identity.tokens_minted(),
        minted,
        "connected before its token was minted"
    );
    let (status, body) = support::call_handler(&another, Method::GET, "/api/ping", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.identity.tokens_minted(), minted + 1);
    assert_eq!(
        gateway.stats().connections.load(SeqCst),
        connections + 1,
        "one connection, AUTHed when the token came"
    );
}
