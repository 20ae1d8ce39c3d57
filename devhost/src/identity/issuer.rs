//! Minting for every token stand-in (the managed-identity endpoint, the
//! Entra ID token endpoint, `az` and `azd`): signed JWTs for one principal
//! and, with a Redis attached, each token a password of the user named by
//! its `oid` from before it is handed out until it expires.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis": the Redis user is the
//! token's `oid`, the password is the token, and an expired token no longer
//! authenticates (`WRONGPASS`). Entra ID does not depend on the cache: with
//! Redis down a token is still issued, and registered once Redis is back (as
//! an access policy assignment outlives a cache restart).

use super::jwt::{self, Claims, VerifyError};
use crate::redis_cluster::AclTarget;
use crate::util::unix_now;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the sweeper registers pending tokens and removes expired ones.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A token handed out: the JWT, its `exp` and its lifetime in seconds.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) exp: i64,
    pub(crate) lifetime_s: i64,
}

/// Mints tokens for one principal and keeps their Redis passwords.
pub(crate) struct Issuer {
    oid: String,
    tenant_id: String,
    redis: Option<AclTarget>,
    key: Vec<u8>,
    lifetime: Mutex<Duration>,
    minted: AtomicUsize,
    last: Mutex<Option<String>>,
    /// Tokens registered as Redis passwords, with their `exp`.
    live: tokio::sync::Mutex<Vec<(String, i64)>>,
    /// Tokens whose registration failed (Redis down), retried by the sweeper.
    pending: tokio::sync::Mutex<Vec<(String, i64)>>,
}

impl Issuer {
    /// An issuer for object id `oid` in `tenant_id`, with a fresh signing
    /// key; `redis`, when set, is where its tokens become passwords.
    pub(crate) fn new(oid: String, tenant_id: String, lifetime: Duration, redis: Option<AclTarget>) -> Arc<Issuer> {
        Arc::new(Issuer {
            oid,
            tenant_id,
            redis,
            key: crate::util::random_bytes(32),
            lifetime: Mutex::new(lifetime),
            minted: AtomicUsize::new(0),
            last: Mutex::new(None),
            live: tokio::sync::Mutex::new(Vec::new()),
            pending: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// The tenant tokens are issued in.
    pub(crate) fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Mints a token for `audience` (the resource: the scope without
    /// `/.default`), living the current lifetime rounded up to whole
    /// seconds, and registers it with Redis before returning it.
    pub(crate) async fn issue(&self, audience: &str) -> Issued {
        let now = unix_now();
        let lifetime_s = self.lifetime.lock().unwrap().as_secs_f64().ceil() as i64;
        let exp = now + lifetime_s;
        let claims = Claims {
            aud: audience.to_owned(),
            iss: format!("https://sts.windows.net/{}/", self.tenant_id),
            oid: self.oid.clone(),
            tid: self.tenant_id.clone(),
            iat: now,
            nbf: now,
            exp,
            uti: crate::util::random_hex(12),
        };
        let token = jwt::mint(&self.key, &claims);
        if let Some(redis) = &self.redis {
            let mut live = self.live.lock().await;
            match redis.acl_add_password(&self.oid, &token).await {
                Ok(()) => live.push((token.clone(), exp)),
                Err(_) => self.pending.lock().await.push((token.clone(), exp)),
            }
        }
        let _ = self.sweep().await;
        self.minted.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some(token.clone());
        Issued { token, exp, lifetime_s }
    }

    /// The claims of a token this issuer minted (signature checked; any
    /// audience, even expired); `None` for anything else.
    pub(crate) fn claims(&self, token: &str) -> Option<Claims> {
        jwt::verify_signature(&self.key, token).ok()
    }

    /// Checks a token this issuer minted: signature, Redis audience, and an
    /// `exp` after `now`.
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<Claims, VerifyError> {
        jwt::verify(&self.key, token, now)
    }

    /// Tokens minted so far.
    pub(crate) fn minted(&self) -> usize {
        self.minted.load(Ordering::SeqCst)
    }

    /// The most recent token minted.
    pub(crate) fn last_token(&self) -> Option<String> {
        self.last.lock().unwrap().clone()
    }

    /// Changes the lifetime of tokens minted from now on.
    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().unwrap() = lifetime;
    }

    /// Registers pending tokens and removes the passwords of expired ones;
    /// what fails (Redis down) is kept for the next sweep.
    pub(crate) async fn sweep(&self) -> anyhow::Result<()> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let now = unix_now();
        let mut live = self.live.lock().await;
        let mut pending = self.pending.lock().await;
        for (token, exp) in std::mem::take(&mut *pending) {
            if exp <= now {
                continue;
            }
            match redis.acl_add_password(&self.oid, &token).await {
                Ok(()) => live.push((token, exp)),
                Err(_) => pending.push((token, exp)),
            }
        }
        drop(pending);
        if live.iter().all(|(_, exp)| *exp > now) {
            return Ok(());
        }
        let mut first_err = None;
        let mut keep = Vec::with_capacity(live.len());
        for (token, exp) in live.drain(..) {
            if exp > now {
                keep.push((token, exp));
            } else if let Err(e) = redis.acl_remove_password(&self.oid, &token).await {
                first_err.get_or_insert(e);
                keep.push((token, exp));
            }
        }
        *live = keep;
        first_err.map_or(Ok(()), Err)
    }

    /// Sweeps every 250 ms until the handle is aborted.
    pub(crate) fn spawn_sweeper(self: &Arc<Self>) -> JoinHandle<()> {
        let issuer = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let _ = issuer.sweep().await;
            }
        })
    }
}
