//! TLS trust for the Redis connection.
//!
//! The redis crate trusts the platform's roots unless it is handed a PEM
//! bundle, which then replaces them. `SSL_CERT_FILE` adds CAs (a private CA,
//! the tests' CA), so when it is set the bundle handed over is the system
//! bundle followed by that file. Only the extra file is kept in memory; the
//! system bundle (some 200 KiB) is read again for each new connection, which
//! is rare, rather than held for the life of the process.

use std::path::Path;

/// Where Linux distributions keep the system CA bundle (as `openssl-probe` looks).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Installs the process-wide rustls crypto provider (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The PEM of `extra` (`SSL_CERT_FILE`), checked to hold a certificate;
/// `None` (the platform's own roots) when it is not set.
pub fn extra_roots(extra: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
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
pub fn with_system_roots(extra_pem: &[u8]) -> Vec<u8> {
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
}
