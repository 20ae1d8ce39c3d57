//! Riding through Azure's routine maintenance on one endpoint: a restart,
//! a connection cut after a write ran, connections gone silent, a cache
//! that is down for a while, answers that say "not now", the
//! `AzureRedisEvents` sequence of a patch, and Redis's handoff pushes. Each
//! fault is played by a real part (redis-server stopped and started) or by
//! the gateway standing for Azure's front end (`devhost::gateway`), under
//! load, and each test prints its figures (run with
//! `TEST_HANDLER_BINARY=<an older handler>` for the figures before a change).

use crate::support::{spawn_app, wait_until, Options, TestApp};
use devhost::gateway::resp::encode_push;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Deadlines for a fault test: `connect` and `command` seconds each; the
/// ride-through window is their sum unless `ride_s` says.
fn deadlines(connect: f64, command: f64, ride_s: Option<f64>) -> Vec<(String, String)> {
    let mut env = vec![
        ("Redis__connectTimeoutSeconds".to_owned(), connect.to_string()),
        ("Redis__commandTimeoutSeconds".to_owned(), command.to_string()),
    ];
    if let Some(ride) = ride_s {
        env.push(("Redis__rideThroughSeconds".to_owned(), ride.to_string()));
    }
    env
}

/// One invocation's outcome under load.
#[derive(Debug, Clone)]
struct Outcome {
    /// When it was sent, since the load started.
    sent: Duration,
    took: Duration,
    status: u16,
    code: String,
    what: String,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "{} sent at {:.2} s -> {} {} in {:.0} ms",
            self.what,
            self.sent.as_secs_f64(),
            self.status,
            self.code,
            self.took.as_secs_f64() * 1000.0
        )
    }
}

/// Load on one handler: each worker loops PUT its key, GET it back (200,
/// or 404 when a restart of the stand-in, which keeps nothing, came
/// between), PING; every answer is recorded.
struct Load<'a> {
    app: &'a TestApp,
    start: Instant,
    stop: AtomicBool,
    outcomes: Mutex<Vec<Outcome>>,
}

