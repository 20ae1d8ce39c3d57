//! The process as the host sees it: start-up that never waits for Redis or
//! the identity, settings errors, the identity it asks for, the
//! loopback-only listener, a clean exit on SIGTERM within the drain time, and
//! its log streams.

use crate::support;

use crate::support::{handler_binary, spawn_app, Options, TestApp};
use devhost::identity::IdentityMode;
use devhost::redis_server::ClientInfo;
use reqwest::header::HeaderMap;
use reqwest::Method;
use std::time::{Duration, Instant};

/// `GET /` answers while the identity endpoint hangs and Redis is down,
/// with a token deadline of 30 s, so a start-up that waited for either
/// would take that long; invocations meanwhile answer 503 naming the
/// problem within their own deadline (1 s: the wait for a token counts
/// toward it), and succeed once both are back. (Checked broken: with the
/// token wait outside the invocation's deadline, the first invocation
/// waits the whole 30 s.)
#[tokio::test]
async fn start_up_never_waits_for_identity_or_redis() {
    let pki = devhost::pki::Pki::generate().unwrap();
    let redis = devhost::redis_server::RedisServer::start(&pki).await.unwrap();
    let identity = devhost::identity::IdentityEndpoint::start(devhost::identity::IdentityConfig {
        redis: Some(redis.admin().clone()),
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
        ("Redis__tokenTimeoutSeconds".into(), "30".into()),
        ("Redis__connectTimeoutSeconds".into(), "0.5".into()),
        ("Redis__commandTimeoutSeconds".into(), "0.5".into()),
    ];
    env.extend(identity.env());
    let started = Instant::now();
    let handler = devhost::functions_host::HandlerProcess::spawn(&handler_binary(), support::app_root(), &env)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ready without a token or a cache: {:?}",
        started.elapsed()
    );
    assert!(identity.requests() <= 1, "the warm-up's one fetch, held");

    let t = Instant::now();
    let res = handler.forward(Method::GET, "/api/ping", None).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "identity_unavailable", "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by the invocation's deadline, not the token's 30 s: {:?}",
        t.elapsed()
    );

    identity.set_mode(IdentityMode::Normal);
    let t = Instant::now();
    let body = loop {
        let res = handler.forward(Method::GET, "/api/ping", None).await.unwrap();
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
        let res = handler.forward(Method::GET, "/api/ping", None).await.unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "cache never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A missing or bad setting stops the process at once with one line naming
/// it (a port in `Redis__redisHostName` that disagrees with `Redis__port`:
/// both).
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
        // The extension's host:port form with a port Redis__port contradicts:
        // the line names both.
        (
            &[
                ("Redis__redisHostName", "amr.westeurope.redis.azure.net:10000"),
                ("Redis__port", "6380"),
            ],
            "Redis__port is 6380",
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

/// The Functions Redis extension's form, `Redis__redisHostName=host:port`
/// with no `Redis__port`, reaches the cache on that port (the address the
/// extension writes for Azure Managed Redis is `host:10000`, where the
/// default for any other host name would be 6380). (Checked broken: the old
/// parser refuses the setting and the process exits with code 2.)
#[tokio::test]
async fn host_name_with_port_reaches_the_cache() {
    let app = spawn_app(Options::default()).await;
    let port = app
        .env
        .iter()
        .find(|(k, _)| k == "Redis__port")
        .map(|(_, v)| v.clone())
        .unwrap();
    let mut env: Vec<(String, String)> = app
        .env
        .iter()
        .filter(|(k, _)| k != "Redis__port" && k != "Redis__redisHostName")
        .cloned()
        .collect();
    env.push(("Redis__redisHostName".into(), format!("localhost:{port}")));
    let handler = devhost::functions_host::HandlerProcess::spawn(&handler_binary(), support::app_root(), &env)
        .await
        .expect("the handler starts with host:port");
    let (s, b) = support::call_handler(&handler, Method::PUT, "/api/cache/hostport", Some(b"v")).await;
    assert_eq!(s, 200, "{b}");
    let (s, h) = support::call_handler(&handler, Method::GET, "/api/health", None).await;
    assert_eq!(s, 200, "{h}");
    assert!(support::handler_output(&handler).contains(&format!("cache=localhost:{port}")));
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

/// SIGTERM closes the listener at once but lets an in-flight invocation
/// finish (its write held at the server until the signal has been handled),
/// then the process exits 0.
#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut app = spawn_app(Options {
        env: vec![("Redis__commandTimeoutSeconds".into(), "30".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200, "connected");
    hold_writes(&app).await;
    let in_flight = put_in_background(&app, "drained");
    wait_for_held_write(&app).await;
    let port = app.handler.port();
    let redis = &app.redis;
    let release = async {
        // terminate() sends SIGTERM at once; the closed listener says it was handled.
        wait_until_not_accepting(port).await;
        release_writes(redis).await;
    };
    let (exit, ()) = tokio::join!(app.handler.terminate(Duration::from_secs(15)), release);
    let exit = exit.unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(
        in_flight.await.unwrap().ok(),
        Some(200),
        "the in-flight invocation finished before the exit"
    );
    let stored: Option<String> = app.redis.admin().cmd(redis::cmd("GET").arg("drained")).await.unwrap();
    assert_eq!(stored.as_deref(), Some("v"));
    let out = app.output();
    let (shutdown, done) = (
        out.find("shutting down").unwrap(),
        out.find("invocation done method=PUT").unwrap(),
    );
    assert!(shutdown < done, "SIGTERM came while the PUT was in flight:\n{out}");
}

/// An invocation that outlives `HANDLER_DRAIN_SECONDS` after SIGTERM does
/// not keep the process alive: it waits the drain time, no longer, and exits
/// 0 with the invocation cut off, saying so on stderr.
#[tokio::test]
async fn drain_limit_bounds_shutdown() {
    let drain = Duration::from_secs(1);
    let mut app = spawn_app(Options {
        env: vec![
            ("HANDLER_DRAIN_SECONDS".into(), drain.as_secs().to_string()),
            // The held write would otherwise end at its own deadline.
            ("Redis__commandTimeoutSeconds".into(), "120".into()),
        ],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200, "connected");
    hold_writes(&app).await;
    let in_flight = put_in_background(&app, "cut-off");
    wait_for_held_write(&app).await;
    let sent = Instant::now();
    let exit = app
        .handler
        .terminate(drain + Duration::from_secs(9))
        .await
        .expect("the process exits after the drain time, not when the invocation ends");
    let took = sent.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        took >= drain,
        "in-flight invocations get the whole drain time: {took:?}"
    );
    let answer = in_flight.await.unwrap();
    assert!(answer.is_err(), "the held invocation got no answer: {answer:?}");
    let waiting = Instant::now();
    while !app
        .handler
        .stderr()
        .lines()
        .any(|l| l.contains("WARN") && l.contains("drain"))
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "no warning about the drain on stderr:\n{}",
            app.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release_writes(&app.redis).await;
}

/// An idle keep-alive connection, as the host keeps them between
/// invocations, is closed at SIGTERM and does not hold the process for the
/// drain time: the server wakes every open connection to end it. (Checked
/// broken: with connections left to notice the signal on their next
/// request, the process waits out all 30 s.)
#[tokio::test]
async fn idle_connections_close_at_sigterm() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = spawn_app(Options {
        env: vec![("HANDLER_DRAIN_SECONDS".into(), "30".into())],
        ..Options::default()
    })
    .await;
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", app.handler.port()))
        .await
        .unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // Kept alive: the server waits for the next request on it.
    let exit = app
        .handler
        .terminate(Duration::from_secs(10))
        .await
        .expect("the process exits at once, not after the drain time");
    assert!(exit.success(), "exit status {exit:?}");
    let closed = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut answer))
        .await
        .expect("the idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

/// A caller that closes its side of the connection once it has sent its
/// request (a half-close) does not cut the invocation off: the write goes
/// through, the answer comes back on the open half, and the invocation
/// logs its line. The server does not read ahead for an end of stream
/// while an invocation is in flight (`server.rs`). (Checked broken: with
/// hyper's default, the server saw the end of stream mid-invocation and
/// closed the connection with no answer.)
#[tokio::test]
async fn a_half_closed_connection_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(Options {
        env: vec![("Redis__commandTimeoutSeconds".into(), "30".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200, "connected");
    hold_writes(&app).await;
    let mut caller = tokio::net::TcpStream::connect(("127.0.0.1", app.handler.port()))
        .await
        .unwrap();
    caller
        .write_all(b"PUT /api/cache/half-closed HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nv")
        .await
        .unwrap();
    caller.shutdown().await.unwrap();
    wait_for_held_write(&app).await;
    release_writes(&app.redis).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), caller.read_to_end(&mut answer))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored: Option<String> = app
        .redis
        .admin()
        .cmd(redis::cmd("GET").arg("half-closed"))
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("v"));
    app.wait_for_output("invocation done method=PUT", Duration::from_secs(5))
        .await;
}

/// Information goes to stdout and warnings to stderr, as plain text and with
/// `LOG_FORMAT=json`, where every line of both streams is one JSON object.
#[tokio::test]
async fn logs_split_by_level_and_json_lines() {
    for format in ["text", "json"] {
        let app = spawn_app(Options {
            env: vec![("LOG_FORMAT".into(), format.into())],
            ..Options::default()
        })
        .await;
        let client = app.handler.client();
        let ok = client
            .forward_as("logs-ok", Method::GET, "/api/ping", HeaderMap::new(), None)
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        // A full cache refuses the write: a 502, logged as a warning.
        let _: () = app.redis.admin().cmd(&maxmemory("1")).await.unwrap();
        let failed = client
            .forward_as(
                "logs-fail",
                Method::PUT,
                "/api/cache/k",
                HeaderMap::new(),
                Some(b"v".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(failed.status(), 502);
        let _: () = app.redis.admin().cmd(&maxmemory("0")).await.unwrap();
        // Wait for the three lines on either stream, then check which stream each is on.
        let done = |id: &'static str| move |l: &str| l.contains(id) && l.contains("invocation done");
        let warned = |l: &str| l.contains("logs-fail") && l.contains("502") && !l.contains("invocation done");
        let waiting = Instant::now();
        while !(app.output().lines().any(done("logs-ok"))
            && app.output().lines().any(done("logs-fail"))
            && app.output().lines().any(warned))
        {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "{format}: the invocations' lines are missing:\n{}",
                app.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (stdout, stderr) = (app.handler.stdout(), app.handler.stderr());
        for (stream, text, levels) in [
            ("stdout", &stdout, &["TRACE", "DEBUG", "INFO"][..]),
            ("stderr", &stderr, &["WARN", "ERROR"][..]),
        ] {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let level = match format {
                    "json" => {
                        let v: serde_json::Value = serde_json::from_str(line)
                            .unwrap_or_else(|e| panic!("{stream}: not one JSON object ({e}): {line}"));
                        assert!(v.is_object(), "{stream}: {line}");
                        v["level"].as_str().unwrap_or_default().to_owned()
                    }
                    _ => line.split_whitespace().nth(1).unwrap_or_default().to_owned(),
                };
                assert!(
                    levels.contains(&level.as_str()),
                    "{format} {stream}: {level:?} in {line}"
                );
            }
        }
        let done_line = |id: &'static str| {
            let line = stdout.lines().find(|l| done(id)(l));
            line.unwrap_or_else(|| panic!("{format}: no done line for {id} on stdout:\n{stdout}"))
        };
        assert!(
            stderr.lines().any(warned),
            "{format}: the 502 warning on stderr:\n{stderr}"
        );
        if format == "json" {
            let ok: serde_json::Value = serde_json::from_str(done_line("logs-ok")).unwrap();
            assert_eq!(ok["message"], "invocation done", "{ok}");
            assert_eq!(ok["status"], 200, "{ok}");
            assert_eq!(ok["span"]["invocation_id"], "logs-ok", "{ok}");
            assert_eq!(ok["span"]["function"], "Ping", "{ok}");
        } else {
            assert!(done_line("logs-fail").contains("status=502"), "{stdout}");
        }
    }
}

/// An offset not shorter than the token lifetime is warned about once, not at
/// each of the refreshes that follow, and does not make every call refresh.
#[tokio::test]
async fn offset_clamp_is_warned_once() {
    let app = spawn_app(Options {
        token_lifetime: Duration::from_secs(4),
        refresh_offset_s: 60.0,
        ..Options::default()
    })
    .await;
    let waiting = Instant::now();
    let mut calls = 0;
    let token = loop {
        let (s, h) = app.get("/api/health").await;
        calls += 1;
        assert_eq!(s, 200, "{h}");
        if h["token"]["refreshes"].as_u64().unwrap() >= 2 {
            break h["token"].clone();
        }
        assert!(waiting.elapsed() < Duration::from_secs(30), "no refreshes: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fetches = token["fetches"].as_u64().unwrap();
    assert!(fetches * 2 < calls, "{fetches} token fetches in {calls} calls: {token}");
    let stderr = app.handler.stderr();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Redis__tokenRefreshOffsetSeconds"))
        .collect();
    assert_eq!(warnings.len(), 1, "{token}:\n{stderr}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
}

/// With `Redis__clientId`, the handler asks the identity endpoint for that
/// user-assigned identity (`client_id` in the request) and gets its token; a
/// client id the app has not been assigned is refused by the endpoint, and
/// invocations answer 503 `identity_unavailable`: no fallback to another identity.
#[tokio::test]
async fn client_id_selects_the_user_assigned_identity() {
    let pki = devhost::pki::Pki::generate().unwrap();
    let redis = devhost::redis_server::RedisServer::start(&pki).await.unwrap();
    let assigned = "5b1f0c3e-0000-4000-8000-0000000a5517";
    let identity = devhost::identity::IdentityEndpoint::start(devhost::identity::IdentityConfig {
        redis: Some(redis.admin().clone()),
        client_id: Some(assigned.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    for (client_id, answer) in [(assigned, 200), ("5b1f0c3e-0000-4000-8000-00000000dead", 503)] {
        let mut env = vec![
            ("SSL_CERT_FILE".to_string(), pki.ca_path.display().to_string()),
            ("Redis__redisHostName".into(), "127.0.0.1".into()),
            ("Redis__port".into(), redis.tls_port().to_string()),
            ("Redis__clientId".into(), client_id.into()),
        ];
        env.extend(identity.env());
        let handler = devhost::functions_host::HandlerProcess::spawn(&handler_binary(), support::app_root(), &env)
            .await
            .unwrap();
        let res = handler.forward(Method::GET, "/api/ping", None).await.unwrap();
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(status, answer, "{client_id}: {body}");
        if answer != 200 {
            assert_eq!(body["code"], "identity_unavailable", "{body}");
        }
        let query = identity.last_query().expect("a token request");
        assert_eq!(
            query.get("client_id").map(String::as_str),
            Some(client_id),
            "the token request names the identity: {query:?}"
        );
    }
}

/// `CONFIG SET maxmemory <bytes>` (with the default `noeviction` policy, a
/// write to a server over it is refused with OOM).
fn maxmemory(bytes: &str) -> redis::Cmd {
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(bytes).clone()
}

/// Holds every write at the server (CLIENT PAUSE WRITE) until [`release_writes`]:
/// a PUT then stays in flight, visibly, for as long as a test needs.
async fn hold_writes(app: &TestApp) {
    let _: () = app
        .redis
        .admin()
        .cmd(redis::cmd("CLIENT").arg("PAUSE").arg(600_000).arg("WRITE"))
        .await
        .unwrap();
}

/// Ends [`hold_writes`].
async fn release_writes(redis: &devhost::redis_server::RedisServer) {
    let _: () = redis
        .admin()
        .cmd(&redis::cmd("CLIENT").arg("UNPAUSE").clone())
        .await
        .unwrap();
}

/// `PUT /api/cache/{key}` with body `v`, sent from a task; its status.
fn put_in_background(app: &TestApp, key: &str) -> tokio::task::JoinHandle<reqwest::Result<u16>> {
    let url = format!("{}/api/cache/{key}", app.handler.base_url());
    crate::support::install_crypto_provider();
    tokio::spawn(async move {
        Ok(reqwest::Client::new()
            .put(url)
            .body("v")
            .send()
            .await?
            .status()
            .as_u16())
    })
}

/// Waits until the server shows the handler's SET blocked by [`hold_writes`].
async fn wait_for_held_write(app: &TestApp) {
    let waiting = Instant::now();
    loop {
        let conns = app.handler_connections().await;
        let held = |c: &ClientInfo| c.cmd == "set" && c.fields.get("flags").is_some_and(|f| f.contains('b'));
        if conns.iter().any(held) {
            return;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the PUT never reached the server: {conns:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until nothing accepts connections on `port`: the handler has taken
/// the signal and closed its listener.
async fn wait_until_not_accepting(port: u16) {
    let waiting = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the handler still accepts connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
