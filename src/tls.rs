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
//!
//! The credentials' HTTP clients load those roots on their first TLS
//! handshake, not when they are built ([`lazy_https_client_config`]): a
//! managed identity asks a local endpoint over plain HTTP and never makes
//! one, and the others make it in the background warm-up, after the
//! handler listens. Reading and parsing the system roots (some 150
//! certificates) when the credential was built took a few milliseconds of
//! every cold start before the handler could listen, and kept them in
//! memory for good.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(https_roots(extra_pem))
        .with_no_client_auth()
}

/// The TLS client configuration for HTTPS to Entra ID or an identity
/// endpoint: [`https_client_config`]'s, with the roots `roots` gives (see
/// [`https_roots`]) loaded on the first certificate to verify rather than
/// now. Verification stays on.
pub(crate) fn lazy_https_client_config(
    roots: impl Fn() -> rustls::RootCertStore + Send + Sync + 'static,
) -> rustls::ClientConfig {
    let verifier = LazyVerifier::new(Box::new(roots));
    rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth()
}

/// rustls's own verifier ([`WebPkiServerVerifier`]), built on its first
/// certificate chain from the roots `roots` gives. The handshake signatures
/// are checked as that verifier checks them, without the roots.
struct LazyVerifier {
    roots: Box<dyn Fn() -> rustls::RootCertStore + Send + Sync>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl LazyVerifier {
    fn new(roots: Box<dyn Fn() -> rustls::RootCertStore + Send + Sync>) -> Self {
        Self {
            roots,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            verifier: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for LazyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyVerifier")
            .field("loaded", &self.verifier.get().is_some())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = self.verifier.get_or_init(|| {
            // None when there is no root at all: then no server is trusted.
            WebPkiServerVerifier::builder_with_provider(Arc::new((self.roots)()), self.provider.clone())
                .build()
                .ok()
        });
        match verifier {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Err(rustls::CertificateError::UnknownIssuer.into()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
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

    /// The lazy configuration loads its roots on the first certificate it
    /// checks, once, and then trusts them; with no root it trusts nothing.
    #[test]
    fn lazy_roots_load_on_the_first_certificate() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pki = devhost::pki::Pki::generate().unwrap();
        let server = devhost::pki::Pki::generate().unwrap();
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = loads.clone();
        let ca = pki.ca_pem.clone();
        let verifier = LazyVerifier::new(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            root_store(ca.as_bytes())
        }));
        let _config = lazy_https_client_config(|| unreachable!("loaded while building the configuration"));
        assert_eq!(loads.load(Ordering::SeqCst), 0, "built without loading the roots");
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();
        let cert = |p: &devhost::pki::Pki| CertificateDer::from_pem_file(&p.cert_path).unwrap();
        assert!(verifier.verify_server_cert(&cert(&pki), &[], &name, &[], now).is_ok());
        assert!(verifier
            .verify_server_cert(&cert(&server), &[], &name, &[], now)
            .is_err());
        assert_eq!(loads.load(Ordering::SeqCst), 1, "loaded once");
        let empty = LazyVerifier::new(Box::new(rustls::RootCertStore::empty));
        assert!(empty.verify_server_cert(&cert(&pki), &[], &name, &[], now).is_err());
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
