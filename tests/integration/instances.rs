//! More than one instance on one cache, as Flex Consumption runs an app: the
//! timer scales on instances of its own, apart from the HTTP functions
//! (per-function scaling, docs/azure.md "Hosting plans"), so what the timer
//! found must reach `Health` through the cache, not through process memory.

use crate::support::{call_handler, spawn_app, Options};
use devhost::functions_host::{timer_info_with_status, ScheduleStatus};
use reqwest::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// Two handler processes on one cache, the timer on one and Health on the
/// other: Health shows the check the other instance ran, with that
/// instance's id, its age and `stale: false`; the value lives under a key
/// named for the app with a TTL of three schedule periods (the host's
/// `Next` minus `Last`: 5 minutes); a result whose run is long past shows as
/// stale, never as current; and another app on the same cache sees none of
/// it. (Checked broken: with the result kept in process memory, as before,
/// Health on the second process shows `last_check: null`.)
#[tokio::test]
async fn timer_result_reaches_health_on_another_instance() {
    let app = spawn_app(Options {
        env: vec![
            ("WEBSITE_SITE_NAME".into(), "orders-api".into()),
            ("WEBSITE_INSTANCE_ID".into(), "timer-instance-1".into()),
        ],
        ..Options::default()
    })
    .await;
    let http = app.spawn_another(&[("WEBSITE_INSTANCE_ID", "http-instance-7")]).await;

    let (s, h) = call_handler(&http, Method::GET, "/api/health", None).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["last_check"], Value::Null, "no check has run yet: {h}");

    // The host fires the timer on its own instance: `Next` is the occurrence
    // firing now, `Last` the one five minutes before.
    let now = OffsetDateTime::now_utc();
    let status = ScheduleStatus {
        last: Some(now - time::Duration::minutes(5)),
        next: now,
        last_updated: now - time::Duration::minutes(5),
    };
    let res = app
        .handler
        .invoke_timer(
            "CacheHealthCheck",
            "myTimer",
            timer_info_with_status(false, Some(&status)),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["ReturnValue"]["instance"], "timer-instance-1", "{b}");
    let logs = b["Logs"].to_string();
    assert!(
        logs.contains("stored under CacheHealthCheck:last:orders-api for 900 s"),
        "{logs}"
    );

    let (s, h) = call_handler(&http, Method::GET, "/api/health", None).await;
    assert_eq!(s, 200, "{h}");
    let last = &h["last_check"];
    println!("Health on the HTTP instance: last_check = {last}");
    assert_eq!(last["ok"], true, "{h}");
    assert_eq!(last["instance"], "timer-instance-1", "{h}");
    assert_eq!(last["app"], "orders-api", "{h}");
    assert_eq!(last["period_s"], 300.0, "{h}");
    assert_eq!(last["stale"], false, "{h}");
    let age = last["age_s"].as_f64().unwrap_or_else(|| panic!("age_s: {h}"));
    assert!((0.0..60.0).contains(&age), "{h}");
    assert!(
        last["ping_ms"].as_f64().is_some() && last["client_count"].as_u64() >= Some(1),
        "{h}"
    );

    let key = "CacheHealthCheck:last:orders-api";
    let ttl: i64 = app.redis.admin().cmd(redis::cmd("TTL").arg(key)).await.unwrap();
    assert!((880..=900).contains(&ttl), "three periods of five minutes: {ttl}");

    // A result from a run 20 minutes ago (the timer's instances gone since)
    // is shown as stale, with its age.
    let mut old: Value = serde_json::from_str(
        &app.redis
            .admin()
            .cmd::<String>(redis::cmd("GET").arg(key))
            .await
            .unwrap(),
    )
    .unwrap();
    let twenty_minutes_ago = old["checked_at_unix_ms"].as_u64().unwrap() - 20 * 60 * 1000;
    old["checked_at_unix_ms"] = json!(twenty_minutes_ago);
    let set = redis::cmd("SET")
        .arg(key)
        .arg(old.to_string())
        .arg("EX")
        .arg(60)
        .clone();
    app.redis.admin().cmd::<()>(&set).await.unwrap();
    let (s, h) = call_handler(&http, Method::GET, "/api/health", None).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["last_check"]["stale"], true, "{h}");
    assert!(h["last_check"]["age_s"].as_f64().unwrap() >= 1200.0, "{h}");

    // Another app sharing the cache has a key of its own.
    let other = app.spawn_another(&[("WEBSITE_SITE_NAME", "billing-api")]).await;
    let (s, h) = call_handler(&other, Method::GET, "/api/health", None).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        h["last_check"],
        Value::Null,
        "another app's check is not this one's: {h}"
    );
}
