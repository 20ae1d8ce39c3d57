//! Builds the `azure_identity` credential that [`CredentialChoice`] names.
//!
//! azure_identity 1.0 has no `DefaultAzureCredential`: the choice of
//! credential is made in [`crate::settings::choose_credential`]; this module
//! only constructs it. Every credential gets `RetryOptions::none()`: the
//! crate's default retry spends about 82 s on a failing endpoint, far past
//! any invocation's budget; the token manager puts its own deadline around
//! each fetch and retries on later invocations with a backoff.
//!
//! The two that call Entra ID over HTTPS (client secret, workload identity)
//! also get the authority host of the configured cloud and, with
//! `SSL_CERT_FILE`, an HTTP client that trusts that file beside the system
//! roots (see [`crate::tls`]).
//!
//! Each gets its HTTP client from here rather than azure_core's default,
//! which reads and parses the platform's roots when it is built: a few
//! milliseconds of every cold start before the handler could listen (145
//! certificates, one file each, on a Debian image without `SSL_CERT_FILE`),
//! even for a managed identity's local endpoint, which is plain HTTP. Ours
//! is the handler's own client ([`crate::http_client`]: rustls, no
//! redirects, azure_core's connect and read timeouts) trusting the same
//! roots, loaded on its first TLS handshake, if it makes one
//! ([`crate::tls::lazy_https_client_config`]).

use crate::settings::{Authority, CredentialChoice};
use crate::token::{credential_error, FetchedToken, TokenError, TokenFuture, TokenSource};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use std::sync::Arc;
use std::time::Duration;

/// A [`TokenSource`] backed by an `azure_identity` credential and one scope.
pub(crate) struct AzureTokenSource {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl AzureTokenSource {
    /// Wraps any credential.
    pub(crate) fn new(credential: Arc<dyn TokenCredential>, scope: String) -> Self {
        Self { credential, scope }
    }

