//! Microsoft Entra ID as the handler's other sign-ins reach it: the OAuth2
//! v2.0 token endpoint (client secret, workload identity) and the developer
//! tools (`az`, `azd`), each minting tokens the Redis stand-in accepts.
//!
//! Follows docs/azure.md "azure_identity 1.0.0" and that crate's source, which
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
//! being one when it expires (docs/azure.md "Entra ID and Azure Redis").
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

pub use cli::{CliCall, CliConfig, DeveloperCli};
pub use endpoint::EntraEndpoint;
pub use model::{
    EntraConfig, EntraRequest, FederatedClaims, FederatedCredential, Presented, Principal, TOKEN_EXCHANGE_AUDIENCE,
};
pub use tools::Tool;

#[cfg(test)]
mod tests {
    //! The token endpoint against the real `azure_identity` 1.0.0 credentials,
    //! and the refusals Entra ID gives, over HTTPS.

    use super::*;
    use crate::identity::REDIS_AUDIENCE;
    use crate::pki::Pki;
    use azure_core::credentials::{Secret, TokenCredential};
    use azure_core::http::{ClientOptions, RetryOptions, Transport};
    use azure_identity::{
        ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
        WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
    };
    use serde_json::Value;
    use std::sync::Arc;

    const SCOPE: &str = "https://redis.azure.com/.default";

    /// Client options whose HTTPS trusts the test CA alone, without retries.
    fn trusting(pki: &Pki) -> ClientOptions {
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
        ClientOptions {
            retry: RetryOptions::none(),
            transport: Some(Transport::new(Arc::new(client))),
            ..Default::default()
        }
    }

    fn with_authority(mut options: ClientOptions, idp: &EntraEndpoint) -> ClientOptions {
        let mut cloud = azure_core::cloud::CustomConfiguration::default();
        cloud.authority_host = idp.authority_host();
        options.cloud = Some(Arc::new(cloud.into()));
        options
    }

    fn app_with_secret() -> EntraConfig {
        EntraConfig {
            client_secret: Some("the-app-secret".into()),
            federated: Some(FederatedCredential::default()),
            ..EntraConfig::default()
        }
    }

    /// `ClientSecretCredential` gets a token for the Redis resource: `aud` is
    /// the resource, the lifetime is `expires_in`, and the request is logged
    /// without its secret.
    #[tokio::test]
    async fn client_secret_credential_gets_a_token() {
        let pki = Pki::generate().unwrap();
        let idp = EntraEndpoint::start(&pki, app_with_secret()).await.unwrap();
        let cfg = app_with_secret();
        let cred = ClientSecretCredential::new(
            &cfg.principal.tenant_id,
            cfg.client_id.clone(),
            Secret::new("the-app-secret"),
            Some(ClientSecretCredentialOptions {
                client_options: with_authority(trusting(&pki), &idp),
            }),
        )
        .unwrap();
        let token = cred.get_token(&[SCOPE], None).await.unwrap();
        let claims = idp.claims(token.token.secret()).expect("minted here");
        assert_eq!(claims.aud, REDIS_AUDIENCE);
        assert_eq!(claims.oid, cfg.principal.oid);
        let skew = token.expires_on.unix_timestamp() - claims.exp;
        assert!((0..=1).contains(&skew), "expires_in gives exp: {skew}");
        let requests = idp.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(r.client_id.as_deref(), Some(cfg.client_id.as_str()));
        assert_eq!(r.scope.as_deref(), Some(SCOPE));
        assert_eq!((r.presented, r.status, r.error_code), (Presented::Secret, 200, None));
        assert!(!format!("{requests:?}{cfg:?}").contains("the-app-secret"));
    }

