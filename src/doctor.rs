//! `handler doctor`: a first-run check of the connection the handler would
//! make, step by step, without serving anything.
//!
//! It reads the same settings as the handler, then resolves the credential,
//! gets one token and reads its user name, reaches the cache over TCP,
//! checks its TLS certificate against the configured host name, connects and
//! authenticates as the handler does, runs PING, and finds out whether the
//! cache is a cluster (then reaches and PINGs every master). Each step prints its
//! result and timing; the first that fails prints one sentence saying which
//! part is wrong (sign-in, access policy, firewall, certificate) and what to
//! do, and the check stops there. `devhost doctor` runs it with the app's
//! local settings; in Azure it can be run from the app's console, where it
//! gets the app settings.

use crate::cache::{open_connection, Auth, Cache, CacheError, CacheOptions, DoctorConnection, Target};
use crate::credential::AzureTokenSource;
use crate::secret::Secret;
use crate::settings::{AuthSettings, ClusterMode, CredentialChoice, EntraSettings, Settings};
use crate::token::{oid_from_jwt, FetchedToken, TokenError, TokenSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// One step's outcome: what was found, or one sentence on what is wrong.
type Step = Result<Found<()>, String>;

/// Runs every check in order, printing one line per step to `out`; stops at
/// the first failure. Returns whether all passed.
pub(crate) async fn run(settings: &Settings, out: &mut impl Write) -> bool {
    checks(settings, &mut Checklist { out }).await.is_some()
}

/// The steps, in order; `None` at the first that fails.
async fn checks(settings: &Settings, list: &mut Checklist<'_, impl Write>) -> Option<()> {
    let redis = &settings.redis;
    let target = list.step("settings", async { settings_step(settings) }).await?;
    let (user, password) = match &redis.auth {
        AuthSettings::Entra(entra) => {
            let (user, token) = list
                .step("token", token_step(entra, settings.deadlines.token_fetch))
                .await?;
            (Some(user), token)
        }
        AuthSettings::AccessKey { user, password } => (user.clone(), password.clone()),
    };
    list.step("network", tcp_step(&target)).await?;
    if target.tls {
        list.step("certificate", tls_step(&target)).await?;
    }
    let mut conn = list
        .step(
            "authentication",
            auth_step(&target, user.as_deref(), &password, &redis.auth),
        )
        .await?;
    list.step("ping", ping_step(&target, &mut conn)).await?;
    list.step("cluster", cluster_step(&target, redis.cluster_mode, user, password))
        .await
        .map(|_| ())
}

/// Where the steps print: each one timed, on one line.
struct Checklist<'o, W> {
    out: &'o mut W,
}

impl<W: Write> Checklist<'_, W> {
    /// Runs one step and prints its line: what it found, or the sentence
    /// on what is wrong. Hands on the step's value; `None` when it failed.
    async fn step<T>(&mut self, name: &str, step: impl Future<Output = Result<Found<T>, String>>) -> Option<T> {
        let started = Instant::now();
        let result = step.await;
        let line = result.as_ref().map(|found| found.line.clone()).map_err(Clone::clone);
        report(self.out, name, line, started.elapsed());
        result.ok().map(|found| found.value)
    }
}

/// What a step that passed found: a value for the next steps, and its line.
struct Found<T> {
    value: T,
    line: String,
}

impl Found<()> {
    /// A step that only reports.
    fn line(line: String) -> Found<()> {
        Found { value: (), line }
    }
}

/// Where the handler would connect, and how it would sign in.
fn settings_step(settings: &Settings) -> Result<Found<Target>, String> {
    let redis = &settings.redis;
    let target = Target::from_settings(redis, settings.deadlines)?;
    let transport = if redis.tls { "TLS" } else { "no TLS" };
    let how = match &redis.auth {
        AuthSettings::Entra(entra) => format!("Microsoft Entra ID, {}", describe(&entra.credential)),
        AuthSettings::AccessKey { .. } => "access key (the Redis connection string)".to_owned(),
    };
    let line = format!(
        "cache {} ({transport}), {how}",
        crate::settings::endpoint(&redis.host, redis.port)
    );
    Ok(Found { value: target, line })
}

