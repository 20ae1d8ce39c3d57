//! Who the Entra ID stand-ins sign in, what the token endpoint is
//! configured with, what it records of
//! each request, and the state its route and its owner share.

use crate::identity::{Issuer, REDIS_AUDIENCE};
use crate::redis_cluster::AclTarget;
use crate::redis_server::RedisAdmin;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

impl Principal {
    /// An issuer of this principal's tokens.
    pub(crate) fn issuer(&self) -> Arc<Issuer> {
        Issuer::new(
            self.oid.clone(),
            self.tenant_id.clone(),
            self.token_lifetime,
            self.redis.clone().map(AclTarget::Server),
        )
    }
}

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

/// What the token route and the endpoint's owner share.
pub(super) struct EntraState {
    pub(super) cfg: EntraConfig,
    pub(super) issuer: Arc<Issuer>,
    /// Signs federated tokens (standing in for the cluster issuer's keys).
    pub(super) assertion_key: Vec<u8>,
    pub(super) authority: String,
    pub(super) log: Mutex<Vec<EntraRequest>>,
}
