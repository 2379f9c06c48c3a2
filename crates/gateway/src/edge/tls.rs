//! TLS on a listener: the certificate and key it serves (and, for mTLS, the
//! CA client certificates must chain to), swappable while serving: a new
//! pair is taken only once both parse and match, so a half-written renewal
//! never breaks TLS, and connections already open keep theirs.
//!
//! The configuration is built whole (a rustls [`ServerConfig`]) and swapped
//! whole, rather than through a `ResolvesServerCert` that swaps only the
//! certificate: a reload may change the client CA too, and one swap covers
//! both. Each accepted connection takes the configuration current at that
//! moment.

use std::{path::Path, sync::Arc};

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
#[error("{message}")]
pub struct TlsError {
    /// Which of the three is at fault: `cert`, `key` or `client_ca` (the
    /// config keys of `server.tls`).
    part: &'static str,
    message: String,
}

impl TlsError {
    fn new(part: &'static str, message: impl Into<String>) -> TlsError {
        TlsError {
            part,
            message: message.into(),
        }
    }
}

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
        Ok(ServerTls::from_config(Arc::new(config(
            cert, key, client_ca,
        )?)))
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
        self.install(Arc::new(config(cert, key, client_ca)?));
        Ok(())
    }

    pub(crate) fn from_config(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls {
            config: ArcSwap::new(config),
        }
    }

    /// New connections get `config` from now on (one already checked whole).
    pub(crate) fn install(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    /// The configuration new connections get.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }
}

/// The listener's TLS from the files `server.tls` names (relative to `dir`),
/// or every problem, each with the key (`cert`, `key`, `client_ca`) it is
/// about.
pub(crate) fn from_files(
    dir: &Path,
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> Result<ServerConfig, Vec<(&'static str, String)>> {
    let read = |part: &'static str, file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).map_err(|e| (part, format!("cannot read `{}`: {e}", path.display())))
    };
    let cert_pem = read("cert", cert);
    let key_pem = read("key", key);
    let ca_pem = client_ca.map(|ca| read("client_ca", ca)).transpose();
    match (cert_pem, key_pem, ca_pem) {
        (Ok(cert_pem), Ok(key_pem), Ok(ca_pem)) => config(&cert_pem, &key_pem, ca_pem.as_deref())
            .map_err(|e| {
                let file = match e.part {
                    "cert" => cert,
                    "key" => key,
                    _ => client_ca.unwrap_or_default(),
                };
                vec![(e.part, format!("`{file}`: {}", e.message))]
            }),
        (cert, key, ca) => Err([cert.err(), key.err(), ca.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

fn config(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::new("cert", format!("the certificate is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::new(
            "cert",
            "the certificate file holds no PEM certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
        TlsError::new(
            "key",
            "the key file holds no PEM private key (PKCS#8, RSA or EC)",
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("cert", e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| {
                    TlsError::new("client_ca", format!("the client CA is not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    TlsError::new("client_ca", format!("the client CA cannot be a root: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(TlsError::new(
                    "client_ca",
                    "the client CA file holds no certificate",
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new("client_ca", format!("the client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::new(
            "key",
            format!("the key does not go with the certificate: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
