//! The Microsoft Entra ID token endpoint, over HTTPS on 127.0.0.1, as
//! `azure_identity` 1.0.0's `ClientSecretCredential` and
//! `WorkloadIdentityCredential` call it when the authority host
//! (`AZURE_AUTHORITY_HOST`, or the client options' cloud) points here.
//!
//! The checks and answers are in `token.rs`; this file holds the
//! configuration, the server's life and what a test reads back.

use super::issuer::{Issuer, Principal};
use super::token;
use crate::identity::{mint_jwt, Claims, REDIS_AUDIENCE};
use crate::pki::Pki;
use crate::util::unix_now;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The audience a federated token must carry for Entra ID to take it as a
/// client assertion (workload identity).
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// One app registration in one tenant, and what it may sign in with.
#[derive(Clone)]
pub struct EntraConfig {
    /// The app's service principal (its `oid` is the Redis user), the
    /// tenant (the path's `{tenant}`), token lifetime and Redis.
    pub principal: Principal,
    /// The app's client (application) id.
    pub client_id: String,
    /// A client secret the app accepts; `None`: no secret is registered.
    pub client_secret: Option<String>,
    /// A federated identity credential the app trusts (workload identity);
    /// `None`: none is registered.
    pub federated: Option<FederatedCredential>,
    /// Resources the tenant knows: a scope must be one of these followed by
    /// `/.default`, and a token's `aud` is the resource.
    pub resources: Vec<String>,
}

impl Default for EntraConfig {
    /// The default principal, a fixed client id, no secret, no federated
    /// credential, and Azure Redis (`https://redis.azure.com`) as the one resource.
    fn default() -> Self {
        EntraConfig {
            principal: Principal::default(),
            client_id: "00000000-0000-4000-8000-0000000a9901".into(),
            client_secret: None,
            federated: None,
            resources: vec![REDIS_AUDIENCE.into()],
        }
    }
}

impl std::fmt::Debug for EntraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraConfig")
            .field("principal", &self.principal)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("federated", &self.federated)
            .field("resources", &self.resources)
            .finish()
    }
}

/// A federated identity credential: which issuer's tokens, for which
/// subject, the app accepts as its assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// The token issuer (a Kubernetes cluster's OIDC issuer URL).
    pub issuer: String,
    /// The subject (`system:serviceaccount:<namespace>:<name>`).
    pub subject: String,
}

impl Default for FederatedCredential {
    fn default() -> Self {
        FederatedCredential {
            issuer: "https://oidc.devhost.invalid/00000000-0000-4000-8000-0000000c1a57/".into(),
            subject: "system:serviceaccount:default:function-app".into(),
        }
    }
}

/// The claims of a federated (service account) token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedClaims {
    /// Audiences (Kubernetes writes an array).
    pub aud: Vec<String>,
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Which client credential a request carried (never its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// `client_secret`.
    Secret,
    /// `client_assertion`.
    Assertion,
    /// Neither.
    Neither,
}

/// One token request as the endpoint saw it, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraRequest {
    /// The `{tenant}` of the path.
    pub tenant: String,
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// The credential it carried.
    pub presented: Presented,
    /// The answer's status.
    pub status: u16,
    /// The `AADSTS` code of an error answer.
    pub error_code: Option<u32>,
}

/// State shared by the route and the owner.
pub(super) struct Shared {
    pub(super) cfg: EntraConfig,
    pub(super) issuer: Arc<Issuer>,
    /// Signs federated tokens (standing in for the cluster issuer's keys).
    pub(super) assertion_key: Vec<u8>,
    pub(super) authority: String,
    pub(super) log: Mutex<Vec<EntraRequest>>,
}

/// A running Entra ID token endpoint on 127.0.0.1 over HTTPS; stops on drop.
pub struct EntraEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for EntraEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EntraEndpoint {
    /// Serves `POST /{tenant}/oauth2/v2.0/token` over TLS with `pki`'s server
    /// certificate, at a free port.
    pub async fn start(pki: &Pki, cfg: EntraConfig) -> anyhow::Result<EntraEndpoint> {
        let (listener, accept) = super::https::bind(pki).await?;
        let addr = axum::serve::Listener::local_addr(&listener)?;
        let issuer = Issuer::new(cfg.principal.clone());
        let shared = Arc::new(Shared {
            cfg,
            issuer: issuer.clone(),
            assertion_key: crate::util::random_bytes(32),
            authority: format!("https://{addr}"),
            log: Mutex::new(Vec::new()),
        });
        let app = token::router(shared.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(EntraEndpoint {
            addr,
            shared,
            tasks: vec![accept, serve, issuer.spawn_sweeper()],
        })
    }

    /// The value for `AZURE_AUTHORITY_HOST`: `https://127.0.0.1:<port>`.
    pub fn authority_host(&self) -> String {
        self.shared.authority.clone()
    }

    /// Every token request so far, in order of arrival.
    pub fn requests(&self) -> Vec<EntraRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Tokens handed out.
    pub fn tokens_minted(&self) -> usize {
        self.shared.issuer.minted()
    }

    /// The most recent token handed out.
    pub fn last_token(&self) -> Option<String> {
        self.shared.issuer.last_token()
    }

    /// The claims of a token this endpoint handed out (signature checked,
    /// any audience, even expired); `None` for any other string.
    pub fn claims(&self, token: &str) -> Option<Claims> {
        self.shared.issuer.claims(token)
    }

    /// Changes the lifetime of tokens handed out from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.shared.issuer.set_lifetime(lifetime);
    }

    /// A federated token the registered [`FederatedCredential`] accepts,
    /// valid for an hour: what a Kubernetes cluster projects into
    /// `AZURE_FEDERATED_TOKEN_FILE`. Panics without a federated credential.
    pub fn federated_token(&self) -> String {
        let fic = self
            .shared
            .cfg
            .federated
            .as_ref()
            .expect("EntraConfig.federated is set");
        let now = unix_now();
        self.sign_federated(&FederatedClaims {
            aud: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
            iss: fic.issuer.clone(),
            sub: fic.subject.clone(),
            iat: now,
            nbf: now,
            exp: now + 3600,
        })
    }

    /// Signs any federated claims with the issuer key this endpoint trusts
    /// (for assertions that must be refused: another subject, expired, …).
    pub fn sign_federated(&self, claims: &FederatedClaims) -> String {
        mint_jwt(&self.shared.assertion_key, claims)
    }
}

impl Drop for EntraEndpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