    /// `WorkloadIdentityCredential` exchanges the federated token from its file
    /// for an access token.
    #[tokio::test]
    async fn workload_identity_credential_gets_a_token() {
        let pki = Pki::generate().unwrap();
        let idp = EntraEndpoint::start(&pki, app_with_secret()).await.unwrap();
        let cfg = app_with_secret();
        let file = pki.dir.join("federated-token");
        std::fs::write(&file, idp.federated_token()).unwrap();
        let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: with_authority(trusting(&pki), &idp),
            },
            client_id: Some(cfg.client_id.clone()),
            tenant_id: Some(cfg.principal.tenant_id.clone()),
            token_file_path: Some(file),
        }))
        .unwrap();
        let token = cred.get_token(&[SCOPE], None).await.unwrap();
        assert_eq!(idp.claims(token.token.secret()).unwrap().aud, REDIS_AUDIENCE);
        assert_eq!(idp.requests()[0].presented, Presented::Assertion);
    }

    /// Posts a form to the token endpoint; the status and the AADSTS code.
    async fn post(pki: &Pki, idp: &EntraEndpoint, tenant: &str, form: &[(&str, &str)]) -> (u16, Option<u64>) {
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let rsp = client
            .post(format!("{}/{tenant}/oauth2/v2.0/token", idp.authority_host()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = rsp.status().as_u16();
        let body: Value = rsp.json().await.unwrap();
        if status != 200 {
            let code = body["error_codes"][0].as_u64();
            let description = body["error_description"].as_str().unwrap();
            assert!(description.starts_with(&format!("AADSTS{}: ", code.unwrap())), "{body}");
            assert!(
                body["error"].is_string() && body["correlation_id"].is_string(),
                "{body}"
            );
            return (status, code);
        }
        assert_eq!(body["token_type"], "Bearer", "{body}");
        assert!(body["expires_in"].as_i64().unwrap() > 0, "{body}");
        (status, None)
    }

    /// Each thing Entra ID checks is refused with its own status and AADSTS
    /// code: tenant, grant, client, secret, assertion (signature, issuer,
    /// subject, audience, expiry), scope and resource.
    #[tokio::test]
    async fn every_check_refuses_with_entra_codes() {
        let pki = Pki::generate().unwrap();
        let idp = EntraEndpoint::start(&pki, app_with_secret()).await.unwrap();
        let cfg = app_with_secret();
        let (t, id) = (cfg.principal.tenant_id.as_str(), cfg.client_id.as_str());
        let secret = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("scope", SCOPE),
        ];
        let with = |extra: &[(&'static str, &'static str)]| [&secret[..], extra].concat();
        assert_eq!(
            post(&pki, &idp, t, &with(&[("client_secret", "the-app-secret")])).await,
            (200, None)
        );
        assert_eq!(
            post(
                &pki,
                &idp,
                "other-tenant",
                &with(&[("client_secret", "the-app-secret")])
            )
            .await,
            (400, Some(90002))
        );
        assert_eq!(
            post(&pki, &idp, t, &with(&[("client_secret", "wrong")])).await,
            (401, Some(7000215))
        );
        assert_eq!(post(&pki, &idp, t, &secret).await, (401, Some(7000218)));
        let password = [
            ("grant_type", "password"),
            ("client_id", id),
            ("client_secret", "the-app-secret"),
        ];
        assert_eq!(post(&pki, &idp, t, &password).await, (400, Some(70003)));
        let stranger = [
            ("grant_type", "client_credentials"),
            ("client_id", "someone-else"),
            ("scope", SCOPE),
        ];
        assert_eq!(post(&pki, &idp, t, &stranger).await, (400, Some(700016)));
        for (scope, code) in [
            ("https://redis.azure.com/user_impersonation", 1002012),
            ("https://vault.azure.net/.default", 500011),
        ] {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("scope", scope),
                ("client_secret", "the-app-secret"),
            ];
            assert_eq!(post(&pki, &idp, t, &form).await, (400, Some(code)), "{scope}");
        }

        let fic = FederatedCredential::default();
        let now = crate::util::unix_now();
        let good = FederatedClaims {
            aud: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
            iss: fic.issuer.clone(),
            sub: fic.subject.clone(),
            iat: now,
            nbf: now,
            exp: now + 600,
        };
        let forged = idp.federated_token().replace('.', ".x");
        let cases = [
            (idp.federated_token(), 200, None),
            (forged, 401, Some(700027)),
            (
                idp.sign_federated(&FederatedClaims {
                    iss: "https://elsewhere/".into(),
                    ..good.clone()
                }),
                401,
                Some(700211),
            ),
            (
                idp.sign_federated(&FederatedClaims {
                    sub: "system:serviceaccount:x:y".into(),
                    ..good.clone()
                }),
                401,
                Some(700213),
            ),
            (
                idp.sign_federated(&FederatedClaims {
                    aud: vec!["api://other".into()],
                    ..good.clone()
                }),
                401,
                Some(700212),
            ),
            (
                idp.sign_federated(&FederatedClaims {
                    exp: now - 1,
                    ..good.clone()
                }),
                401,
                Some(700024),
            ),
        ];
        for (assertion, status, code) in cases {
            let form = with(&[(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )]);
            let form = [&form[..], &[("client_assertion", assertion.as_str())]].concat();
            assert_eq!(post(&pki, &idp, t, &form).await, (status, code), "{code:?}");
        }
        assert!(idp
            .requests()
            .iter()
            .all(|r| r.error_code.is_some() == (r.status != 200)));
    }
}
