//! TLS trust for the Redis connection.
//!
//! The redis crate trusts the platform's roots unless it is handed a PEM
//! bundle, which then replaces them. `SSL_CERT_FILE` adds CAs (a private CA,
//! the tests' CA), so when it is set the bundle handed over is the system
//! bundle followed by that file. Only the extra file is kept in memory; the
//! system bundle (some 200 KiB) is read again for each new connection, which
//! is rare, rather than held for the life of the process.
//!
//! HTTPS to Entra ID (client secret, workload identity) trusts the same
//! roots when `SSL_CERT_FILE` is set ([`https_client_config`]): the HTTP
//! client's own default would read that file *instead of* the system roots,
//! so a file naming only a private Redis CA would cut off
//! `login.microsoftonline.com`.

use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::path::Path;
use std::sync::Arc;

/// Where Linux distributions keep the system CA bundle (as `openssl-probe` looks).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Installs the process-wide rustls crypto provider (once; later calls are no-ops).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The PEM of `extra` (`SSL_CERT_FILE`), checked to hold a certificate;
/// `None` (the platform's own roots) when it is not set.
pub(crate) fn extra_roots(extra: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    let Some(extra) = extra else {
        return Ok(None);
    };
    let extra_pem = std::fs::read(extra).map_err(|e| format!("SSL_CERT_FILE {}: {e}", extra.display()))?;
    if !extra_pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!("SSL_CERT_FILE {}: no PEM certificate in it", extra.display()));
    }
    Ok(Some(extra_pem))
}

/// The root bundle to hand to the redis crate: the system bundle followed by `extra_pem`.
pub(crate) fn with_system_roots(extra_pem: &[u8]) -> Vec<u8> {
    let system = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    let mut bundle = Vec::with_capacity(system.len() + 1 + extra_pem.len());
    bundle.extend_from_slice(&system);
    bundle.push(b'\n');
    bundle.extend_from_slice(extra_pem);
    bundle
}

/// Every certificate in the PEM `bundle` that parses, as trust anchors;
/// the others are skipped, as the redis crate skips them.
pub(crate) fn root_store(bundle: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(bundle).filter_map(Result::ok));
    roots
}

/// The roots HTTPS to Entra ID trusts: the system roots followed by
/// `extra_pem` (`SSL_CERT_FILE`), as the Redis connection trusts.
pub(crate) fn https_roots(extra_pem: &[u8]) -> rustls::RootCertStore {
    root_store(&with_system_roots(extra_pem))
}

/// The TLS client configuration for HTTPS to Entra ID, trusting
/// [`https_roots`]. Verification stays on.
pub(crate) fn https_client_config(extra_pem: &[u8]) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_root_certificates(https_roots(extra_pem))
        .with_no_client_auth()
}

/// The TLS client configuration for a cluster node's connection: the system
/// roots, plus `extra_pem` (`SSL_CERT_FILE`) when set. Verification stays on.
pub(crate) fn redis_client_config(extra_pem: Option<&[u8]>) -> rustls::ClientConfig {
    https_client_config(extra_pem.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without SSL_CERT_FILE the platform roots are used unchanged.
    #[test]
    fn none_without_extra() {
        assert_eq!(extra_roots(None).unwrap(), None);
    }

    /// The extra file is appended; a file without a certificate is an error.
    #[test]
    fn extra_is_appended_and_checked() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let bundle = with_system_roots(&extra_roots(Some(&good)).unwrap().unwrap());
        assert!(bundle.ends_with(b"-----END CERTIFICATE-----\n"));
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "nothing").unwrap();
        assert!(extra_roots(Some(&bad)).unwrap_err().contains("no PEM"));
        assert!(extra_roots(Some(&dir.join("missing.pem"))).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    /// The HTTPS client for Entra ID trusts the system roots and the extra
    /// CA, not the extra CA alone.
    #[test]
    fn https_roots_are_the_system_roots_plus_the_extra_ca() {
        let pki = devhost::pki::Pki::generate().unwrap();
        let system = https_roots(b"").len();
        assert!(system > 0, "no system CA bundle found at {SYSTEM_BUNDLES:?}");
        assert_eq!(https_roots(pki.ca_pem.as_bytes()).len(), system + 1);
    }
}