impl<'a> Load<'a> {
    fn new(app: &'a TestApp) -> Self {
        Load {
            app,
            start: Instant::now(),
            stop: AtomicBool::new(false),
            outcomes: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    async fn run(&self, workers: usize) {
        let worker = |w: usize| async move {
            let mut i = 0u64;
            while !self.stop.load(Ordering::SeqCst) {
                i += 1;
                let key = format!("/api/cache/load-{w}-{}", i % 4);
                self.call(Method::PUT, &key, Some(b"v")).await;
                self.call(Method::GET, &key, None).await;
                self.call(Method::GET, "/api/ping", None).await;
            }
        };
        futures_util::future::join_all((0..workers).map(worker)).await;
    }

    async fn call(&self, method: Method, path: &str, body: Option<&[u8]>) {
        let sent = self.now();
        let (status, b) = self.app.call(method.clone(), path, body).await;
        let ok_404 = method == Method::GET && status == 404 && b["code"] == "not_found";
        let outcome = Outcome {
            sent,
            took: self.now() - sent,
            status: if ok_404 { 200 } else { status },
            code: b["code"].as_str().unwrap_or("").to_owned(),
            what: format!("{method} {path}"),
        };
        self.outcomes.lock().unwrap().push(outcome);
    }

    fn all(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    fn successes_since(&self, since: Duration) -> usize {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes.iter().filter(|o| o.sent >= since && o.status == 200).count()
    }

    /// Waits until `n` invocations sent after `since` have succeeded.
    async fn wait_successes(&self, n: usize, since: Duration, limit: Duration) {
        let what = format!("{n} successes after {since:?}");
        wait_until(&what, limit, || self.successes_since(since) >= n).await;
    }
}

/// The handler's WARN and ERROR lines, the last 40, for a failure's message.
fn warnings(app: &TestApp) -> String {
    let out = app.output();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Failures, the slowest answer, and p99, of `outcomes`; printed as one line.
fn report(what: &str, outcomes: &[Outcome]) -> (Vec<Outcome>, Duration) {
    let failed: Vec<Outcome> = outcomes.iter().filter(|o| o.status != 200).cloned().collect();
    let mut took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
    took.sort_unstable();
    let slowest = took.last().copied().unwrap_or_default();
    let p99 = took
        .get(took.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for o in &failed {
        *tally.entry(format!("{} {}", o.status, o.code)).or_default() += 1;
    }
    println!(
        "{what}: {} invocations, {} failed {tally:?}, p99 {:.0} ms, slowest {:.0} ms",
        outcomes.len(),
        failed.len(),
        p99.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0
    );
    (failed, slowest)
}

/// A 2 s restart of redis-server under load (deadlines at their defaults,
/// so a 10 s window): no invocation fails, the slowest answer comes within
/// 8 s, and one connection is left. The outage is ordered by events: the
/// stop is seen by the handler before the 2 s are counted, and the load
/// ends once invocations sent after the restart have succeeded.
/// (Checked broken: failing fast from the first failed connect, the
/// invocations during the outage fail. The handler before this work failed
/// 12,124 of 12,497 from the stop on.)
#[tokio::test]
async fn a_restart_under_load_fails_nothing() {
    let app = spawn_app(Options {
        rust_log: "info",
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let load = Load::new(&app);
    let mut outage = (Duration::ZERO, Duration::ZERO);
    tokio::join!(load.run(8), async {
        load.wait_successes(300, Duration::ZERO, Duration::from_secs(20)).await;
        outage.0 = load.now();
        let stopped = Instant::now();
        app.redis.stop();
        app.wait_for_output("dropped the cache connection", Duration::from_secs(10))
            .await;
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(stopped.elapsed())).await;
        app.redis.start_again().await.expect("redis-server starts again");
        outage.1 = load.now();
        load.wait_successes(300, outage.1, Duration::from_secs(30)).await;
        load.stop();
    });
    let all = load.all();
    // Answered from the stop on: those in flight at the stop felt it most.
    let during: Vec<Outcome> = all.iter().filter(|o| o.sent + o.took >= outage.0).cloned().collect();
    println!(
        "restart: redis down from {:.2} s to {:.2} s",
        outage.0.as_secs_f64(),
        outage.1.as_secs_f64()
    );
    report("restart, whole run", &all);
    let (failed, slowest) = report("restart, from the stop on", &during);
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.iter().take(5).map(Outcome::describe).collect::<Vec<_>>()
    );
    assert!(slowest < Duration::from_secs(8), "slowest {slowest:?}");
    let slow = during.iter().filter(|o| o.took > Duration::from_millis(1500)).count();
    assert!(slow > 0, "the outage was felt as latency");
    assert_eq!(app.handler_connections().await.len(), 1, "one connection left");
}

/// `CacheIncr` under load while the gateway cuts the connection right after
/// every third script (the increment) ran, its answer lost, 100 times: every
/// invocation answers 200, each key's final value is the sum of the
/// increments answered, and the values answered on a key counted by 1 are
/// exactly 1..=n. Keys with hash tags too. (Checked against the handler
/// before this work, which sent INCRBY again: 52 failed, and the key
/// counted by one held 134 for 86 answers.)
///
/// The storm is much denser than Azure's (a cut every few hundred
/// milliseconds, for tens of seconds, with 16 invocations on the one
/// connection, of which only the first few sent get through before each
/// cut), so the ride-through window is set to 60 s for it: with the default
/// 10 s, an invocation that lost that race for 10 s answered 503 after its
/// window, as the contract says it should, and the test was about
/// exactly-once, not about how long the window is (6 to 27 such 503s in 5
/// runs on a quiet 2-core machine, with this handler and the one before it).
#[tokio::test]
async fn incr_applies_once_when_its_answer_is_lost() {
    let app = spawn_app(Options {
        gateway: true,
        rust_log: "info",
        env: vec![("Redis__rideThroughSeconds".into(), "60".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gw = app.gateway();
    // The increment: our script (EVALSHA, or EVAL the first time on a
    // node); an older handler's plain INCRBY.
    gw.cut_after_times(&["EVALSHA", "EVAL", "INCRBY"], 3, 100);
    let keys = ["counted-by-one", "{tenant7}:visits", "{tenant7}:orders", "plain"];
    let per_worker = 25;
    let worker = |w: usize| {
        let app = &app;
        async move {
            let key = keys[w % keys.len()];
            let by = if w.is_multiple_of(keys.len()) {
                1
            } else {
                1 + (w as i64 % 5)
            };
            let path = format!(
                "/api/cache/{}/incr?by={by}",
                key.replace('{', "%7B").replace('}', "%7D")
            );
            let mut answers = Vec::new();
            for _ in 0..per_worker {
                let (s, b) = app.call(Method::POST, &path, None).await;
                answers.push((key, by, s, b));
            }
            answers
        }
    };
    let started = Instant::now();
    let answers: Vec<_> = futures_util::future::join_all((0..16).map(worker))
        .await
        .into_iter()
        .flatten()
        .collect();
    let failed: Vec<String> = answers
        .iter()
        .filter(|a| a.2 != 200)
        .map(|a| format!("{} {}", a.2, a.3))
        .collect();
    let cuts = gw.stats().cuts_after.load(Ordering::SeqCst);
    let mut lines = Vec::new();
    let mut wrong = Vec::new();
    for key in keys {
        let answered: i64 = answers.iter().filter(|a| a.0 == key && a.2 == 200).map(|a| a.1).sum();
        let path = format!("/api/cache/{}", key.replace('{', "%7B").replace('}', "%7D"));
        let (_, b) = app.get(&path).await;
        let stored: i64 = b["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or(-1);
        lines.push(format!("{key}: {stored} stored, {answered} answered"));
        if stored != answered {
            wrong.push(key);
        }
    }
    println!(
        "exactly once: {} increments in {:.1} s, {} connections cut after the script ran, {} failed; {}",
        answers.len(),
        started.elapsed().as_secs_f64(),
        cuts,
        failed.len(),
        lines.join("; ")
    );
    assert!(cuts >= 20, "the gateway cut {cuts} times");
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}; the handler's warnings:\n{}",
        failed.len(),
        &failed[..failed.len().min(3)],
        warnings(&app)
    );
    assert!(wrong.is_empty(), "counts differ from the answers: {lines:?}");
    let mut by_one: Vec<i64> = answers
        .iter()
        .filter(|a| a.0 == "counted-by-one")
        .filter_map(|a| a.3["value"].as_i64())
        .collect();
    by_one.sort_unstable();
    assert_eq!(
        by_one,
        (1..=by_one.len() as i64).collect::<Vec<_>>(),
        "each answer is its own increment"
    );
}

/// `DELETE` whose answer is lost with its connection (cut right after the
/// delete ran) still answers `deleted: true`: the invocation deleted the
/// key. (Checked against the handler before this work, which sent DEL
/// again: the retry found nothing and answered `deleted: false`.)
#[tokio::test]
async fn delete_answers_the_truth_when_its_answer_is_lost() {
    let app = spawn_app(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    let (s, b) = app.call(Method::PUT, "/api/cache/doomed", Some(b"v")).await;
    assert_eq!(s, 200, "{b}");
    let gw = app.gateway();
    gw.cut_after_next(&["EVALSHA", "EVAL", "DEL"], 1);
    let (s, b) = app.call(Method::DELETE, "/api/cache/doomed", None).await;
    assert_eq!(
        gw.stats().cuts_after.load(Ordering::SeqCst),
        1,
        "the first answer was lost"
    );
    assert_eq!((s, &b["deleted"]), (200, &Value::Bool(true)), "{b}");
    assert_eq!(app.get("/api/cache/doomed").await.0, 404);
    let (s, b) = app.call(Method::DELETE, "/api/cache/doomed", None).await;
    assert_eq!(
        (s, &b["deleted"]),
        (200, &Value::Bool(false)),
        "a second invocation deleted nothing: {b}"
    );
}

/// Every open connection goes silent (no FIN, nothing answered) under
/// load, with 2 s deadlines: the connection is abandoned at the first
/// command deadline, the invocations on it ride through onto a new one,
/// none fails, none takes longer than one deadline plus 2 s, and requests
/// sent after the new connection is up are fast. (Checked broken: without
/// abandoning a silent connection, the invocations on it time out.)
#[tokio::test]
async fn silent_connections_are_abandoned_within_one_deadline() {
    let app = spawn_app(Options {
        gateway: true,
        rust_log: "info",
        env: deadlines(2.0, 2.0, None),
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gw = app.gateway();
    let load = Load::new(&app);
    let mut silenced_at = Duration::ZERO;
    tokio::join!(load.run(8), async {
        load.wait_successes(200, Duration::ZERO, Duration::from_secs(20)).await;
        silenced_at = load.now();
        assert!(gw.go_silent() >= 1, "a connection went silent");
        // Load for 6 s from the silence, or until 300 invocations sent
        // after the new connection succeeded (the checks come after).
        let limit = silenced_at + Duration::from_secs(15);
        while load.now() < limit
            && !(load.now() >= silenced_at + Duration::from_secs(6)
                && gw.stats().connections.load(Ordering::SeqCst) >= 2
                && load.successes_since(silenced_at + Duration::from_secs(3)) >= 300)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        load.stop();
    });
    let during: Vec<Outcome> = load
        .all()
        .into_iter()
        .filter(|o| o.sent + o.took >= silenced_at)
        .collect();
    let (failed, slowest) = report("silence", &during);
    assert!(
        failed.is_empty(),
        "{:?}",
        failed.iter().take(5).map(Outcome::describe).collect::<Vec<_>>()
    );
    assert!(
        slowest <= Duration::from_secs(4),
        "one deadline + 2 s at most: {slowest:?}"
    );
    let later: Vec<&Outcome> = during
        .iter()
        .filter(|o| o.sent >= silenced_at + Duration::from_secs(3))
        .collect();
    let slowest_later = later.iter().map(|o| o.took).max().unwrap_or_default();
    assert!(
        !later.is_empty() && slowest_later < Duration::from_secs(1),
        "later requests are fast: {slowest_later:?}"
    );
    assert_eq!(gw.stats().connections.load(Ordering::SeqCst), 2, "one new connection");
}

/// A cache that is down for 8 s under load from 8 clients (1 s deadlines,
/// so a 2 s window): invocations sent early ride through the window and
/// then answer 503; once the cache has been down longer than the window,
/// new invocations fail fast; connection attempts trickle (100 ms doubling
/// to 2 s, whatever the load); and when the cache is back, the first
/// attempt succeeds. (The gate's schedule over a minute is unit-tested on
/// paused time in `cache/gate.rs`.) (Checked broken: failing fast from
/// the first failure, the early invocations answer at once.)
#[tokio::test]
async fn a_long_outage_fails_fast_with_a_trickle_of_attempts() {
    let app = spawn_app(Options {
        gateway: true,
        env: deadlines(1.0, 1.0, None),
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gw = app.gateway();
    app.redis.stop();
    gw.close_all();
    let before = gw.stats().connections.load(Ordering::SeqCst);
    let start = Instant::now();
    let outcomes = Mutex::new(Vec::new());
    let client = || async {
        while start.elapsed() < Duration::from_secs(8) {
            let sent = start.elapsed();
            let (s, b) = app.get("/api/ping").await;
            outcomes
                .lock()
                .unwrap()
                .push((sent, start.elapsed() - sent, s, b["code"].clone()));
        }
    };
    futures_util::future::join_all((0..8).map(|_| client())).await;
    let attempts = gw.stats().connections.load(Ordering::SeqCst) - before;
    let outcomes = outcomes.into_inner().unwrap();
    assert!(
        outcomes.iter().all(|o| o.2 == 503 && o.3 == "cache_unavailable"),
        "{outcomes:?}"
    );
    let early: Vec<_> = outcomes.iter().filter(|o| o.0 < Duration::from_millis(300)).collect();
    let late: Vec<_> = outcomes.iter().filter(|o| o.0 > Duration::from_secs(3)).collect();
    let fast_late = late.iter().filter(|o| o.1 < Duration::from_millis(200)).count();
    println!(
        "outage: {} invocations in 8 s, {attempts} connection attempts; the first ones waited up to {:.0} ms; \
         after 3 s {fast_late} of {} answered within 200 ms",
        outcomes.len(),
        early.iter().map(|o| o.1).max().unwrap_or_default().as_secs_f64() * 1000.0,
        late.len()
    );
    assert!(
        !early.is_empty() && early.iter().all(|o| o.1 >= Duration::from_secs(1)),
        "rode through the window first"
    );
    assert!(late.len() > 200, "{} late invocations", late.len());
    assert!(
        fast_late * 10 >= late.len() * 9,
        "after the window, nearly all fail fast"
    );
    assert!((5..=11).contains(&attempts), "{attempts} attempts in 8 s: a trickle");

    app.redis.start_again().await.expect("redis-server starts again");
    let c0 = gw.stats().connections.load(Ordering::SeqCst);
    let back = Instant::now();
    while app.get("/api/ping").await.0 != 200 {
        assert!(back.elapsed() < Duration::from_secs(5), "recovered within one backoff");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let made = gw.stats().connections.load(Ordering::SeqCst) - c0;
    assert!(
        made <= 1,
        "the first attempt after the cache was back succeeded ({made} made)"
    );
}

/// The cache answering "not now" for a while (`LOADING` on 40 commands,
/// then `READONLY` on 5, as a node restarting and a primary demoted do):
/// every invocation under load succeeds; `READONLY` on one endpoint drops
/// the connection for a new one. (Checked broken: treating these as final
/// answers, they come back as 502s.)
#[tokio::test]
async fn not_now_answers_are_ridden_through() {
    let app = spawn_app(Options {
        gateway: true,
        rust_log: "info",
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gw = app.gateway();
    let load = Load::new(&app);
    tokio::join!(load.run(4), async {
        load.wait_successes(100, Duration::ZERO, Duration::from_secs(20)).await;
        gw.answer_with("LOADING Redis is loading the dataset in memory", 40);
        load.wait_successes(100, load.now(), Duration::from_secs(20)).await;
        gw.answer_with("READONLY You can't write against a read only replica.", 5);
        let readonly = load.now();
        wait_until(
            "READONLY answered and 100 successes after",
            Duration::from_secs(20),
            || load.successes_since(readonly) >= 100 && load.all().iter().filter(|o| o.sent >= readonly).count() >= 110,
        )
        .await;
        load.stop();
    });
    let (failed, _) = report("not now", &load.all());
    assert!(
        failed.is_empty(),
        "{:?}",
        failed.iter().take(5).map(Outcome::describe).collect::<Vec<_>>()
    );
    assert!(
        gw.stats().connections.load(Ordering::SeqCst) >= 2,
        "READONLY made a new connection"
    );
    assert!(
        app.output().contains("it is a replica now"),
        "READONLY dropped the connection"
    );
}

/// `AzureRedisEvents` through a patch of the node, under load: Starting,
/// Start, the node restarting (2 s), FailoverComplete, Ended. No
/// invocation fails; each notification is logged once; Health shows the
/// one in force (type, node, start time) and nothing once it ended; the
/// subscription is made again on the new connection. (Checked broken:
/// without subscribing again after a reconnect, FailoverComplete and Ended
/// never arrive.)
#[tokio::test]
async fn azure_maintenance_events_are_followed() {
    let app = spawn_app(Options {
        gateway: true,
        rust_log: "info",
        env: vec![("Redis__maintenanceNotifications".into(), "on".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let gw = app.gateway();
    wait_until("the subscription", Duration::from_secs(5), || {
        gw.commands_seen("SUBSCRIBE") == 1
    })
    .await;
    let event = |kind: &str| {
        format!(
            "NotificationType|{kind}|StartTimeInUTC|2026-12-03T10:00:00|IsReplica|False|IPAddress|127.0.0.1|SSLPort|{}|NonSSLPort|0|SomeNewKey|x",
            gw.port()
        )
    };
    let maintenance = || async { app.get("/api/health").await.1["maintenance"].clone() };
    let load = Load::new(&app);
    tokio::join!(load.run(4), async {
        load.wait_successes(100, Duration::ZERO, Duration::from_secs(20)).await;
        for kind in ["NodeMaintenanceStarting", "NodeMaintenanceStart"] {
            assert_eq!(gw.publish("AzureRedisEvents", &event(kind)).await.unwrap(), 1);
            app.wait_for_output(&format!("kind={kind} "), Duration::from_secs(5))
                .await;
            let shown = maintenance().await;
            assert_eq!(shown["type"], kind, "{shown}");
            assert_eq!(shown["start_time"], "2026-12-03T10:00:00", "{shown}");
            assert_eq!(shown["node"], format!("127.0.0.1:{}", gw.port()), "{shown}");
        }
        let stopped = Instant::now();
        app.redis.stop();
        app.wait_for_output("dropped the cache connection", Duration::from_secs(10))
            .await;
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(stopped.elapsed())).await;
        app.redis.start_again().await.unwrap();
        wait_until("a second subscription", Duration::from_secs(15), || {
            gw.commands_seen("SUBSCRIBE") == 2
        })
        .await;
        let kind = "NodeMaintenanceFailoverComplete";
        assert_eq!(gw.publish("AzureRedisEvents", &event(kind)).await.unwrap(), 1);
        app.wait_for_output(&format!("kind={kind} "), Duration::from_secs(5))
            .await;
        assert_eq!(maintenance().await["type"], kind);
        let kind = "NodeMaintenanceEnded";
        gw.publish("AzureRedisEvents", &event(kind)).await.unwrap();
        app.wait_for_output(&format!("kind={kind} "), Duration::from_secs(5))
            .await;
        assert_eq!(maintenance().await, Value::Null);
        load.wait_successes(100, load.now(), Duration::from_secs(20)).await;
        load.stop();
    });
    let (failed, _) = report("AzureRedisEvents", &load.all());
    assert!(
        failed.is_empty(),
        "{:?}",
        failed.iter().take(5).map(Outcome::describe).collect::<Vec<_>>()
    );
    // The same message again is not logged twice.
    gw.publish("AzureRedisEvents", &event("NodeMaintenanceEnded"))
        .await
        .unwrap();
    let (s, _) = app.get("/api/ping").await;
    assert_eq!(s, 200);
    assert_eq!(
        app.output_count("kind=NodeMaintenanceEnded "),
        1,
        "each notification logged once"
    );
}

/// A refused `SUBSCRIBE` (the identity's access policy has no `@pubsub`):
/// logged once, and nothing else changes.
#[tokio::test]
async fn a_refused_subscription_changes_nothing() {
    let app = spawn_app(Options {
        env: vec![("Redis__maintenanceNotifications".into(), "on".into())],
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let _: () = app
        .redis
        .admin()
        .cmd(redis::cmd("ACL").arg("SETUSER").arg(&app.oid).arg("-@pubsub"))
        .await
        .unwrap();
    app.redis.admin().client_kill_user(&app.oid).await.unwrap();
    assert_eq!(app.get("/api/ping").await.0, 200);
    app.wait_for_output("the cache refused SUBSCRIBE", Duration::from_secs(5))
        .await;
    app.redis.admin().client_kill_user(&app.oid).await.unwrap();
    for _ in 0..20 {
        assert_eq!(app.call(Method::PUT, "/api/cache/k", Some(b"v")).await.0, 200);
    }
    assert_eq!(app.output_count("the cache refused SUBSCRIBE"), 1, "logged once");
    assert_eq!(
        app.output_count("does not offer maintenance notifications"),
        1,
        "redis 7 refuses the handshake"
    );
}

/// Redis's handoff pushes from the gateway, under load: `MOVING` to a
/// second front end (the handler connects there and closes the old
/// connection itself, before the old front end closes it), then
/// `MIGRATING` and `FAILING_OVER` while replies take 1.5 s against a 1 s
/// command deadline (relaxed to 10 s, so nothing times out), each ended
/// by `MIGRATED`/`FAILED_OVER`. No invocation fails. (Checked broken:
/// without relaxing, the slow replies time out and invocations fail.)
#[tokio::test]
async fn handoff_pushes_are_followed() {
    let app = spawn_app(Options {
        gateway: true,
        rust_log: "info",
        env: {
            let mut env = deadlines(1.0, 1.0, None);
            env.push(("Redis__maintenanceNotifications".into(), "on".into()));
            env
        },
        ..Options::default()
    })
    .await;
    assert_eq!(app.get("/api/ping").await.0, 200);
    let old = app.gateway();
    let new = devhost::gateway::Gateway::start(
        &app.pki,
        app.redis.plain_port(),
        app.redis.admin().password(),
        crate::support::verify_with(app.identity.clone()),
    )
    .await;
    let load = Load::new(&app);
    let mut moved_before_close = false;
    tokio::join!(load.run(4), async {
        load.wait_successes(100, Duration::ZERO, Duration::from_secs(20)).await;
        let to = format!("127.0.0.1:{}", new.port());
        let moving = encode_push(&[b"MOVING", b"1", b"6", to.as_bytes()]);
        assert_eq!(old.inject(&moving), 1);
        wait_until("the new endpoint in use", Duration::from_secs(10), || {
            new.stats().open.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_until(
            "the old connection closed by the handler",
            Duration::from_secs(10),
            || old.stats().open.load(Ordering::SeqCst) == 0,
        )
        .await;
        moved_before_close = old.stats().closed_by_client.load(Ordering::SeqCst) == 1;
        // The old front end goes away when its time is up.
        old.set_refuse(true);
        old.close_all();
        load.wait_successes(100, load.now(), Duration::from_secs(20)).await;
        for (start, end) in [("MIGRATING", "MIGRATED"), ("FAILING_OVER", "FAILED_OVER")] {
            assert_eq!(new.inject(&encode_push(&[start.as_bytes(), b"2", b"10"])), 1);
            app.wait_for_output(&format!("kind={start} "), Duration::from_secs(5))
                .await;
            new.set_reply_delay(Some(Duration::from_millis(1500)));
            load.wait_successes(8, load.now(), Duration::from_secs(30)).await;
            new.set_reply_delay(None);
            assert_eq!(new.inject(&encode_push(&[end.as_bytes(), b"2"])), 1);
            app.wait_for_output(&format!("kind={end} "), Duration::from_secs(5))
                .await;
        }
        load.wait_successes(100, load.now(), Duration::from_secs(20)).await;
        load.stop();
    });
    let (failed, _) = report("handoffs", &load.all());
    assert!(
        moved_before_close,
        "the handler closed the old connection itself, after moving"
    );
    assert!(
        failed.is_empty(),
        "{:?}",
        failed.iter().take(5).map(Outcome::describe).collect::<Vec<_>>()
    );
    assert_eq!(
        new.stats().connections.load(Ordering::SeqCst),
        1,
        "one connection to the new endpoint"
    );
}

/// The configured endpoint presents a certificate from a CA the handler
/// does not trust, then one from the trusted CA naming another host: the
/// invocation fails (503 naming TLS), the connection is never used, and no
/// token is sent (the front end saw no AUTH or HELLO).
#[tokio::test]
async fn an_untrusted_certificate_gets_no_token() {
    let app = spawn_app(Options::default()).await;
    let untrusted = devhost::pki::Pki::generate().unwrap();
    let other_host = app.pki.issue("other-host", &["cache.other.example"]).unwrap();
    for (what, cert) in [
        ("untrusted CA", untrusted.server_cert()),
        ("another host's name", other_host),
    ] {
        let gw = devhost::gateway::Gateway::start_with(devhost::gateway::GatewayConfig {
            backend_port: app.redis.plain_port(),
            backend_password: app.redis.admin().password().to_owned(),
            verify: crate::support::verify_with(app.identity.clone()),
            pass_through_auth: false,
            cert,
        })
        .await
        .unwrap();
        let mut env = app.env.clone();
        env.push(("Redis__port".into(), gw.port().to_string()));
        env.extend(deadlines(1.0, 1.0, None));
        let handler = devhost::functions_host::HandlerProcess::spawn(
            &crate::support::handler_binary(),
            crate::support::app_root(),
            &env,
        )
        .await
        .unwrap();
        let (s, b) = crate::support::call_handler(&handler, Method::GET, "/api/ping", None).await;
        assert_eq!((s, b["code"].as_str()), (503, Some("cache_unavailable")), "{what}: {b}");
        assert!(b["error"].as_str().unwrap().contains("TLS"), "{what}: {b}");
        assert!(
            gw.stats().connections.load(Ordering::SeqCst) == 0,
            "{what}: no TLS connection was made"
        );
        assert_eq!(
            gw.commands_seen("AUTH") + gw.commands_seen("HELLO"),
            0,
            "{what}: no token sent"
        );
        assert_eq!(gw.stats().auth_accepted.load(Ordering::SeqCst), 0);
    }
}

/// A front end that accepts TCP and never answers the TLS handshake: the
/// connect deadline ends each attempt, and the invocation answers 503
/// `cache_unavailable` saying connecting took too long, within its
/// deadline; never a 504 ("did not answer within 0ns", as a connect timeout
/// inside the redis crate came out before).
#[tokio::test]
async fn a_connect_that_hangs_is_a_503() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let mut env = deadlines(0.5, 0.5, None);
    env.push(("Redis__port".into(), port.to_string()));
    let app = spawn_app(Options {
        env,
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let started = Instant::now();
        let (s, b) = app.get("/api/ping").await;
        assert_eq!((s, b["code"].as_str()), (503, Some("cache_unavailable")), "{b}");
        assert!(b["error"].as_str().unwrap().contains("took longer than"), "{b}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    held.abort();
}
