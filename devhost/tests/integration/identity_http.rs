//! The identity endpoint's HTTP behaviour: response shape, header check,
//! assigned identities and fault injection.

use devhost::identity::{IdentityConfig, IdentityEndpoint, IdentityMode};
use serde_json::Value;
use std::time::Duration;

async fn ask(idp: &IdentityEndpoint, secret: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut url = format!(
        "{}?api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com",
        idp.endpoint_url()
    );
    for (k, v) in extra {
        url.push_str(&format!("&{k}={v}"));
    }
    let rsp = reqwest::Client::new()
        .get(url)
        .header("metadata", "true")
        .header("x-identity-header", secret)
        .send()
        .await
        .unwrap();
    (rsp.status().as_u16(), rsp.json().await.unwrap())
}

/// A token request answers as App Service's endpoint does (a Bearer token for
/// the resource with `expires_on` the lifetime from now, verifiable by the
/// endpoint); an assigned identity's `client_id` is honoured and another
/// refused with 400; a wrong `x-identity-header` gets 401 and no token.
#[tokio::test]
async fn answers_like_app_service() {
    let idp = IdentityEndpoint::start(IdentityConfig {
        client_id: Some("cid-1".into()),
        token_lifetime: Duration::from_secs(600),
        ..IdentityConfig::default()
    })
    .await
    .unwrap();
    let secret = idp.header_secret();
    let (status, body) = ask(&idp, &secret, &[]).await;
    assert_eq!(status, 200, "{body}");
    let exp: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now + 599..=now + 601).contains(&exp));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://redis.azure.com");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(idp.verify(token).unwrap().exp, exp);

    let (status, _) = ask(&idp, &secret, &[("client_id", "cid-1")]).await;
    assert_eq!(status, 200);
    let (status, _) = ask(&idp, &secret, &[("client_id", "other")]).await;
    assert_eq!(status, 400);
    let (status, body) = ask(&idp, "wrong", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["statusCode"], 401);
    assert_eq!(idp.requests(), 4);
    assert_eq!(idp.tokens_minted(), 2);
}

/// Each fault mode does what the resilience tests rely on: `Fail500`
/// answers 500, `Unauthorized` 401, `Hang` holds the request until the mode
/// is set back to `Normal`, when the held request gets its token.
#[tokio::test]
async fn fault_modes() {
    let idp = IdentityEndpoint::start(IdentityConfig::default()).await.unwrap();
    let secret = idp.header_secret();
    idp.set_mode(IdentityMode::Fail500);
    assert_eq!(ask(&idp, &secret, &[]).await.0, 500);
    idp.set_mode(IdentityMode::Unauthorized);
    assert_eq!(ask(&idp, &secret, &[]).await.0, 401);

    idp.set_mode(IdentityMode::Hang);
    // The request reaches the endpoint (however slowly on a loaded machine)
    // and is held there; its caller then gives up on it.
    let mut abandoned = Box::pin(ask(&idp, &secret, &[]));
    tokio::select! {
        answer = &mut abandoned => panic!("Hang answered: {answer:?}"),
        () = wait_for_requests(&idp, 3) => {}
    }
    let held = tokio::time::timeout(Duration::from_millis(300), &mut abandoned).await;
    assert!(held.is_err(), "Hang answered: {held:?}");
    drop(abandoned);
    let idp = std::sync::Arc::new(idp);
    let pending = tokio::spawn({
        let idp = idp.clone();
        async move { ask(&idp, &idp.header_secret(), &[]).await.0 }
    });
    wait_for_requests(&idp, 4).await;
    idp.set_mode(IdentityMode::Normal);
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(idp.tokens_minted(), 1);
}

/// Waits until `idp` has received `n` token requests, or panics after 10 s.
async fn wait_for_requests(idp: &IdentityEndpoint, n: usize) {
    let start = std::time::Instant::now();
    while idp.requests() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} token requests received, {n} expected",
            idp.requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
