//! TLS on a listener: the certificate and key it serves (and, for mTLS, the
//! CA client certificates must chain to), swappable while serving: a new
//! pair is taken only once both parse and match, so a half-written renewal
//! never breaks TLS, and connections already open keep theirs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// A listener's TLS configuration, replaceable while it serves.
#[derive(Debug)]
pub struct ServerTls {
    config: ArcSwap<ServerConfig>,
}

/// Why a certificate, key or client CA cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl ServerTls {
    /// TLS from PEM text: the certificate chain, its private key, and
    /// optionally the CA that client certificates must chain to (then a client
    /// without one is refused). ALPN offers HTTP/2 and HTTP/1.1.
    ///
    /// # Errors
    ///
    /// When a PEM holds nothing usable, or the key does not go with the
    /// certificate.
    pub fn from_pem(
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            config: ArcSwap::from_pointee(config(cert, key, client_ca)?),
        })
    }

    /// Serves `cert`/`key` (and `client_ca`) from now on, if they are good;
    /// otherwise keeps the current ones and says why.
    ///
    /// # Errors
    ///
    /// As [`ServerTls::from_pem`]; nothing is replaced then.
    pub fn replace(
        &self,
        cert: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<(), TlsError> {
        self.config.store(Arc::new(config(cert, key, client_ca)?));
        Ok(())
    }

    /// The configuration new connections get.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }
}

fn config(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("the certificate is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError(
            "the certificate file holds no PEM certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
        TlsError("the key file holds no PEM private key (PKCS#8, RSA or EC)".into())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| TlsError(format!("the client CA is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("the client CA cannot be a root: {e}")))?;
            }
            if roots.is_empty() {
                return Err(TlsError("the client CA file holds no certificate".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(format!("the client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("the key does not go with the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
