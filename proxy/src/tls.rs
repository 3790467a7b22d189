//! TLS termination: the certificate chain and key named in `tls:`, loaded
//! by us rather than by Pingora so that a missing, unreadable or invalid
//! file is an error naming it (Pingora's `TlsSettings::build` panics on
//! one), at `--check-config`, at startup and on every reload, which
//! replaces the certificate new handshakes get ([`LiveCertificate`]).
//!
//! The listener is rustls (Pingora's `rustls` feature, ring provider),
//! TLS 1.2 and 1.3, HTTP/1.1 only (no ALPN, so no HTTP/2): every
//! connection then takes the HTTP/1 path the [`crate::timeouts`] clock
//! guards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, PrivateKeyDer, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;

/// Which of the two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
}

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    pub file: TlsFile,
    pub path: PathBuf,
    pub message: String,
}

impl TlsError {
    fn new(file: TlsFile, path: &Path, message: impl Into<String>) -> Self {
        TlsError {
            file,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// The chain in `cert` with the key in `key`, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |message: String| TlsError::new(TlsFile::Cert, cert, message);
    let chain = roost_routing::pem::certificates(cert).map_err(cert_error)?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::new(TlsFile::Key, key, format!("no usable PEM private key: {e}")))?;
    let provider = provider()
        .ok_or_else(|| TlsError::new(TlsFile::Key, key, "no TLS crypto provider to load it"))?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
        let message = format!("does not fit the certificate in {}: {e}", cert.display());
        TlsError::new(TlsFile::Key, key, message)
    })
}

/// The TLS listener's certificate: each handshake takes the one in force,
/// and a reload replaces it without touching a connection.
#[derive(Debug)]
pub struct LiveCertificate(ArcSwap<CertifiedKey>);

impl LiveCertificate {
    pub fn new(certified: Arc<CertifiedKey>) -> Self {
        LiveCertificate(ArcSwap::new(certified))
    }

    /// New handshakes present `certified` from now on.
    pub fn replace(&self, certified: Arc<CertifiedKey>) {
        self.0.store(certified);
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The settings of the TLS listener: `certificate`, Pingora's defaults
/// otherwise (TLS 1.2 and 1.3, no client certificates).
pub fn settings(certificate: Arc<LiveCertificate>) -> anyhow::Result<TlsSettings> {
    // Paths stay empty: with a resolver set, `build()` reads no file.
    let mut settings = TlsSettings::intermediate("", "")?;
    settings.set_cert_resolver(certificate);
    Ok(settings)
}

/// The process's rustls provider: the one Pingora's listener installs
/// (ring). Always there once installed; `None` only if that changed.
fn provider() -> Option<&'static Arc<CryptoProvider>> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
}
