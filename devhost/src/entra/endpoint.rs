//! The Microsoft Entra ID token endpoint, over HTTPS on 127.0.0.1, as
//! `azure_identity` 1.0.0's `ClientSecretCredential` and
//! `WorkloadIdentityCredential` call it when the authority host
//! (`AZURE_AUTHORITY_HOST`, or the client options' cloud) points here.
//!
//! The checks and answers are in `token.rs`, the configuration and the
//! request record in `model.rs`; this file holds the server's life and what
//! a test reads back.

use super::model::{EntraConfig, EntraRequest, EntraState, FederatedClaims, TOKEN_EXCHANGE_AUDIENCE};
use super::token;
use crate::identity::{mint_jwt, Claims};
use crate::pki::Pki;
use crate::util::unix_now;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A running Entra ID token endpoint on 127.0.0.1 over HTTPS; stops on drop.
pub struct EntraEndpoint {
    addr: SocketAddr,
    shared: Arc<EntraState>,
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
        let issuer = cfg.principal.issuer();
        let shared = Arc::new(EntraState {
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

    /// A federated token the registered [`FederatedCredential`](super::FederatedCredential) accepts,
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
