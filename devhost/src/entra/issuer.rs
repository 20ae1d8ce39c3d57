//! Access tokens for the Entra ID stand-ins: the same signed JWTs as the
//! managed-identity endpoint's (`identity/jwt.rs`), and with a Redis
//! attached, passwords of the user named by their `oid` from before they are
//! handed out until they expire.
//!
//! Follows AZURE-FACTS "Entra ID and Azure Redis": the Redis user is the
//! token's `oid`, the password is the token, and an expired token no longer
//! authenticates (`WRONGPASS`).

use crate::identity::{mint_jwt, verify_jwt_signature, Claims};
use crate::redis_server::RedisAdmin;
use crate::util::unix_now;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Who the tokens are for and what they open.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Object id: the `oid` claim and the Redis user name.
    pub oid: String,
    /// Tenant id: the `tid` claim and part of `iss`.
    pub tenant_id: String,
    /// Lifetime of each token, rounded up to whole seconds (`exp` is whole
    /// Unix seconds).
    pub token_lifetime: Duration,
    /// When set, each token becomes a password of user `oid` before it is
    /// handed out, and is removed after it expires.
    pub redis: Option<RedisAdmin>,
}

impl Default for Principal {
    /// Fixed GUID-like ids, 1 h tokens (ordinary Entra tokens live 60-90
    /// min), no Redis.
    fn default() -> Self {
        Principal {
            oid: "00000000-0000-4000-8000-0000000e0a1d".into(),
            tenant_id: "00000000-0000-4000-8000-0000000007e1".into(),
            token_lifetime: Duration::from_secs(3600),
            redis: None,
        }
    }
}

/// A token handed out: the JWT, its `exp` and its lifetime in seconds.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) exp: i64,
    pub(crate) lifetime_s: i64,
}

/// Mints tokens for one [`Principal`] and keeps their Redis passwords.
pub(crate) struct Issuer {
    principal: Principal,
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
    pub(crate) fn new(principal: Principal) -> Arc<Issuer> {
        Arc::new(Issuer {
            lifetime: Mutex::new(principal.token_lifetime),
            principal,
            key: crate::util::random_bytes(32),
            minted: AtomicUsize::new(0),
            last: Mutex::new(None),
            live: tokio::sync::Mutex::new(Vec::new()),
            pending: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Mints a token for `audience` (the resource: the scope without
    /// `/.default`) and registers it with Redis before returning it. Entra ID
    /// does not depend on the cache: with Redis down the token is still
    /// issued and registered once Redis is back.
    pub(crate) async fn issue(&self, audience: &str) -> Issued {
        let now = unix_now();
        let lifetime_s = self.lifetime.lock().unwrap().as_secs_f64().ceil() as i64;
        let exp = now + lifetime_s;
        let p = &self.principal;
        let claims = Claims {
            aud: audience.to_owned(),
            iss: format!("https://sts.windows.net/{}/", p.tenant_id),
            oid: p.oid.clone(),
            tid: p.tenant_id.clone(),
            iat: now,
            nbf: now,
            exp,
            uti: crate::util::random_hex(12),
        };
        let token = mint_jwt(&self.key, &claims);
        if let Some(redis) = &p.redis {
            let mut live = self.live.lock().await;
            match redis.acl_add_password(&p.oid, &token).await {
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
        verify_jwt_signature(&self.key, token).ok()
    }

    pub(crate) fn minted(&self) -> usize {
        self.minted.load(Ordering::SeqCst)
    }

    pub(crate) fn last_token(&self) -> Option<String> {
        self.last.lock().unwrap().clone()
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().unwrap() = lifetime;
    }

    /// Registers pending tokens and removes the passwords of expired ones;
    /// what fails (Redis down) is kept for the next sweep.
    pub(crate) async fn sweep(&self) -> anyhow::Result<()> {
        let Some(redis) = &self.principal.redis else {
            return Ok(());
        };
        let oid = &self.principal.oid;
        let now = unix_now();
        let mut live = self.live.lock().await;
        let mut pending = self.pending.lock().await;
        for (token, exp) in std::mem::take(&mut *pending) {
            if exp <= now {
                continue;
            }
            match redis.acl_add_password(oid, &token).await {
                Ok(()) => live.push((token, exp)),
                Err(_) => pending.push((token, exp)),
            }
        }
        drop(pending);
        let mut first_err = None;
        let mut keep = Vec::with_capacity(live.len());
        for (token, exp) in live.drain(..) {
            if exp > now {
                keep.push((token, exp));
            } else if let Err(e) = redis.acl_remove_password(oid, &token).await {
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
                tokio::time::sleep(Duration::from_millis(250)).await;
                let _ = issuer.sweep().await;
            }
        })
    }
}
