//! TLS to Postgres with rustls, on the ring provider Pingora's `rustls`
//! feature already builds (so the tree holds one crypto provider).
//!
//! tokio-postgres asks a [`MakeTlsConnect`] for a connector per host and
//! runs the handshake after the server agreed to TLS. The certificate is
//! checked as [`Verification`] says:
//!
//! - `Full` (`verify-full`): rustls' WebPKI verifier, chain and host name.
//! - `Chain` (`verify-ca`, or `prefer`/`require` with a root certificate
//!   at hand): the same verifier, a name mismatch alone forgiven.
//! - `None` (`prefer`/`require` without one): any certificate.
//!
//! In every mode the handshake's signatures are checked against the
//! certificate presented, so the session is with whoever holds its key.
//!
//! The session offers ALPN `postgresql` as libpq does (Postgres 17
//! requires it for `sslnegotiation=direct`). It reports no channel
//! binding, so SCRAM runs without it (`channel_binding=require` fails).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

use super::{PostgresError, SslMode};

/// Which server certificates a connection accepts.
pub(crate) enum Verification {
    None,
    Chain(Arc<RootCertStore>),
    Full(Arc<RootCertStore>),
}

/// The [`MakeTlsConnect`] of an [`super::Endpoint`]: one rustls client
/// config, shared by every connection.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
    /// `sslmode=…`, for the handshake's error.
    mode: SslMode,
}

impl MakeRustlsConnect {
    pub(crate) fn new(mode: SslMode, verification: Verification) -> Result<Self, PostgresError> {
        let provider = Arc::new(ring::default_provider());
        let name_unchecked = |chain| NameUnchecked {
            chain,
            algorithms: provider.signature_verification_algorithms,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match verification {
            Verification::None => Arc::new(name_unchecked(None)),
            Verification::Chain(roots) => Arc::new(name_unchecked(Some(webpki(roots, &provider)?))),
            Verification::Full(roots) => webpki(roots, &provider)?,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PostgresError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect {
            config: Arc::new(config),
            mode,
        })
    }
}

fn webpki(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PostgresError> {
    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| PostgresError::Tls(e.to_string()))
}

impl MakeTlsConnect<Socket> for MakeRustlsConnect {
    type Stream = TlsStream;
    type TlsConnect = RustlsConnect;
    type Error = Infallible;

    /// The name is checked at the handshake, not here: tokio-postgres asks
    /// for a connector with an empty name for a Unix socket, where it never
    /// runs one.
    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, Infallible> {
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            mode: self.mode,
            host: host.to_owned(),
        })
    }
}

/// One connection's handshake with `host`.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    mode: SslMode,
    host: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = TlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, HandshakeError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let failed = |error: io::Error| HandshakeError {
                host: self.host.clone(),
                mode: self.mode,
                error,
            };
            let name = ServerName::try_from(self.host.clone())
                .map_err(|e| failed(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
                .connect(name, socket)
                .await
                .map_err(failed)?;
            Ok(TlsStream(stream))
        })
    }
}

/// A TLS handshake with a Postgres server that failed, and the `sslmode`
/// it ran under.
#[derive(Debug, thiserror::Error)]
#[error("TLS with {host} (sslmode={mode}): {error}")]
pub struct HandshakeError {
    host: String,
    mode: SslMode,
    error: io::Error,
}

impl HandshakeError {
    /// Whether the server's certificate failed verification.
    pub fn is_certificate(&self) -> bool {
        self.error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
    }
}

/// Whether `error` is a connection refused because the server's
/// certificate failed verification: a configuration problem (wrong CA,
/// wrong host name, expired certificate), not a store that is down.
pub fn certificate_rejected(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<HandshakeError>())
        .is_some_and(HandshakeError::is_certificate)
}

/// A TLS session with a Postgres server.
pub struct TlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// What the modes below `verify-full` check: the chain when there are
/// roots to check it against (`verify-ca`, or `prefer`/`require` with a
/// root certificate at hand), never the host name; the handshake's
/// signatures always, against the certificate presented.
#[derive(Debug)]
struct NameUnchecked {
    /// `None`: any certificate (`prefer`/`require` without roots).
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
