//! Which credential fetches tokens, chosen as docs/contract.md says.

use super::{bad, SettingsError};
use crate::secret::Secret;
use std::path::PathBuf;

/// The credential that fetches tokens, chosen as docs/contract.md says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChoice {
    /// Managed identity (App Service endpoint or IMDS); `client_id` picks a user-assigned one.
    ManagedIdentity {
        /// `Redis__clientId`.
        client_id: Option<String>,
    },
    /// A service principal with a client secret.
    ClientSecret {
        /// `Redis__tenantId`.
        tenant_id: String,
        /// `Redis__clientId`.
        client_id: String,
        /// `Redis__clientSecret`.
        secret: Secret,
        /// Where it signs in.
        authority: Authority,
    },
    /// Workload identity (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity {
        /// `Redis__clientId`, else `AZURE_CLIENT_ID`.
        client_id: Option<String>,
        /// `Redis__tenantId`, else `AZURE_TENANT_ID`.
        tenant_id: Option<String>,
        /// Where it signs in.
        authority: Authority,
    },
    /// Azure CLI, then Azure Developer CLI (a laptop after `az login`).
    DeveloperTools,
}

/// Where a client secret or workload identity signs in: the Entra ID token
/// endpoint `{host}/{tenant}/oauth2/v2.0/token` over HTTPS, and the CAs that
/// connection trusts. (Managed identity asks a local endpoint over plain
/// HTTP, the developer tools run `az`/`azd`: neither uses this.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authority {
    /// `AZURE_AUTHORITY_HOST`, an `https://` URL: the Entra ID host of a cloud
    /// other than the public one (`https://login.microsoftonline.us`,
    /// `https://login.chinacloudapi.cn`). `None`: `https://login.microsoftonline.com`.
    pub host: Option<String>,
    /// `SSL_CERT_FILE`: extra trusted CAs (PEM), added to the system roots as
    /// for Redis (a private CA, a TLS-inspecting proxy's CA).
    pub extra_ca_file: Option<PathBuf>,
}

/// Picks the credential: `Redis__credential` if set; else a client secret,
/// workload identity, managed identity when in Azure, developer tools.
pub(crate) fn choose_credential(get: &impl Fn(&str) -> Option<String>) -> Result<CredentialChoice, SettingsError> {
    let client_id = get("Redis__clientId");
    let tenant_id = get("Redis__tenantId");
    let secret = get("Redis__clientSecret");
    let forced = get("Redis__credential").map(|v| v.to_ascii_lowercase());
    let in_azure = get("IDENTITY_ENDPOINT").is_some() && get("IDENTITY_HEADER").is_some();
    let kind = match forced.as_deref() {
        Some(k @ ("managedidentity" | "clientsecret" | "workloadidentity" | "developertools")) => k,
        Some(_) => {
            return Err(bad(
                "Redis__credential",
                "must be one of managedidentity, clientsecret, workloadidentity, developertools",
            ))
        }
        None if secret.is_some() => "clientsecret",
        None if get("AZURE_FEDERATED_TOKEN_FILE").is_some() => "workloadidentity",
        None if in_azure || client_id.is_some() => "managedidentity",
        None => "developertools",
    };
    Ok(match kind {
        "clientsecret" => CredentialChoice::ClientSecret {
            tenant_id: tenant_id.ok_or_else(|| bad("Redis__tenantId", "is required with a client secret"))?,
            client_id: client_id.ok_or_else(|| bad("Redis__clientId", "is required with a client secret"))?,
            secret: Secret::new(
                secret.ok_or_else(|| bad("Redis__clientSecret", "is required for the clientsecret credential"))?,
            ),
            authority: authority(get)?,
        },
        "workloadidentity" => {
            if get("AZURE_FEDERATED_TOKEN_FILE").is_none() {
                return Err(bad(
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "is required for the workloadidentity credential",
                ));
            }
            CredentialChoice::WorkloadIdentity {
                client_id,
                tenant_id,
                authority: authority(get)?,
            }
        }
        "managedidentity" => CredentialChoice::ManagedIdentity { client_id },
        _ => CredentialChoice::DeveloperTools,
    })
}

/// Reads [`Authority`]. `azure_identity` would refuse a host that is not
/// `https://` only when it builds the credential; checked here, the process
/// stops at start with one line naming the setting.
fn authority(get: &impl Fn(&str) -> Option<String>) -> Result<Authority, SettingsError> {
    let host = match get("AZURE_AUTHORITY_HOST") {
        None => None,
        Some(host) => match azure_core::http::Url::parse(&host) {
            Ok(url) if url.scheme() == "https" && url.host_str().is_some() => Some(host),
            _ => {
                return Err(bad(
                    "AZURE_AUTHORITY_HOST",
                    "must be an https:// URL, e.g. https://login.microsoftonline.us",
                ))
            }
        },
    };
    Ok(Authority {
        host,
        extra_ca_file: get("SSL_CERT_FILE").map(PathBuf::from),
    })
}
