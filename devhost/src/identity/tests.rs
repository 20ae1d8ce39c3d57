//! Slow answers and the request log, end to end over HTTP.

use super::{IdentityConfig, IdentityEndpoint, IdentityMode};
use std::time::{Duration, Instant};

/// One token request as `azure_identity` sends it: the status and, on 200,
/// the `expires_on` it answered.
async fn ask(idp: &IdentityEndpoint) -> (u16, Option<i64>) {
    let url = format!(
        "{}?api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com",
        idp.endpoint_url()
    );
    let rsp = reqwest::Client::new()
        .get(url)
        .header("metadata", "true")
        .header("x-identity-header", idp.header_secret())
        .send()
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let body: serde_json::Value = rsp.json().await.unwrap();
    (status, body["expires_on"].as_str().and_then(|e| e.parse().ok()))
}

/// A delay holds every answer, failures included, for at least that long;
/// the log shows each request in flight for that long with its outcome and
/// the `exp` it got; zero answers at once again.
#[tokio::test]
async fn delay_holds_each_answer_and_the_log_shows_it() {
    const DELAY: Duration = Duration::from_millis(300);
    let idp = IdentityEndpoint::start(IdentityConfig::default()).await.unwrap();
    idp.set_delay(DELAY);

    let start = Instant::now();
    let (status, exp) = ask(&idp).await;
    assert!(start.elapsed() >= DELAY, "answered after {:?}", start.elapsed());
    assert_eq!(status, 200);
    assert_eq!(idp.verify(&idp.last_token().unwrap()).unwrap().exp, exp.unwrap());

    idp.set_mode(IdentityMode::Fail500);
    let start = Instant::now();
    assert_eq!(ask(&idp).await, (500, None));
    assert!(start.elapsed() >= DELAY, "failure answered after {:?}", start.elapsed());

    idp.set_mode(IdentityMode::Normal);
    idp.set_delay(Duration::ZERO);
    let start = Instant::now();
    assert_eq!(ask(&idp).await.0, 200);
    assert!(start.elapsed() < DELAY, "undelayed answer took {:?}", start.elapsed());

    let log = idp.request_log();
    assert_eq!(log.len(), 3);
    assert_eq!(idp.requests(), 3);
    let held: Vec<Duration> = log.iter().map(|r| r.answered.unwrap() - r.received).collect();
    assert!(held[0] >= DELAY && held[1] >= DELAY && held[2] < DELAY, "{held:?}");
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(200), Some(500), Some(200)]
    );
    assert_eq!(log[0].exp, exp);
    assert_eq!(log[1].exp, None);
    assert!(log.windows(2).all(|w| w[0].received <= w[1].received));
}

/// A request still held shows in the log as received and not answered.
#[tokio::test]
async fn held_request_is_logged_unanswered() {
    let idp = IdentityEndpoint::start(IdentityConfig::default()).await.unwrap();
    idp.set_delay(Duration::from_secs(600));
    let url = idp.endpoint_url();
    let held = tokio::spawn(async move { reqwest::get(url).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while idp.request_log().is_empty() {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let entry = idp.request_log()[0];
    assert_eq!((entry.answered, entry.status, entry.exp), (None, None, None));
    held.abort();
}