/// Connects and authenticates as the handler does.
async fn auth_step(
    target: &Target,
    user: Option<&str>,
    password: &Secret,
    auth: &AuthSettings,
) -> Result<Found<DoctorConnection>, String> {
    let who = user.unwrap_or("default");
    match open_connection(target, user, password.expose(), target.deadlines.connect).await {
        Ok(conn) => Ok(Found {
            value: conn,
            line: format!("AUTH as {who} accepted"),
        }),
        Err(e) => Err(auth_sentence(&e, who, auth)),
    }
}

/// PING on the connection just made.
async fn ping_step(target: &Target, conn: &mut DoctorConnection) -> Result<Found<()>, String> {
    let ping = redis::cmd("PING");
    match tokio::time::timeout(target.deadlines.command, ping.query_async::<String>(conn.conn())).await {
        Ok(Ok(reply)) => Ok(Found::line(reply)),
        Ok(Err(e)) => Err(format!(
            "the cache answered PING with an error: {}",
            crate::cache::classify(&e)
        )),
        Err(_) => Err(format!(
            "the cache did not answer PING within {:?}",
            target.deadlines.command
        )),
    }
}

/// Whether the cache is a cluster, as the handler will find out; on a
/// cluster, every master reached as the handler reaches it (its announced
/// address, its certificate checked against the configured host name, AUTH
/// with the same user and token) and PINGed.
async fn cluster_step(target: &Target, mode: ClusterMode, user: Option<String>, password: Secret) -> Step {
    let options = CacheOptions {
        cluster_mode: mode,
        notifications: crate::settings::NotificationSetting::Off,
    };
    // The check waits for nothing: a master that is down is reported now.
    let mut no_wait = target.clone();
    no_wait.deadlines.ride_through = Duration::ZERO;
    let cache = Cache::new(no_wait, Auth::AccessKey { user, password }, options);
    let shards = match cache.shards().await {
        Ok(None) => return Ok(Found::line("not a cluster: standalone mode, one connection".to_owned())),
        Ok(Some(shards)) => shards,
        Err(e) => return Err(format!("could not tell whether the cache is a cluster: {e}")),
    };
    let ping = redis::cmd("PING");
    let pings = futures_util::future::join_all(shards.iter().map(|s| cache.query_node::<String>(&s.node, &ping))).await;
    let masters: Vec<String> = shards.iter().map(|s| s.node.clone()).collect();
    let failed: Vec<String> = shards
        .iter()
        .zip(pings)
        .filter_map(|(s, ping)| ping.err().map(|e| format!("{}: {e}", s.node)))
        .collect();
    if failed.is_empty() {
        Ok(Found::line(format!(
            "cluster mode: {} masters ({}), each reached at its announced address, its certificate \
             verified against {} and AUTH accepted",
            masters.len(),
            masters.join(", "),
            target.host
        )))
    } else {
        Err(format!(
            "the cache is a cluster, but not every master can be used: {}. Each master must be reachable \
             on its own port (Azure Managed Redis: 85xx; Premium: 1500N) and accept the same identity",
            failed.join("; ")
        ))
    }
}

/// Prints one step's line; returns whether it passed.
fn report(out: &mut impl Write, step: &str, result: Result<String, String>, took: Duration) -> bool {
    let ms = took.as_secs_f64() * 1000.0;
    let line = match &result {
        Ok(what) => format!("  ok      {step:<15} {what} ({ms:.1} ms)"),
        Err(why) => format!("  FAILED  {step:<15} {why} ({ms:.1} ms)"),
    };
    let _ = writeln!(out, "{line}");
    result.is_ok()
}

