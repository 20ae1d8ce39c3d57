//! Builds the `azure_identity` credential that [`CredentialChoice`] names.
//!
//! azure_identity 1.0 has no `DefaultAzureCredential`: the choice of
//! credential is made in [`crate::settings::choose_credential`]; this module
//! only constructs it. Every credential gets `RetryOptions::none()`: the
//! crate's default retry spends about 82 s on a failing endpoint, far past
//! any invocation's budget; the token manager puts its own deadline around
//! each fetch and retries on later invocations with a backoff.

use crate::settings::CredentialChoice;
use crate::token::{credential_error, FetchedToken, TokenError, TokenFuture, TokenSource};
use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use std::sync::Arc;

/// A [`TokenSource`] backed by an `azure_identity` credential and one scope.
pub struct AzureTokenSource {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl AzureTokenSource {
    /// Wraps any credential.
    pub fn new(credential: Arc<dyn TokenCredential>, scope: String) -> Self {
        Self { credential, scope }
    }

    /// Builds the credential `choice` names.
    pub fn from_choice(choice: &CredentialChoice, scope: String) -> Result<Self, TokenError> {
        let credential = build(choice).map_err(|e| credential_error(&e))?;
        Ok(Self::new(credential, scope))
    }
}

impl TokenSource for AzureTokenSource {
    fn fetch(&self) -> TokenFuture {
        let credential = self.credential.clone();
        let scope = self.scope.clone();
        Box::pin(async move {
            let token = credential
                .get_token(&[scope.as_str()], None)
                .await
                .map_err(|e| credential_error(&e))?;
            Ok(FetchedToken {
                secret: crate::secret::Secret::new(token.token.secret()),
                expires_on: token.expires_on,
            })
        })
    }
}

fn no_retry() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

fn build(choice: &CredentialChoice) -> azure_core::Result<Arc<dyn TokenCredential>> {
    Ok(match choice {
        CredentialChoice::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: no_retry(),
            }))?
        }
        CredentialChoice::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            AzureSecret::new(secret.expose().to_owned()),
            Some(ClientSecretCredentialOptions {
                client_options: no_retry(),
            }),
        )?,
        CredentialChoice::WorkloadIdentity { client_id, tenant_id } => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: no_retry(),
                },
                client_id: client_id.clone(),
                tenant_id: tenant_id.clone(),
                ..Default::default()
            }))?
        }
        CredentialChoice::DeveloperTools => DeveloperToolsCredential::new(None)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice builds a credential without network access.
    #[test]
    fn every_choice_builds() {
        let choices = [
            CredentialChoice::ManagedIdentity { client_id: None },
            CredentialChoice::ManagedIdentity {
                client_id: Some("00000000-0000-0000-0000-000000000001".into()),
            },
            CredentialChoice::ClientSecret {
                tenant_id: "00000000-0000-0000-0000-000000000002".into(),
                client_id: "app".into(),
                secret: crate::secret::Secret::new("s"),
            },
            CredentialChoice::DeveloperTools,
        ];
        for choice in choices {
            assert!(
                AzureTokenSource::from_choice(&choice, "https://redis.azure.com/.default".into()).is_ok(),
                "{choice:?}"
            );
        }
    }
}
