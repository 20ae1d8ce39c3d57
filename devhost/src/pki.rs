//! A throw-away certificate authority and a loopback server certificate.
//!
//! Follows AZURE-FACTS "Entra ID and Azure Redis" (Azure Redis is TLS only)
//! and "redis 1.8.1" (TLS: `Client::build_with_tls` with
//! `TlsCertificates { root_cert }` replaces the roots; `tokio-rustls-comp`
//! honours `SSL_CERT_FILE`). Point either at [`Pki::ca_path`] so the handler
//! trusts the stand-in Redis the way it trusts the real one.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA and a server certificate for `localhost` and `127.0.0.1`, as PEM files.
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
    /// Keeps the temporary directory alive when made by [`Pki::generate`].
    _tmp: Option<tempfile::TempDir>,
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
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "devhost test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?).context("self-signing the CA")?;

        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
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
            _tmp: None,
        })
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
}
