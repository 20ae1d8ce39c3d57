//! Never fail an invocation for an expiring token, a restarting cache or a
//! slow identity endpoint: faults injected into real parts (redis-server,
//! the identity endpoint, the Entra-enforcing gateway), each a test.

use crate::support;

use crate::support::{sleep_until_unix_ms, spawn_app, wait_until, Options, TestApp};
use devhost::identity::IdentityMode;
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Short deadlines so that fault tests stay quick: 1 s per token fetch,
/// connect and command.
fn fast_deadlines() -> Vec<(String, String)> {
    [
        "Redis__tokenTimeoutSeconds",
        "Redis__connectTimeoutSeconds",
        "Redis__commandTimeoutSeconds",
    ]
    .iter()
    .map(|k| (k.to_string(), "1".to_string()))
    .collect()
}

/// One invocation's outcome.
struct Outcome {
    status: u16,
    body: Value,
    took: Duration,
}

async fn invoke(app: &TestApp, method: Method, path: &str, body: Option<&[u8]>) -> Outcome {
    let start = Instant::now();
    let (status, body) = app.call(method, path, body).await;
    Outcome {
        status,
        body,
        took: start.elapsed(),
    }
}

/// The gateway itself enforces what Azure does: a valid token works, a bad
/// one is a real WRONGPASS, and a connection whose token expires without a
/// new AUTH is closed. (So the tests below would catch a handler that did
/// not re-authenticate in time.)
#[tokio::test]
async fn gateway_enforces_tokens_and_expiry() {
    let app = spawn_app(Options {
        gateway: true,
        token_lifetime: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let gw = app.gateway();
    // The handler's warm-up connection: authenticated before anything below.
    wait_until("the handler's warm-up AUTH", Duration::from_secs(5), || {
        gw.stats().auth_accepted.load(Ordering::SeqCst) == 1
    })
    .await;
    let token = support::fetch_token(&app.identity).await;
    let client = |user: &str, password: &str| {
        let info = redis::ConnectionAddr::TcpTls {
            host: "127.0.0.1".into(),
            port: gw.port(),
            insecure: false,
            tls_params: None,
        };
        let info = redis::IntoConnectionInfo::into_connection_info(info)
            .unwrap()
            .set_redis_settings(
                redis::RedisConnectionInfo::default()
                    .set_username(user)
                    .set_password(password),
            );
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(app.pki.ca_pem.clone().into_bytes()),
        };
        redis::Client::build_with_tls(info, certs).unwrap()
    };
    crate::support::install_crypto_provider();
    let wrong = client(&app.oid, "eyJ.not.valid")
        .get_multiplexed_async_connection()
        .await;
    let wrong = wrong.unwrap_err();
    assert!(
        wrong.to_string().contains("WRONGPASS") || wrong.kind() == redis::ErrorKind::AuthenticationFailed,
        "{wrong}"
    );
    let other_user = client("someone-else", &token).get_multiplexed_async_connection().await;
    let other_user = other_user.unwrap_err();
    assert!(
        other_user.to_string().contains("WRONGPASS") || other_user.kind() == redis::ErrorKind::AuthenticationFailed,
        "{other_user}"
    );
    let mut conn = client(&app.oid, &token)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let exp_ms = app.identity.verify(&token).unwrap().exp * 1000;
    // The handler's own connection, idle since its warm-up, is closed too:
    // refresh is lazy, so an idle instance's connection expires. The next
    // invocation refreshes and reconnects without failing.
    wait_until("both connections closed for expiry", Duration::from_secs(4), || {
        gw.stats().expiry_closes.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(support::unix_ms() >= exp_ms, "not closed before its exp");
    let after: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
    assert!(after.is_err(), "closed once its token expired");
    assert!(gw.stats().auth_rejected.load(Ordering::SeqCst) >= 2);
    let (s, b) = app.get("/api/ping").await;
    assert_eq!(s, 200, "{b}");
}

/// Soak: tokens of 10 s refreshed 4 s before expiry, continuous concurrent
/// load through the host emulator for several lifetimes: no failed
/// invocation, no close for expiry, one token request per refresh period.
#[tokio::test]
async fn soak_across_token_lifetimes() {
    let lifetime = Duration::from_secs(10);
    let app = spawn_app(Options {
        gateway: true,
        token_lifetime: lifetime,
        refresh_offset_s: 4.0,
        rust_log: "info",
        ..Options::default()
    })
    .await;
    let run_for = Duration::from_secs(32);
    let start = Instant::now();
    let worker = |w: usize| {
        let app = &app;
        async move {
            let (mut ok, mut failed, mut i) = (0usize, Vec::new(), 0usize);
            while start.elapsed() < run_for {
                i += 1;
                let key = format!("/api/cache/soak-{w}-{}", i % 8);
                let out = match i % 3 {
                    0 => invoke(app, Method::PUT, &key, Some(b"v")).await,
                    1 => invoke(app, Method::GET, "/api/ping", None).await,
                    _ => invoke(app, Method::GET, &key, None).await,
                };
                if out.status == 200 || (out.status == 404 && out.body["code"] == "not_found") {
                    ok += 1;
                } else {
                    failed.push(format!("{} {}", out.status, out.body));
                }
            }
            (ok, failed)
        }
    };
    let results = futures_util::future::join_all((0..12).map(worker)).await;
    let ok: usize = results.iter().map(|r| r.0).sum();
    let failed: Vec<&String> = results.iter().flat_map(|r| r.1.iter()).collect();
    let gw = app.gateway().stats();
    let requests = app.identity.requests();
    let elapsed = start.elapsed();
    println!(
        "soak: {} invocations in {:.1} s, {} failed, {:.1} token lifetimes crossed, {} token requests, {} AUTHs accepted, {} connections, {} closes for expiry",
        ok + failed.len(),
        elapsed.as_secs_f64(),
        failed.len(),
        elapsed.as_secs_f64() / lifetime.as_secs_f64(),
        requests,
        gw.auth_accepted.load(Ordering::SeqCst),
        gw.connections.load(Ordering::SeqCst),
        gw.expiry_closes.load(Ordering::SeqCst),
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 1000, "load was continuous: {ok}");
    assert_eq!(gw.expiry_closes.load(Ordering::SeqCst), 0);
    assert_eq!(gw.connections.load(Ordering::SeqCst), 1, "one connection throughout");
    // A token is used from its fetch until 4 s (less jitter) before expiry:
    // at most one request per 5 s, and at least one per 6.9 s (+ the first).
    let periods = elapsed.as_secs_f64();
    assert!(requests as f64 <= periods / 5.0 + 2.0, "{requests} token requests");
    assert!(requests as f64 >= periods / 7.0, "{requests} token requests");
    assert_eq!(gw.auth_accepted.load(Ordering::SeqCst), requests, "one AUTH per token");
}

/// Eight clients call Ping for `span`; every answer must pass `check`.
/// Returns how many calls were made.
async fn hammer(app: &TestApp, span: Duration, check: impl Fn(&Outcome)) -> usize {
    let start = Instant::now();
    let client = || async {
        let mut n = 0;
        while start.elapsed() < span {
            check(&invoke(app, Method::GET, "/api/ping", None).await);
            n += 1;
        }
        n
    };
    futures_util::future::join_all((0..8).map(|_| client()))
        .await
        .into_iter()
        .sum()
}

/// Four clients call Ping until `done` holds (panics after `limit`); each
/// answer must be 200, and the slowest is kept in `slowest`.
async fn load_until(
    app: &TestApp,
    slowest: &std::sync::Mutex<Duration>,
    what: &str,
    limit: Duration,
    done: impl Fn() -> bool,
) {
    let start = Instant::now();
    let worker = || async {
        while !done() {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            let out = invoke(app, Method::GET, "/api/ping", None).await;
            assert_eq!(out.status, 200, "{what}: {}", out.body);
            let mut s = slowest.lock().unwrap();
            *s = (*s).max(out.took);
        }
    };
    futures_util::future::join_all((0..4).map(|_| worker())).await;
}

/// The identity endpoint failing (500), then hanging for a whole fetch
/// deadline (5 s), while the token is still valid: invocations keep
/// succeeding and none waits for the identity (none over 1 s), the failed
/// fetch is retried with a backoff, and the refresh happens once the
/// endpoint recovers, before the token expires.
#[tokio::test]
async fn identity_failing_while_token_is_valid() {
    let mut env = fast_deadlines();
    env.retain(|(k, _)| k != "Redis__tokenTimeoutSeconds");
    let app = spawn_app(Options {
        gateway: true,
        token_lifetime: Duration::from_secs(20),
        refresh_offset_s: 15.0,
        env,
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let exp = app.last_token_exp_ms();
    app.identity.set_mode(IdentityMode::Fail500);
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    // Due from exp - 15 s (+ up to 3 s of jitter): two failed tries, the
    // second after the 1 s backoff.
    load_until(&app, &slowest, "two failed fetches", Duration::from_secs(12), || {
        app.identity.requests() >= 3
    })
    .await;
    assert_eq!(app.identity.tokens_minted(), 1);
    app.identity.set_mode(IdentityMode::Hang);
    let before_hang = app.identity.requests();
    load_until(&app, &slowest, "a fetch to hang", Duration::from_secs(5), || {
        app.identity.requests() > before_hang
    })
    .await;
    let hung_at = Instant::now();
    load_until(
        &app,
        &slowest,
        "the whole fetch deadline",
        Duration::from_secs(7),
        || hung_at.elapsed() > Duration::from_millis(5200),
    )
    .await;
    assert_eq!(app.identity.requests(), before_hang + 1, "one fetch, held");
    let held = *slowest.lock().unwrap();
    assert!(
        held < Duration::from_secs(1),
        "no invocation waited for the identity: {held:?}"
    );
    app.identity.set_mode(IdentityMode::Normal);
    load_until(
        &app,
        &slowest,
        "the refresh after recovery",
        Duration::from_secs(6),
        || app.output_count("new access token in use") == 2,
    )
    .await;
    assert!(support::unix_ms() < exp, "refreshed before the old token expired");
    sleep_until_unix_ms(exp + 300).await;
    assert_eq!(app.get("/api/ping").await.0, 200, "past the old token's expiry");
    let gw = app.gateway().stats();
    assert_eq!(gw.expiry_closes.load(Ordering::SeqCst), 0);
    assert_eq!(gw.connections.load(Ordering::SeqCst), 1);
}

/// The cache refuses the new token on the live connection (the access
/// policy is gone for a moment): the connection keeps the identity it has,
/// invocations keep succeeding on it, and once the policy is back the AUTH
/// is retried after its backoff, before the old token expires.
#[tokio::test]
async fn refused_reauth_keeps_the_live_connection() {
    let app = spawn_app(Options {
        gateway: true,
        token_lifetime: Duration::from_secs(9),
        refresh_offset_s: 6.0,
        env: fast_deadlines(),
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let exp = app.last_token_exp_ms();
    let gw = app.gateway();
    gw.set_reject_all(true);
    // Due from exp - 6 s to exp - 4.8 s.
    while app.output_count("the cache refused the new token") == 0 {
        let (s, b) = app.get("/api/ping").await;
        assert_eq!(s, 200, "{b}");
        assert!(support::unix_ms() < exp - 4000, "the refresh came when due");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.stats().auth_rejected.load(Ordering::SeqCst), 1);
    gw.set_reject_all(false);
    while app.output_count("re-authenticated the connection with the new token") == 0 {
        let (s, b) = app.get("/api/ping").await;
        assert_eq!(s, 200, "{b}");
        assert!(support::unix_ms() < exp, "re-AUTHed before the old token expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sleep_until_unix_ms(exp + 300).await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    assert_eq!(gw.stats().expiry_closes.load(Ordering::SeqCst), 0);
    assert_eq!(gw.stats().connections.load(Ordering::SeqCst), 1, "never reconnected");
}

/// A front end that cuts the connection on every try of a command: the
/// invocation rides through its window (2 s here), reconnecting with the
/// backoff (immediately, then 100 ms doubling: about 6 tries in 2 s, not
/// one per millisecond), then answers 503 within its deadline. The seed's
/// 3 tries are the first 300 ms of this. With `Redis__rideThroughSeconds=0`
/// it is one try. A cache that is down for a while is
/// `ride_through::a_long_outage_fails_fast_with_a_trickle_of_attempts`.
/// (Checked broken: with the backoff's failure count reset by every
/// successful connect, the tries number in the dozens.)
#[tokio::test]
async fn a_connection_cut_on_every_try_backs_off_then_503() {
    for (ride, cuts) in [(None, 4..=7), (Some("0"), 1..=1)] {
        let mut env = fast_deadlines();
        env.extend(ride.map(|r| ("Redis__rideThroughSeconds".to_owned(), r.to_owned())));
        let app = spawn_app(Options {
            gateway: true,
            env,
            ..Options::default()
        })
        .await;
        assert_eq!(app.get("/api/ping").await.0, 200);
        let gw = app.gateway();
        gw.cut_on(Some("GET"));
        let out = invoke(&app, Method::GET, "/api/cache/cut-every-time", None).await;
        let made = gw.stats().cuts.load(Ordering::SeqCst);
        println!("ride-through {ride:?}: {made} tries in {:?}", out.took);
        assert_eq!(out.status, 503, "{}", out.body);
        assert_eq!(out.body["code"], "cache_unavailable", "{}", out.body);
        assert!(cuts.contains(&made), "{made} tries");
        assert!(out.took < Duration::from_secs(3), "within the deadline: {:?}", out.took);
        gw.cut_on(None);
        let back = Instant::now();
        while app.get("/api/cache/cut-every-time").await.0 != 404 {
            assert!(
                back.elapsed() < Duration::from_secs(6),
                "served again after the backoff"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Token expired and the identity endpoint down: a fast 503 naming the
/// identity; recovery once it is back.
#[tokio::test]
async fn expired_token_with_identity_down() {
    let app = spawn_app(Options {
        gateway: true,
        token_lifetime: Duration::from_secs(3),
        refresh_offset_s: 1.0,
        env: fast_deadlines(),
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let exp = app.last_token_exp_ms();
    app.identity.set_mode(IdentityMode::Fail500);
    sleep_until_unix_ms(exp + 100).await;
    for _ in 0..5 {
        let out = invoke(&app, Method::GET, "/api/ping", None).await;
        assert_eq!(out.status, 503, "{}", out.body);
        assert_eq!(out.body["code"], "identity_unavailable", "{}", out.body);
        assert!(out.body["error"].as_str().unwrap().contains("token"), "{}", out.body);
        assert!(out.took < Duration::from_millis(1500), "fast: {:?}", out.took);
    }
    app.identity.set_mode(IdentityMode::Normal);
    let back = Instant::now();
    loop {
        let out = invoke(&app, Method::GET, "/api/ping", None).await;
        if out.status == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(12), "recovered: {}", out.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gateway refusing the token (the identity lost its access policy): a
/// clear 503 naming authentication, a bounded number of AUTH attempts, and
/// recovery when the policy is back.
#[tokio::test]
async fn refused_token_is_clear_and_bounded() {
    let app = spawn_app(Options {
        gateway: true,
        env: fast_deadlines(),
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gw = app.gateway();
    gw.set_reject_all(true);
    gw.close_all();
    let rejected_before = gw.stats().auth_rejected.load(Ordering::SeqCst);
    let calls = hammer(&app, Duration::from_secs(3), |out| {
        assert_eq!(out.status, 503, "{}", out.body);
        assert_eq!(out.body["code"], "cache_authentication_failed", "{}", out.body);
        assert!(out.body["error"].as_str().unwrap().contains("authentication"));
    })
    .await;
    let attempts = gw.stats().auth_rejected.load(Ordering::SeqCst) - rejected_before;
    assert!(calls > 50, "{calls} invocations");
    assert!(
        attempts <= 8,
        "{attempts} AUTH attempts for {calls} invocations: backoff, no storm"
    );
    gw.set_reject_all(false);
    let back = Instant::now();
    while app.get("/api/ping").await.0 != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(8),
            "recovered after the policy came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection cut by the front end is re-made without failing a call.
#[tokio::test]
async fn connection_cut_by_gateway_is_remade() {
    let app = spawn_app(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    for round in 1..=3 {
        assert_eq!(app.get("/api/ping").await.0, 200);
        app.gateway().close_all();
        let (s, b) = app.call(Method::PUT, "/api/cache/cut", Some(b"v")).await;
        assert_eq!(s, 200, "round {round}: {b}");
    }
    assert_eq!(app.gateway().stats().connections.load(Ordering::SeqCst), 4);
}

/// A whole session at `trace` through success, refreshes and every fault
/// above, each step checked for the answer it is meant to produce, never
/// prints any token minted during it (every one, not only the last), the
/// identity header or a client secret, in stdout, stderr or any response.
#[tokio::test]
async fn no_secret_leaks_through_any_fault() {
    let client_secret = "client-secret-value-never-printed";
    let mut env = fast_deadlines();
    env.push(("Redis__clientSecret".into(), client_secret.into()));
    env.push(("Redis__credential".into(), "managedidentity".into()));
    let app = spawn_app(Options {
        gateway: true,
        token_lifetime: Duration::from_secs(4),
        refresh_offset_s: 2.0,
        rust_log: "trace",
        env,
        ..Options::default()
    })
    .await;
    // Every token the endpoint mints, however short-lived: tokens are
    // minted seconds apart, so a 5 ms watch misses none (checked below).
    let minted = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let watcher = {
        let (identity, minted) = (app.identity.clone(), minted.clone());
        tokio::spawn(async move {
            loop {
                minted.lock().unwrap().extend(identity.last_token());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut bodies = Vec::new();
    let mut step = |what: &str, out: Outcome, status: u16, codes: &[&str]| {
        assert_eq!(out.status, status, "{what}: {}", out.body);
        let code = out.body["code"].as_str().unwrap_or("");
        assert!(codes.is_empty() || codes.contains(&code), "{what}: {}", out.body);
        bodies.push(out.body.to_string());
    };
    let put = invoke(&app, Method::PUT, "/api/cache/s", Some(b"value")).await;
    step("put", put, 200, &[]);
    let quickstart = invoke(&app, Method::POST, "/api/quickstart", None).await;
    step("quickstart", quickstart, 200, &[]);
    // Due from exp - 2 s to exp - 1.6 s: refreshed beside this call.
    sleep_until_unix_ms(app.last_token_exp_ms() - 1500).await;
    step(
        "refresh",
        invoke(&app, Method::GET, "/api/health", None).await,
        200,
        &[],
    );
    wait_until("the refreshed token", Duration::from_secs(3), || {
        app.output_count("new access token in use") == 2
    })
    .await;
    app.identity.set_mode(IdentityMode::Fail500);
    let exp = app.last_token_exp_ms();
    sleep_until_unix_ms(exp - 1500).await;
    let valid = invoke(&app, Method::GET, "/api/cache/s", None).await;
    step("refresh failing, token valid", valid, 200, &[]);
    sleep_until_unix_ms(exp + 100).await;
    let expired = invoke(&app, Method::GET, "/api/cache/s", None).await;
    step("token expired, identity down", expired, 503, &["identity_unavailable"]);
    app.identity.set_mode(IdentityMode::Normal);
    let back = Instant::now();
    loop {
        let out = invoke(&app, Method::GET, "/api/ping", None).await;
        if out.status == 200 {
            break;
        }
        step("identity back, backing off", out, 503, &["identity_unavailable"]);
        assert!(back.elapsed() < Duration::from_secs(8), "recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.gateway().set_reject_all(true);
    app.gateway().close_all();
    let refused = invoke(&app, Method::GET, "/api/ping", None).await;
    step("access policy gone", refused, 503, &["cache_authentication_failed"]);
    app.gateway().set_reject_all(false);
    app.redis.stop();
    loop {
        let out = invoke(&app, Method::GET, "/api/clients", None).await;
        let code = out.body["code"].as_str().unwrap_or("").to_owned();
        // The refused AUTH's backoff may answer first; then the outage.
        step(
            "redis down",
            out,
            503,
            &["cache_authentication_failed", "cache_unavailable"],
        );
        if code == "cache_unavailable" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "the outage was seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.redis.start_again().await.unwrap();
    loop {
        let out = invoke(&app, Method::GET, "/api/health", None).await;
        if out.status == 200 {
            step("redis back", out, 200, &[]);
            break;
        }
        step("redis coming back", out, 503, &["cache_unavailable"]);
        assert!(back.elapsed() < Duration::from_secs(30), "recovered after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timer = app
        .handler
        .invoke_timer(
            "CacheHealthCheck",
            "t",
            devhost::functions_host::timer_info(false, true),
        )
        .await
        .unwrap();
    assert_eq!(timer.status(), 200);
    bodies.push(timer.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    watcher.abort();

    let tokens = minted.lock().unwrap().clone();
    assert_eq!(
        tokens.len(),
        app.identity.tokens_minted(),
        "every minted token is scanned"
    );
    assert!(tokens.len() >= 3, "several tokens were minted: {}", tokens.len());
    let out = app.output();
    assert!(out.contains("TRACE"), "trace logging was on");
    let seen = format!("{out}\n{}", bodies.join("\n"));
    for token in &tokens {
        assert!(!seen.contains(token.as_str()), "a token leaked");
        assert!(
            !seen.contains(token.rsplit('.').next().unwrap()),
            "a token signature leaked"
        );
    }
    assert!(
        !seen.contains(&app.identity.header_secret()),
        "the identity header leaked"
    );
    assert!(!seen.contains(client_secret), "the client secret leaked");
    assert!(
        !seen.contains(app.redis.admin().password()),
        "the backend's password leaked"
    );
}
