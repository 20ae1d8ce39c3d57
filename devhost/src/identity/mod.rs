//! The App Service managed-identity endpoint (`IDENTITY_ENDPOINT` /
//! `IDENTITY_HEADER`), as `azure_identity` 1.0.0's `ManagedIdentityCredential`
//! calls it.
//!
//! Follows docs/azure.md "azure_identity 1.0.0": `GET {IDENTITY_ENDPOINT}?
//! api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com[&client_id=…]`
//! with headers `metadata: true` and `x-identity-header`; the answer holds
//! `access_token`, `expires_on` (a JSON string of Unix seconds), `token_type`
//! and `resource`; a 400 means "identity not assigned". And "Entra ID and
//! Azure Redis": with a Redis attached, each token becomes a password of the
//! user named by its `oid` before the answer leaves, and is removed once
//! expired (AUTH with an expired token then gives `WRONGPASS`).
//!
//! Slow answers ([`IdentityEndpoint::set_delay`]) and the request log
//! ([`IdentityEndpoint::request_log`]) are for measuring what a slow fetch
//! costs the invocations around it: in Azure the identity endpoint is
//! slowest exactly when many instances start at once, and
//! docs/azure.md "azure_identity 1.0.0" notes that a fetch can take many
//! seconds (IMDS's own retry, about 72 s; 82 s of retries on 5xx), while
//! "Entra ID and Azure Redis" says the connection closes when its token
//! expires, so a refresh has to arrive before then however long it takes.

mod issuer;
mod jwt;
mod server;

// The Entra ID stand-ins (`crate::entra`) mint with the same issuer.
pub(crate) use issuer::{Issued, Issuer};
pub use jwt::{Claims, VerifyError, REDIS_AUDIENCE};
// Federated (workload identity) assertions are signed and read the same way.
pub(crate) use jwt::{mint as mint_jwt, verify_signature as verify_jwt_signature};

use crate::redis_cluster::{AclTarget, ClusterAdmin};
use crate::redis_server::RedisAdmin;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the endpoint answers token requests (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// Mint and return tokens.
    Normal,
    /// Answer 500 with a JSON error.
    Fail500,
    /// Hold every request without answering until the mode changes (then
    /// answer per the new mode), the endpoint is dropped, or 10 minutes pass.
    Hang,
    /// Answer 401 as for a wrong `x-identity-header`.
    Unauthorized,
}

/// What the endpoint issues tokens for.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Object id of the identity: the `oid` claim and the Redis user name.
    pub oid: String,
    /// Tenant id: the `tid` claim and part of `iss`.
    pub tenant_id: String,
    /// Client id of an assigned user-assigned identity. A request with a
    /// `client_id` other than this (or any `client_id` when `None`) gets 400
    /// "identity not assigned"; a request without one gets the identity.
    pub client_id: Option<String>,
    /// Lifetime of minted tokens. `expires_on` is whole Unix seconds: now
    /// rounded down plus this rounded up, so a token lives more than
    /// `ceil(lifetime) - 1` s and at most `ceil(lifetime)` s from its answer.
    /// Read `exp` from the token ([`IdentityEndpoint::verify`]) when the
    /// exact instant matters.
    pub token_lifetime: Duration,
    /// When set, each token is added as a password of user `oid` before the
    /// answer is sent, and removed after it expires.
    pub redis: Option<RedisAdmin>,
    /// The same for every node of a local Redis Cluster (ACLs are per
    /// node); used instead of `redis` when set.
    pub redis_cluster: Option<ClusterAdmin>,
}

impl IdentityConfig {
    /// Where tokens become passwords: the cluster's nodes, else the server.
    fn acl_target(&self) -> Option<AclTarget> {
        match (&self.redis_cluster, &self.redis) {
            (Some(c), _) => Some(AclTarget::Cluster(c.clone())),
            (None, Some(s)) => Some(AclTarget::Server(s.clone())),
            (None, None) => None,
        }
    }
}

impl Default for IdentityConfig {
    /// Fixed GUID-like ids, 1 h lifetime (ordinary Entra tokens live
    /// 60-90 min), no Redis.
    fn default() -> Self {
        IdentityConfig {
            oid: "00000000-0000-4000-8000-00000000a11d".into(),
            tenant_id: "00000000-0000-4000-8000-0000000007e1".into(),
            client_id: None,
            token_lifetime: Duration::from_secs(3600),
            redis: None,
            redis_cluster: None,
        }
    }
}