/// The credential in words, with what made it the choice.
fn describe(choice: &CredentialChoice) -> String {
    match choice {
        CredentialChoice::ManagedIdentity { client_id: None } => "system-assigned managed identity".to_owned(),
        CredentialChoice::ManagedIdentity { client_id: Some(id) } => {
            format!("user-assigned managed identity (client id {id})")
        }
        CredentialChoice::ClientSecret {
            tenant_id, client_id, ..
        } => format!("service principal {client_id} with a client secret (tenant {tenant_id})"),
        CredentialChoice::WorkloadIdentity { .. } => "workload identity (AZURE_FEDERATED_TOKEN_FILE)".to_owned(),
        CredentialChoice::DeveloperTools => "developer sign-in (Azure CLI, then Azure Developer CLI)".to_owned(),
    }
}

/// Gets one token: the user name to AUTH as and the token; the line says
/// where the user name came from and how long the token lives.
async fn token_step(entra: &EntraSettings, deadline: Duration) -> Result<Found<(String, Secret)>, String> {
    let source = AzureTokenSource::from_choice(&entra.credential, entra.scope.clone())
        .map_err(|e| sign_in_sentence(&e, &entra.credential))?;
    let fetched: FetchedToken = match tokio::time::timeout(deadline, source.fetch()).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(sign_in_sentence(&e, &entra.credential)),
        Err(_) => return Err(sign_in_sentence(&TokenError::Timeout(deadline), &entra.credential)),
    };
    let expires_in = (fetched.expires_on - OffsetDateTime::now_utc()).whole_seconds();
    let (user, from) = match &entra.principal_id {
        Some(id) => (id.clone(), "from Redis__principalId"),
        None => (
            oid_from_jwt(fetched.secret.expose()).map_err(|e| e.to_string())?,
            "from the token's oid",
        ),
    };
    let line = format!("user {user} ({from}), scope {}, expires in {expires_in} s", entra.scope);
    Ok(Found {
        value: (user, fetched.secret),
        line,
    })
}

/// What a failed token fetch means for the credential in use.
fn sign_in_sentence(err: &TokenError, choice: &CredentialChoice) -> String {
    let what_to_do = match choice {
        CredentialChoice::DeveloperTools => {
            "sign in with `az login` (or `azd auth login`) as a user that has a data access policy on the cache"
        }
        CredentialChoice::ManagedIdentity { client_id: None } => {
            "give the app a managed identity (`az functionapp identity assign`); outside Azure, use `az login` instead"
        }
        CredentialChoice::ManagedIdentity { client_id: Some(_) } => {
            "check that Redis__clientId is the client id of a user-assigned identity assigned to this app"
        }
        CredentialChoice::ClientSecret { .. } => {
            "check Redis__tenantId, Redis__clientId and Redis__clientSecret (a secret may have expired)"
        }
        CredentialChoice::WorkloadIdentity { .. } => {
            "check AZURE_FEDERATED_TOKEN_FILE and the federated credential of the app registration"
        }
    };
    format!("no token: {err}; {what_to_do}")
}

/// Reaches the cache's port over TCP.
async fn tcp_step(target: &Target) -> Step {
    let addr = crate::settings::endpoint(&target.host, target.port);
    let dial = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
    match tokio::time::timeout(target.deadlines.connect, dial).await {
        Ok(Ok(stream)) => Ok(Found::line(format!(
            "{addr} reached ({})",
            stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()
        ))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "nothing accepts connections on {addr}: check Redis__port (6380 for Azure Cache for Redis, 10000 for Azure Managed Redis) and that the cache is running"
        )),
        Ok(Err(e)) if e.to_string().contains("lookup") || e.to_string().contains("resolve") => Err(format!(
            "{} does not resolve: check Redis__redisHostName (a private endpoint also needs its private DNS zone): {e}",
            target.host
        )),
        Ok(Err(e)) => Err(format!("cannot reach {addr}: {e}")),
        Err(_) => Err(format!(
            "no answer from {addr} within {:?}: a firewall rule, a private endpoint or the app's network keeps it out (check the cache's networking and the app's VNet integration)",
            target.deadlines.connect
        )),
    }
}

