//! Microsoft Entra ID as the handler's other sign-ins reach it: the OAuth2
//! v2.0 token endpoint (client secret, workload identity) and the developer
//! tools (`az`, `azd`), each minting tokens the Redis stand-in accepts.
//!
//! Follows AZURE-FACTS "azure_identity 1.0.0" and that crate's source, which
//! fixes what can be pointed at a stand-in:
//!
//! - `ClientSecretCredential` and `WorkloadIdentityCredential` post to
//!   `{authority host}/{tenant}/oauth2/v2.0/token`; the authority host comes
//!   from the client options' cloud or `AZURE_AUTHORITY_HOST`, and must be
//!   `https://`. [`EntraEndpoint`] serves that over TLS with the
//!   [`crate::pki::Pki`] certificate, so the caller must trust the test CA.
//! - `AzureCliCredential` and `AzureDeveloperCliCredential` run `az` and
//!   `azd` through `/bin/sh` and `PATH`. [`DeveloperCli`] writes stand-ins
//!   for both.
//! - IMDS (`http://169.254.169.254`) is a constant in the crate and cannot
//!   be redirected; the App Service endpoint is [`crate::identity`].
//!
//! Tokens are signed JWTs like the managed-identity endpoint's, with `aud`
//! the requested resource and `oid` the Redis user; with a Redis attached,
//! each becomes that user's password before it is handed out and stops
//! being one when it expires (AZURE-FACTS "Entra ID and Azure Redis").
//!
//! Layout: `endpoint.rs` (the endpoint's life), `model.rs` (its
//! configuration and request record), `token.rs` (its checks and answers),
//! `https.rs` (TLS for axum), `cli.rs` (the scripts and their broker),
//! `tools.rs` (what `az` and `azd` answer); tokens are minted by
//! [`crate::identity`]'s issuer, as the managed-identity endpoint's are.

mod cli;
mod endpoint;
mod https;
mod model;
mod token;
mod tools;

#[cfg(test)]
mod cli_tests;
#[cfg(test)]
mod tests;

pub use cli::{CliCall, CliConfig, DeveloperCli};
pub use endpoint::EntraEndpoint;
pub use model::{
    EntraConfig, EntraRequest, FederatedClaims, FederatedCredential, Presented, Principal, TOKEN_EXCHANGE_AUDIENCE,
};
pub use tools::Tool;