/// One token request as the endpoint saw it, whatever its outcome: when
/// it was in flight, from the caller's point of view, to within the time
/// the bytes take on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest {
    /// When the request reached the endpoint (before any delay).
    pub received: Instant,
    /// When its answer was handed to the HTTP server to send; `None` while
    /// it is still held (delay or `Hang`).
    pub answered: Option<Instant>,
    /// The answer's HTTP status; `None` while it is held.
    pub status: Option<u16>,
    /// The `exp` of the token minted for it, Unix seconds (`expires_on`);
    /// `None` when no token was minted.
    pub exp: Option<i64>,
}

/// What the HTTP handler and the endpoint's owner share.
struct IdentityState {
    cfg: IdentityConfig,
    issuer: Arc<Issuer>,
    secret: String,
    /// How long each request is held before it is answered (zero: at once).
    delay: Mutex<Duration>,
    /// Every request received, in order of arrival.
    log: Mutex<Vec<TokenRequest>>,
    requests: AtomicUsize,
    last_query: Mutex<Option<BTreeMap<String, String>>>,
    mode: watch::Receiver<IdentityMode>,
}

/// A running managed-identity endpoint on 127.0.0.1; stops on drop.
pub struct IdentityEndpoint {
    addr: SocketAddr,
    shared: Arc<IdentityState>,
    mode_tx: watch::Sender<IdentityMode>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for IdentityEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl IdentityEndpoint {
    /// Serves the endpoint on 127.0.0.1 at a free port, with a random
    /// signing key and header secret.
    pub async fn start(cfg: IdentityConfig) -> anyhow::Result<IdentityEndpoint> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (mode_tx, mode) = watch::channel(IdentityMode::Normal);
        let issuer = Issuer::new(
            cfg.oid.clone(),
            cfg.tenant_id.clone(),
            cfg.token_lifetime,
            cfg.acl_target(),
        );
        let sweeper = issuer.spawn_sweeper();
        let shared = Arc::new(IdentityState {
            issuer,
            delay: Mutex::new(Duration::ZERO),
            log: Mutex::new(Vec::new()),
            cfg,
            secret: crate::util::random_hex(16),
            requests: AtomicUsize::new(0),
            last_query: Mutex::new(None),
            mode,
        });
        let app = server::router(shared.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(IdentityEndpoint {
            addr,
            shared,
            mode_tx,
            tasks: vec![serve, sweeper],
        })
    }

    /// The value for `IDENTITY_ENDPOINT`: `http://127.0.0.1:<port>/msi/token`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}/msi/token", self.addr)
    }

    /// The value for `IDENTITY_HEADER` (checked as `x-identity-header`).
    pub fn header_secret(&self) -> String {
        self.shared.secret.clone()
    }

    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, for a child's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("IDENTITY_ENDPOINT".into(), self.endpoint_url()),
            ("IDENTITY_HEADER".into(), self.header_secret()),
        ]
    }

    /// Token requests received, whatever their outcome.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Tokens minted and answered with 200.
    pub fn tokens_minted(&self) -> usize {
        self.shared.issuer.minted()
    }

    /// The most recently minted token.
    pub fn last_token(&self) -> Option<String> {
        self.shared.issuer.last_token()
    }

    /// The query parameters of the most recent request (e.g. `client_id`).
    pub fn last_query(&self) -> Option<BTreeMap<String, String>> {
        self.shared.last_query.lock().unwrap().clone()
    }

    /// Changes the lifetime of tokens minted from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.shared.issuer.set_lifetime(lifetime);
    }

    /// Holds every token request that arrives from now on for `delay`
    /// before answering it, whatever the mode (zero, the default, answers at
    /// once); requests already held keep the delay they arrived with. The
    /// mode is read and the token minted after the wait, so the token gets
    /// its whole lifetime from the moment it is answered, as a slow Entra ID
    /// would issue it. For a fetch that is slow rather than failing or
    /// hanging: the handler's refresh must not make invocations wait for it
    /// while the current token is valid.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Every token request received so far, in order of arrival, with when
    /// it arrived and when it was answered: the intervals during which a
    /// caller had a fetch in flight.
    pub fn request_log(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Switches fault injection; releases requests held by `Hang`.
    pub fn set_mode(&self, mode: IdentityMode) {
        self.mode_tx.send_replace(mode);
    }

    /// The object id tokens are issued for (the Redis user name).
    pub fn oid(&self) -> &str {
        &self.shared.cfg.oid
    }

    /// Checks a token minted by this endpoint: signature, `aud`
    /// (`https://redis.azure.com`) and `exp` (not yet passed).
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.shared.issuer.verify(token, crate::util::unix_now())
    }

    /// Removes the Redis passwords of expired tokens now (the sweeper also
    /// does this every 250 ms).
    pub async fn sweep_expired(&self) -> anyhow::Result<()> {
        self.shared.issuer.sweep().await
    }
}

impl Drop for IdentityEndpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
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
}