/// Checks the certificate against the configured host name, with the roots
/// the handler trusts (the system's, plus `SSL_CERT_FILE`).
async fn tls_step(target: &Target) -> Step {
    let pem = match &target.extra_roots {
        Some(extra) => crate::tls::with_system_roots(extra),
        None => crate::tls::with_system_roots(b""),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(target.host.clone()).map_err(|e| format!("{}: {e}", target.host))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
        connector.connect(name, tcp).await
    };
    match tokio::time::timeout(target.deadlines.connect, handshake).await {
        Ok(Ok(_)) => Ok(Found::line(format!("valid for {}", target.host))),
        Ok(Err(e)) => Err(certificate_sentence(&e, &target.host)),
        Err(_) => Err(format!(
            "no TLS answer within {:?}: is the port a TLS port (Redis__ssl)?",
            target.deadlines.connect
        )),
    }
}

/// What a failed TLS handshake means.
fn certificate_sentence(e: &std::io::Error, host: &str) -> String {
    use rustls::{CertificateError, Error as TlsError};
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>());
    match tls {
        // BadSignature: a CA of the same name as a trusted one, another key.
        Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => format!(
            "the certificate of {host} is not issued by a CA this machine trusts (a TLS-inspecting proxy, or a private CA): add that CA to the PEM file in SSL_CERT_FILE"
        ),
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the certificate does not name {host}: set Redis__redisHostName to the cache's own host name, not an IP address or an alias"
        ),
        Some(TlsError::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            format!("the certificate of {host} has expired")
        }
        _ => format!("TLS with {host} failed: {e} (is Redis__ssl right for this port?)"),
    }
}

/// What a refused connection or AUTH means, once TCP and TLS are known good.
fn auth_sentence(e: &CacheError, user: &str, auth: &AuthSettings) -> String {
    match (e, auth) {
        (CacheError::Auth(msg), AuthSettings::Entra(_)) => format!(
            "the cache refused the token for user {user} ({msg}): give this identity a data access policy on the cache (README: \"Give the app a managed identity and Redis data access\"), check that Microsoft Entra authentication is on for the cache, and that Redis__principalId, if set, is this identity's object id"
        ),
        (CacheError::Auth(msg), AuthSettings::AccessKey { .. }) => {
            format!("the cache refused the access key ({msg}): copy the current key into the Redis connection string")
        }
        (other, _) => format!("could not connect and authenticate: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sign-in sentence names what to do for the credential in use.
    #[test]
    fn sign_in_sentences_name_the_fix() {
        let err = TokenError::Credential("no az".into());
        assert!(sign_in_sentence(&err, &CredentialChoice::DeveloperTools).contains("az login"));
        let mi = CredentialChoice::ManagedIdentity {
            client_id: Some("c".into()),
        };
        assert!(sign_in_sentence(&err, &mi).contains("Redis__clientId"));
    }

    /// A refused token points at the access policy; a refused key at the key.
    #[test]
    fn auth_sentences_name_the_fix() {
        let refused = CacheError::Auth("WRONGPASS".into());
        let entra = AuthSettings::Entra(EntraSettings {
            principal_id: None,
            scope: "s".into(),
            refresh_offset: Duration::from_secs(300),
            credential: CredentialChoice::DeveloperTools,
        });
        let text = auth_sentence(&refused, "oid-1", &entra);
        assert!(text.contains("data access policy") && text.contains("oid-1"), "{text}");
        let key = AuthSettings::AccessKey {
            user: None,
            password: Secret::new("k"),
        };
        assert!(auth_sentence(&refused, "default", &key).contains("access key"));
    }
}
