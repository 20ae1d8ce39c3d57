//! TLS trust for the Redis connection.
//!
//! The redis crate trusts the platform's roots unless it is handed a PEM
//! bundle, which then replaces them. `SSL_CERT_FILE` adds CAs (a private CA,
//! the tests' CA), so when it is set the bundle handed over is the system
//! bundle followed by that file.

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

/// The root bundle to hand to the redis crate: `None` for the platform's
/// own roots, or the system bundle plus `extra` when `extra` is set.
pub fn root_bundle(extra: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    let Some(extra) = extra else {
        return Ok(None);
    };
    let extra_pem = std::fs::read(extra).map_err(|e| format!("SSL_CERT_FILE {}: {e}", extra.display()))?;
    if !extra_pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!("SSL_CERT_FILE {}: no PEM certificate in it", extra.display()));
    }
    let mut bundle = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    bundle.push(b'\n');
    bundle.extend_from_slice(&extra_pem);
    Ok(Some(bundle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without SSL_CERT_FILE the platform roots are used unchanged.
    #[test]
    fn none_without_extra() {
        assert_eq!(root_bundle(None).unwrap(), None);
    }

    /// The extra file is appended; a file without a certificate is an error.
    #[test]
    fn extra_is_appended_and_checked() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let bundle = root_bundle(Some(&good)).unwrap().unwrap();
        assert!(bundle.ends_with(b"-----END CERTIFICATE-----\n"));
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "nothing").unwrap();
        assert!(root_bundle(Some(&bad)).unwrap_err().contains("no PEM"));
        assert!(root_bundle(Some(&dir.join("missing.pem"))).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