    /// Builds the credential `choice` names.
    pub(crate) fn from_choice(choice: &CredentialChoice, scope: String) -> Result<Self, TokenError> {
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

/// No retry, and the HTTP client trusting `roots` ([`http_transport`]).
fn options(roots: impl Fn() -> rustls::RootCertStore + Send + Sync + 'static) -> azure_core::Result<ClientOptions> {
    Ok(ClientOptions {
        retry: RetryOptions::none(),
        transport: Some(http_transport(roots)?),
        ..Default::default()
    })
}

/// The roots azure_core's own client trusts (through rustls's platform
/// verifier): `rustls-native-certs`'s, which are those of `SSL_CERT_FILE`
/// and `SSL_CERT_DIR` when set, else the platform's.
fn platform_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// Options for a credential that calls the Entra ID token endpoint: no
/// retry, the authority host, and the HTTPS client trusting the system roots
/// and `SSL_CERT_FILE` when it is set (read now: a file that cannot be read
/// stops start-up), else the platform's roots.
fn entra_options(authority: &Authority) -> azure_core::Result<ClientOptions> {
    let config_error = |message: String| azure_core::Error::with_message(azure_core::error::ErrorKind::Other, message);
    let mut options = match crate::tls::extra_roots(authority.extra_ca_file.as_deref()).map_err(config_error)? {
        Some(extra) => options(move || crate::tls::https_roots(&extra))?,
        None => options(platform_roots)?,
    };
    if let Some(host) = &authority.host {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = host.clone();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
    }
    Ok(options)
}

/// The handler's HTTP client ([`crate::http_client`]) with azure_core's own
/// client's timeouts (20 s to connect, 60 s for the answer), trusting the
/// roots `roots` gives, loaded on its first TLS handshake. Like azure_core's,
/// it follows no redirects (Entra ID does not redirect token requests).
fn http_transport(roots: impl Fn() -> rustls::RootCertStore + Send + Sync + 'static) -> azure_core::Result<Transport> {
    let client = crate::http_client::Client::new(crate::tls::lazy_https_client_config(roots), Duration::from_secs(20));
    let transport = crate::http_client::TokenTransport::new(client, Duration::from_secs(60));
    Ok(Transport::new(Arc::new(transport)))
}

fn build(choice: &CredentialChoice) -> azure_core::Result<Arc<dyn TokenCredential>> {
    Ok(match choice {
        CredentialChoice::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                // Its endpoint is local plain HTTP; were it HTTPS, it would
                // trust what azure_core's own client trusts.
                client_options: options(platform_roots)?,
            }))?
        }
        CredentialChoice::ClientSecret {
            tenant_id,
            client_id,
            secret,
            authority,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            AzureSecret::new(secret.expose().to_owned()),
            Some(ClientSecretCredentialOptions {
                client_options: entra_options(authority)?,
            }),
        )?,
        CredentialChoice::WorkloadIdentity {
            client_id,
            tenant_id,
            authority,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: entra_options(authority)?,
            },
            client_id: client_id.clone(),
            tenant_id: tenant_id.clone(),
            ..Default::default()
        }))?,
        CredentialChoice::DeveloperTools => DeveloperToolsCredential::new(None)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice builds a credential without network access.
    #[test]
    fn every_choice_builds() {
        let pki = devhost::pki::Pki::generate().unwrap();
        let choices = [
            CredentialChoice::ManagedIdentity { client_id: None },
            CredentialChoice::ManagedIdentity {
                client_id: Some("00000000-0000-0000-0000-000000000001".into()),
            },
            CredentialChoice::ClientSecret {
                tenant_id: "00000000-0000-0000-0000-000000000002".into(),
                client_id: "app".into(),
                secret: crate::secret::Secret::new("s"),
                authority: Authority::default(),
            },
            CredentialChoice::ClientSecret {
                tenant_id: "00000000-0000-0000-0000-000000000002".into(),
                client_id: "app".into(),
                secret: crate::secret::Secret::new("s"),
                authority: Authority {
                    host: Some("https://login.microsoftonline.us".into()),
                    extra_ca_file: Some(pki.ca_path.clone()),
                },
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

    /// An `SSL_CERT_FILE` that cannot be read stops the credential from
    /// being built, naming the setting, rather than silently trusting less.
    #[test]
    fn unreadable_ca_file_is_an_error() {
        let choice = CredentialChoice::ClientSecret {
            tenant_id: "00000000-0000-0000-0000-000000000002".into(),
            client_id: "app".into(),
            secret: crate::secret::Secret::new("s"),
            authority: Authority {
                host: None,
                extra_ca_file: Some("/nonexistent/ca.pem".into()),
            },
        };
        let err = AzureTokenSource::from_choice(&choice, "https://redis.azure.com/.default".into())
            .err()
            .expect("an error");
        assert!(err.to_string().contains("SSL_CERT_FILE"), "{err}");
    }

    /// The identity HTTP client trusts the CA the `SSL_CERT_FILE` setting
    /// names (not in this process's environment, so only the handler's own
    /// client can know it), and verifies: an endpoint whose CA is not
    /// trusted is refused before it is reached.
    #[tokio::test]
    async fn identity_client_trusts_the_configured_ca_and_verifies() {
        use devhost::entra::{EntraConfig, EntraEndpoint};
        crate::tls::install_crypto_provider();
        let pki = devhost::pki::Pki::generate().unwrap();
        let cfg = EntraConfig {
            client_secret: Some("s".into()),
            ..EntraConfig::default()
        };
        let idp = EntraEndpoint::start(&pki, cfg.clone()).await.expect("Entra stand-in");
        let choice = |ca: &std::path::Path| CredentialChoice::ClientSecret {
            tenant_id: cfg.principal.tenant_id.clone(),
            client_id: cfg.client_id.clone(),
            secret: crate::secret::Secret::new("s"),
            authority: Authority {
                host: Some(idp.authority_host()),
                extra_ca_file: Some(ca.to_owned()),
            },
        };
        let scope = "https://redis.azure.com/.default";
        let trusted = AzureTokenSource::from_choice(&choice(&pki.ca_path), scope.into()).unwrap();
        let token = trusted
            .fetch()
            .await
            .expect("a token over TLS trusted through the setting");
        assert!(idp.claims(token.secret.expose()).is_some());

        let other = devhost::pki::Pki::generate().unwrap();
        let untrusted = AzureTokenSource::from_choice(&choice(&other.ca_path), scope.into()).unwrap();
        let err = untrusted
            .fetch()
            .await
            .expect_err("an endpoint signed by an unknown CA is refused");
        assert_eq!(
            idp.requests().len(),
            1,
            "the refused handshake never reached the endpoint: {err}"
        );
    }

    /// URLs (an identity endpoint, an authority host) take ASCII host
    /// names, punycode labels among them, and refuse others: `url` has no
    /// IDNA back end here (`idna_adapter` 1.0, Cargo.toml).
    #[test]
    fn host_names_are_ascii() {
        use azure_core::http::Url;
        for ascii in [
            "https://login.microsoftonline.com/tenant",
            "https://xn--bcher-kva.example/tenant",
            "http://127.0.0.1:41000/msi/token",
        ] {
            assert!(Url::parse(ascii).is_ok(), "{ascii}");
        }
        assert!(Url::parse("https://bücher.example/tenant").is_err());
    }
}
