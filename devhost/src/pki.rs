//! A throw-away certificate authority and a loopback server certificate.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis" (Azure Redis is TLS only)
//! and "redis 1.8.1" (TLS: `Client::build_with_tls` with
//! `TlsCertificates { root_cert }` replaces the roots; `tokio-rustls-comp`
//! honours `SSL_CERT_FILE`). Point either at [`Pki::ca_path`] so the handler
//! trusts the stand-in Redis the way it trusts the real one.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA and a server certificate, as PEM files: for `localhost` and
/// `127.0.0.1` from [`Pki::generate`], for host names only from
/// [`Pki::generate_for_hosts`].
#[derive(Debug)]
pub struct Pki {
    /// Directory holding `ca.pem`, `server.pem` and `server.key`.
    pub dir: PathBuf,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// Path of the CA certificate (`<dir>/ca.pem`).
    pub ca_path: PathBuf,
    /// Path of the server certificate (`<dir>/server.pem`).
    pub cert_path: PathBuf,
    /// Path of the server private key, PKCS#8 PEM (`<dir>/server.key`).
    pub key_path: PathBuf,
    /// The names the server certificate carries (DNS names, and IP
    /// addresses as text), in order; the first is also its common name.
    pub server_names: Vec<String>,
    /// The CA, to sign more certificates ([`Pki::issue`]).
    ca: Issuer<'static, KeyPair>,
    /// Keeps the temporary directory alive when made by [`Pki::generate`].
    _tmp: Option<tempfile::TempDir>,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert_path: PathBuf,
    /// Its private key, PKCS#8 PEM.
    pub key_path: PathBuf,
}

impl Pki {
    /// Generates a fresh CA and server certificate in a new temporary
    /// directory, deleted when the `Pki` is dropped.
    pub fn generate() -> anyhow::Result<Pki> {
        let tmp = tempfile::Builder::new()
            .prefix("devhost-pki-")
            .tempdir()
            .context("creating a temporary directory for the PKI")?;
        let mut pki = Self::generate_in(tmp.path())?;
        pki._tmp = Some(tmp);
        Ok(pki)
    }

    /// Generates a fresh CA and server certificate into `dir` (created if
    /// missing, files overwritten, nothing deleted afterwards).
    pub fn generate_in(dir: &Path) -> anyhow::Result<Pki> {
        Self::generate_in_for(dir, &["localhost", "127.0.0.1"], &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// Like [`Pki::generate`], but the server certificate names only the
    /// given DNS host names (no IP address), as Azure's certificates name
    /// the cache's host name while a cluster announces its nodes by IP
    /// (docs/azure.md "Entra ID and Azure Redis"): a client that checks a
    /// node against its IP fails, one that checks it against the host name
    /// succeeds. The certificate also allows client authentication, because
    /// `redis-server` presents it as the client certificate on the cluster
    /// bus, where peers always require one.
    pub fn generate_for_hosts(hosts: &[&str]) -> anyhow::Result<Pki> {
        anyhow::ensure!(
            !hosts.is_empty() && hosts.iter().all(|h| h.parse::<std::net::IpAddr>().is_err()),
            "Pki::generate_for_hosts takes host names, not IP addresses: {hosts:?}"
        );
        let tmp = tempfile::Builder::new()
            .prefix("devhost-pki-")
            .tempdir()
            .context("creating a temporary directory for the PKI")?;
        let usages = [ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let mut pki = Self::generate_in_for(tmp.path(), hosts, &usages)?;
        pki._tmp = Some(tmp);
        Ok(pki)
    }

    fn generate_in_for(dir: &Path, names: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "devhost test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params.clone(), KeyPair::from_pem(&ca_key.serialize_pem())?);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("self-signing the CA")?;

        let server_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(server_names.clone())?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca).context("signing the server certificate")?;

        let ca_pem = ca.pem();
        let ca_path = dir.join("ca.pem");
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        write(&ca_path, &ca_pem)?;
        write(&cert_path, &cert.pem())?;
        write(&key_path, &key.serialize_pem())?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_path,
            cert_path,
            key_path,
            server_names,
            ca: issuer,
            _tmp: None,
        })
    }

    /// Another server certificate from the same CA, naming `names` (DNS
    /// names or IP addresses), written as `<file>.pem` and `<file>.key` in
    /// the PKI's directory: for a front end whose certificate is trusted
    /// but names another host.
    pub fn issue(&self, file: &str, names: &[&str]) -> anyhow::Result<ServerCert> {
        anyhow::ensure!(!names.is_empty(), "a certificate needs at least one name");
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca).context("signing the certificate")?;
        let out = ServerCert {
            cert_path: self.dir.join(format!("{file}.pem")),
            key_path: self.dir.join(format!("{file}.key")),
        };
        write(&out.cert_path, &cert.pem())?;
        write(&out.key_path, &key.serialize_pem())?;
        Ok(out)
    }

    /// The PKI's own server certificate.
    pub fn server_cert(&self) -> ServerCert {
        ServerCert {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
        }
    }
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::Pki;

    #[test]
    fn writes_three_pem_files() {
        let pki = Pki::generate().unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for p in [&pki.ca_path, &pki.cert_path, &pki.key_path] {
            assert!(std::fs::metadata(p).unwrap().len() > 100, "{}", p.display());
        }
        let key = std::fs::read_to_string(&pki.key_path).unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }

    #[test]
    fn host_only_certificate_names_no_ip() {
        let pki = Pki::generate_for_hosts(&["cache.redis.test"]).unwrap();
        assert_eq!(pki.server_names, ["cache.redis.test"]);
        assert!(Pki::generate_for_hosts(&["127.0.0.1"]).is_err());
        assert_eq!(Pki::generate().unwrap().server_names, ["localhost", "127.0.0.1"]);
    }
}
